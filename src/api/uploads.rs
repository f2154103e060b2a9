//! `GET /uploads` and `GET /uploads/{id}`: read the database directly, never
//! through the registry's mailbox.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;
use warp::{Rejection, Reply};

use super::auth::Tenant;
use super::error::ApiError;
use super::view::UploadView;
use super::view_cache::{CachedView, Kept};
use super::AppState;
use crate::storage::MediaAccess;
use bytes::Bytes;

/// How many uploads `GET /uploads` lists.
pub const LIST_LIMIT: usize = 50;

/// The caller's most recent uploads, newest first.
pub async fn list(tenant: Tenant, state: Arc<AppState>) -> Result<Response, Rejection> {
    let records = state
        .services
        .store
        .list_recent(&tenant.0, LIST_LIMIT)
        .map_err(ApiError::from)?;
    let views: Vec<UploadView> = records.iter().map(|r| UploadView::new(r, &state)).collect();
    Ok(warp::reply::json(&json!({ "data": views })).into_response())
}

/// One upload of the caller; anything else is 404. Synchronous (one
/// database read at most), so the route calls it without taking a
/// reference to the state.
pub fn show(id: String, tenant: Tenant, state: &AppState) -> Result<Response, Rejection> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    match state.views.get(id, &tenant.0) {
        Some(Kept::Body(body)) => return Ok(json_body(body)),
        Some(Kept::NotYours) => return Err(ApiError::NotFound.into()),
        None => {}
    }
    let record = state
        .services
        .store
        .get(id)
        .map_err(ApiError::from)?
        .filter(|r| *r.tenant == *tenant.0)
        .ok_or(ApiError::NotFound)?;
    let view = UploadView::new(&record, state);
    let body = Bytes::from(
        serde_json::to_vec(&json!({ "data": view }))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let stable_urls = !matches!(
        state.services.storage.media_access(),
        MediaAccess::Presigned
    );
    if record.status.is_terminal() && stable_urls {
        let kept = CachedView {
            tenant: record.tenant.clone(),
            body: body.clone(),
        };
        state.views.insert(id, kept);
    }
    Ok(json_body(body))
}

fn json_body(body: Bytes) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}
