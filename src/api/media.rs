//! `GET` and `HEAD /media/{token}/{file}` (and `/media/{token}/hls/...` for
//! the ladder): completed outputs, served from the local media folder with
//! Range support (206) and content types, or, when final storage is an object
//! store, through [`super::remote_media`]. Folders of unfinished uploads
//! (`.incoming-*`) and any other path segment starting with `.` are hidden.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::ApiError;
use super::AppState;
use crate::storage::MediaAccess;

/// The route's filter; it sees `{token}/{file}`.
pub fn serve(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    match state.services.storage.media_access() {
        MediaAccess::ServedLocally => local(state),
        _ => super::remote_media::serve(state),
    }
}

/// Files of the local media folder.
fn local(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    let root = state.services.layout.media_root();
    warp::path::peek()
        .and_then(|rest: warp::path::Peek| async move {
            let hidden = rest.segments().any(|s| s.starts_with('.'));
            if hidden {
                Err(warp::reject::custom(ApiError::NotFound))
            } else {
                Ok(())
            }
        })
        .untuple_one()
        .and(warp::fs::dir(root))
        .map(|file: warp::fs::File| {
            // The same types final storage on S3 serves, not extension guessing
            // (which says `audio/x-mpegurl` for HLS playlists).
            let content_type = file
                .path()
                .file_name()
                .and_then(|name| name.to_str())
                .map(crate::storage::content_type);
            let mut response = file.into_response();
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static(content_type));
            }
            response.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        })
        .boxed()
}
