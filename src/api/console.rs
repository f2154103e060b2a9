//! `GET /` and `GET /console/{file}`: the web console's files, from memory
//! ([`crate::console`]), with a strong `ETag`, `Cache-Control: no-cache` (a
//! browser keeps them and asks again with `If-None-Match`, getting `304`)
//! and the console's `Content-Security-Policy`.

use warp::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use warp::http::{HeaderValue, Request, StatusCode};
use warp::hyper::body::Incoming;
use warp::reply::Response;

use super::error::ApiError;
use super::routes::Params;
use super::AppState;
use crate::console;

/// `GET /` and `GET /console`: a redirect to the console.
pub fn root(_: &Request<Incoming>, _: &Params<'_>, _: &AppState) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::FOUND;
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(console::PREFIX));
    response
}

/// `GET /console/{file}`: an embedded file, `304` when the browser has it,
/// `404` for any other path.
pub fn serve(request: &Request<Incoming>, params: &Params<'_>, state: &AppState) -> Response {
    let Some((asset, etag)) = console::asset(params.get(0)) else {
        return ApiError::NotFound.to_response();
    };
    let fresh = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(asset.bytes.into());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    // Where final storage puts media: the origins of a sample file's URL and
    // of a playlist's (a presigned bucket serves playlists from `base_url`).
    let services = &state.services;
    let (storage, base) = (&services.storage, &services.base_url);
    let policy = console::content_security_policy(&[
        &storage.url(base, "token", "poster.jpg"),
        &storage.url(base, "token", "hls/master.m3u8"),
    ]);
    let headers = response.headers_mut();
    headers.insert(ETAG, HeaderValue::from_static(etag));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static(console::SELF_ONLY_POLICY));
    headers.insert(CONTENT_SECURITY_POLICY, policy);
    response
}
