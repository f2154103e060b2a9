//! Bearer-key authentication: resolves `Authorization: Bearer sk-...` to a tenant.

use std::sync::Arc;

use warp::http::HeaderValue;
use warp::{Filter, Rejection};

use super::error::ApiError;
use super::AppState;

/// The tenant (API key id) a request is made for.
#[derive(Debug, Clone)]
pub struct Tenant(pub Arc<str>);

/// Extracts the tenant, or rejects with 401.
pub fn tenant(state: Arc<AppState>) -> impl Filter<Extract = (Tenant,), Error = Rejection> + Clone {
    tenant_or_refusal(state).and_then(std::future::ready)
}

/// The tenant, or the refusal as a value: for a handler that must still
/// deal with the request's body before answering 401.
pub fn tenant_or_refusal(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Result<Tenant, Rejection>,), Error = std::convert::Infallible> + Clone {
    // The header as hyper parsed it (a cheap clone of the request's bytes), not a new String.
    let header = warp::header::value("authorization")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    // Decided at once, with the state borrowed: no reference count is
    // taken per request.
    header.map(move |header: Option<HeaderValue>| authenticate(&state, header.as_ref()))
}

fn authenticate(state: &AppState, header: Option<&HeaderValue>) -> Result<Tenant, Rejection> {
    let secret = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| s.starts_with("sk-"))
        .ok_or_else(|| warp::reject::custom(ApiError::Unauthenticated))?;
    match state.keys.tenant_for(secret) {
        Ok(Some(tenant)) => Ok(Tenant(tenant)),
        Ok(None) => Err(warp::reject::custom(ApiError::Unauthenticated)),
        Err(e) => Err(warp::reject::custom(ApiError::from(e))),
    }
}
