//! `GET /me`: the API key a request is made with, as a page signing in with
//! it shows it (its id, which is also the tenant id, and its name).

use std::sync::Arc;

use serde_json::json;
use warp::http::header::AUTHORIZATION;
use warp::http::Request;
use warp::hyper::body::Incoming;
use warp::reply::Response;
use warp::Reply;

use super::auth;
use super::error::ApiError;
use super::routes::Params;
use super::AppState;

/// `GET /me`: `{"data": {"id": ..., "name": ...}}`, or 401.
pub fn show(request: &Request<Incoming>, _: &Params<'_>, state: &AppState) -> Response {
    let tenant = match auth::with_tenant(state, request.headers().get(AUTHORIZATION), Arc::clone) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.to_response(),
    };
    match state.services.keys.key_name(&tenant) {
        Some(name) => {
            warp::reply::json(&json!({ "data": { "id": &*tenant, "name": name } })).into_response()
        }
        // Revoked between the two reads of the key cache: refused as any revoked key.
        None => ApiError::Unauthenticated.to_response(),
    }
}
