//! `GET` and `HEAD /media/{token}/{file}` (and `/media/{token}/hls/...` for
//! the ladder): completed outputs, served from the local media folder by
//! [`local`] (ranges, validators, conditional requests), or, when final
//! storage is an object store, through [`super::remote_media`]. Both take
//! the path as [`MediaPath`] parses it, once: folders of unfinished uploads
//! (`.incoming-*`), the completion marker and any other segment starting
//! with `.` are hidden however they are spelled.

mod local;
pub mod preview;
mod range;
mod validators;

use std::sync::Arc;

use warp::filters::path::Tail;
use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;
use super::AppState;
use crate::storage::{check_name, check_token, MediaAccess};

/// The route's filter; it sees `{token}/{file}`.
pub fn serve(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    match state.services.storage.media_access() {
        MediaAccess::ServedLocally => local::serve(state),
        _ => super::remote_media::serve(state),
    }
}

/// A media path, decoded: one upload's token and a file name in its folder,
/// both as [`check_token`] and [`check_name`] allow.
#[derive(Debug, PartialEq, Eq)]
pub struct MediaPath {
    /// The upload's storage token.
    pub token: String,
    /// The file under the token's folder, e.g. `hls/720p/seg_00000.ts`.
    pub name: String,
}

impl MediaPath {
    /// `{token}/{name...}` as it arrives (percent-encoded), or `None` when a
    /// segment is empty, is not valid percent-encoded UTF-8, holds a NUL,
    /// `/` or `\` once decoded, or starts with `.`.
    pub fn parse(tail: &str) -> Option<MediaPath> {
        let mut segments = Vec::new();
        for raw in tail.split('/') {
            let segment = percent_decode(raw)?;
            let plain = !segment.is_empty()
                && !segment.starts_with('.')
                && !segment.contains(['\0', '/', '\\']);
            if !plain {
                return None;
            }
            segments.push(segment);
        }
        let (token, name) = segments.split_first()?;
        let name = name.join("/");
        check_token(token).ok()?;
        check_name(&name).ok()?;
        Some(MediaPath {
            token: token.clone(),
            name,
        })
    }
}

/// The filter's view of the path after `/media/`: a [`MediaPath`], or the
/// JSON 404 every unknown file gets, and the files of a deleted upload get
/// from its deletion on, while they are being removed.
pub fn media_path(
    state: &Arc<AppState>,
) -> impl Filter<Extract = (MediaPath,), Error = Rejection> + Clone {
    let state = state.clone();
    warp::path::tail().and_then(move |tail: Tail| {
        let path = MediaPath::parse(tail.as_str())
            .filter(|path| !state.services.removals.contains(&path.token))
            .ok_or_else(|| warp::reject::custom(ApiError::NotFound));
        std::future::ready(path)
    })
}

/// A header value made of text the server writes itself (ASCII: numbers,
/// dates, tags, names that passed [`check_name`]).
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let digit = |b: u8| char::from(b).to_digit(16);
            decoded.push(u8::try_from(digit(hex[0])? * 16 + digit(hex[1])?).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tail: &str) -> Option<(String, String)> {
        MediaPath::parse(tail).map(|p| (p.token, p.name))
    }

    #[test]
    fn plain_names_of_a_token_are_parsed() {
        for (tail, token, name) in [
            (
                "abc123/hls/720p/index.m3u8",
                "abc123",
                "hls/720p/index.m3u8",
            ),
            ("abc123/video.mp4", "abc123", "video.mp4"),
            ("abc123/poster%2Ejpg", "abc123", "poster.jpg"),
            ("%61bc/video%2emp4", "abc", "video.mp4"),
            ("abc123/a%2e.ts", "abc123", "a..ts"),
        ] {
            assert_eq!(
                parse(tail),
                Some((token.to_string(), name.to_string())),
                "{tail}"
            );
        }
    }

    #[test]
    fn hidden_empty_and_undecodable_segments_are_refused() {
        for tail in [
            "",
            "abc123",
            "abc123/",
            "abc123/.complete",
            "abc123/%2ecomplete",
            "abc123/%2Ecomplete",
            "%2eincoming-abc123/video.mp4",
            ".incoming-abc123/video.mp4",
            "abc123/hls/../x",
            "abc123/hls/%2e%2e/x",
            "abc123/hls/./x",
            "abc123/hls//x.ts",
            "abc123/video.mp4/",
            "/abc123/video.mp4",
            "a-b/video.mp4",
            "abc123/a%00",
            "abc123/a%2fb",
            "abc123/a%2Fb",
            "abc123/a%5cb",
            "abc123/%ff.mp4",
            "abc123/%c3",
            "abc123/a%2",
            "abc123/a%zz",
            "abc123/a%",
            "abc123/%e2%82%ac.mp4",
            "abc123/a b",
            "abc123/a%20b",
            "ab%2fc/video.mp4",
        ] {
            assert_eq!(parse(tail), None, "{tail}");
        }
    }

    #[test]
    fn escapes_decode_to_their_bytes() {
        assert_eq!(percent_decode("a%41%2e%2F").as_deref(), Some("aA./"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("€"), Some("€".to_string()));
    }
}
