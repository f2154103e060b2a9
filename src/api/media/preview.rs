//! `GET` and `HEAD /preview/{token}/hls/...`: the ladder of an upload still
//! being processed, played while it is written. The files are the
//! transcode's own, in its work folder: a master playlist once every
//! rendition has its first segment, EVENT media playlists that grow by each
//! segment, and the segments they list. Whatever the final storage, they are
//! served from here. Once the upload is completed, each one redirects to the
//! finished file of the same name for a while (a player still on the preview
//! goes on with the VOD playlists); once it is cancelled, failed or deleted,
//! each one is a 404.

use std::path::PathBuf;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::local::answer_file;
use super::{header_value, media_path, MediaPath};
use crate::api::error::ApiError;
use crate::api::{with_state, AppState};
use crate::media::HLS_DIR;
use crate::store::record::Status;

/// Playlists change while the ladder is written, and a retry writes it
/// again: caches check each time (the validators make that a 304).
const CACHE_CONTROL: &str = "no-cache";

/// The route's filter; it sees `{token}/{file}`.
pub fn serve(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    warp::method()
        .and(media_path(state))
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .and_then(answer)
        .boxed()
}

async fn answer(
    method: Method,
    path: MediaPath,
    request: HeaderMap,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    match find(&state, &path)? {
        Some(Found::Finished(url)) => Ok(see_other(&url)),
        // The folder the transcode writes, then the one it is renamed to
        // once finished (kept while the outputs are stored).
        Some(Found::Preview(places)) => {
            answer_file(&method, &request, &state, places, &path.name, CACHE_CONTROL).await
        }
        None => Err(warp::reject::custom(ApiError::NotFound)),
    }
}

/// Where a preview's file is.
enum Found {
    /// In one of these places, tried in turn.
    Preview(Vec<PathBuf>),
    /// The upload is completed: the finished file of the same name, here.
    Finished(String),
}

/// Where the file of `path` is; `None` unless the upload shows a preview
/// now or was just completed.
fn find(state: &AppState, path: &MediaPath) -> Result<Option<Found>, ApiError> {
    let services = &state.services;
    let Some(id) = services.previews.upload_of(&path.token) else {
        return Ok(None);
    };
    if !path.name.starts_with(&format!("{HLS_DIR}/")) {
        return Ok(None);
    }
    // One record read (a bounded one, fine on the executor): the preview
    // ends with the write that ends processing, whatever the map says yet.
    let Some(record) = services.store.get(id)? else {
        return Ok(None);
    };
    if record.media_token != path.token {
        return Ok(None);
    }
    let has_ladder = record
        .outputs
        .as_ref()
        .is_some_and(|o| o.hls_master.is_some());
    Ok(match record.status {
        Status::Completed if has_ladder => {
            let url = services
                .storage
                .url(&services.base_url, &path.token, &path.name);
            Some(Found::Finished(url))
        }
        Status::Processing | Status::Uploading if record.preview.is_some() => {
            let layout = &services.layout;
            let places = [layout.work_tmp_dir(id), layout.work_dir(id)];
            Some(Found::Preview(
                places.iter().map(|dir| dir.join(&path.name)).collect(),
            ))
        }
        _ => None,
    })
}

/// `303 See Other` to `url`, which is not cached (the preview's URLs are
/// the same before the completion and after).
fn see_other(url: &str) -> Response {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(url));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}
