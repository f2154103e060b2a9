//! `/media/{token}/...` when final storage is an object store. With presigned
//! URLs, a playlist's relative references would reach the store unsigned, so
//! playlists (`.m3u8`) are served here, each reference rewritten to a full
//! URL: another playlist to this route, a segment to its presigned URL
//! ([`crate::storage::playlist`]). A player goes master -> variant ->
//! segments with nothing but the `hls_url` it was given. The storyboard's
//! WebVTT is served the same way, its cues naming the sprite's presigned URL.
//! Any other file, and every file when the bucket is public, is a `302` to
//! its URL in the store.
//! Nothing is answered before the upload's completion marker exists.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::media::{media_path, MediaPath};
use super::{with_state, AppState};
use crate::storage::{content_type, names_other_files, playlist, MediaAccess, StorageError};

/// The media route's filter for backends that are not served from disk; it sees `{token}/{file}`.
pub fn serve(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    media_path(state)
        .and(with_state(state.clone()))
        .and_then(answer)
        .boxed()
}

async fn answer(path: MediaPath, state: Arc<AppState>) -> Result<Response, Rejection> {
    let MediaPath { token, name } = path;
    let storage = state.services.storage.clone();
    let rewrite = storage.media_access() == MediaAccess::Presigned && names_other_files(&name);
    let max_bytes = state
        .services
        .config
        .s3
        .as_ref()
        .map_or(0, |s3| s3.max_playlist_bytes);
    let (t, n) = (token.clone(), name.clone());
    // Requests to the object store block: off the executor.
    let found = state
        .services
        .blocking(move || -> Result<Option<Vec<u8>>, StorageError> {
            if !storage.contains(&t)? {
                return Ok(None);
            }
            if !rewrite {
                return Ok(Some(Vec::new()));
            }
            storage.read_small(&t, &n, max_bytes)
        })
        .await
        .map_err(ApiError::from)?
        .map_err(ApiError::from)?;
    let Some(bytes) = found else {
        return Err(ApiError::NotFound.into());
    };
    let storage = &state.services.storage;
    if !rewrite {
        let target = storage.url(&state.services.base_url, &token, &name);
        let location = HeaderValue::from_str(&target)
            .map_err(|e| ApiError::Internal(format!("media URL: {e}")))?;
        let mut response = StatusCode::FOUND.into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return Ok(response);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::StorageUnavailable(format!("{name} is not UTF-8")))?;
    let url_of = |target: &str| storage.url(&state.services.base_url, &token, target);
    let body = if name.ends_with(".vtt") {
        playlist::rewrite_webvtt(&text, &name, url_of)
    } else {
        playlist::rewrite(&text, &name, url_of)
    };
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    // Its URLs expire: a cache must ask again rather than serve stale signatures.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}
