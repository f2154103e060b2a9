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
    // Decided at once, with the state borrowed (warp's `Map` still clones
    // the captured state for each request that tries the route).
    authorization().map(move |header: Option<HeaderValue>| {
        with_tenant(&state, header.as_ref(), |tenant| Tenant(tenant.clone()))
            .map_err(warp::reject::custom)
    })
}

/// The `Authorization` header as hyper parsed it (a cheap clone of the
/// request's bytes, not a new String). It captures nothing, so trying a
/// route that uses it clones nothing.
fn authorization(
) -> impl Filter<Extract = (Option<HeaderValue>,), Error = std::convert::Infallible> + Clone {
    warp::header::value("authorization")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// `f` called with the tenant the bearer key in `header` belongs to, borrowed
/// from the key cache; a missing, malformed or unknown key is a 401.
pub fn with_tenant<T>(
    state: &AppState,
    header: Option<&HeaderValue>,
    f: impl FnOnce(&Arc<str>) -> T,
) -> Result<T, ApiError> {
    let secret = header
        .and_then(|h| h.to_str().ok())
        .and_then(bearer)
        .filter(|s| s.starts_with("sk-"))
        .ok_or(ApiError::Unauthenticated)?;
    state
        .services
        .keys
        .with_tenant(secret, f)
        .ok_or(ApiError::Unauthenticated)
}

/// The credentials of an `Authorization` header of the `Bearer` scheme,
/// whose name is case-insensitive (RFC 9110 11.1).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for header in ["Bearer sk-a", "bearer sk-a", "BEARER  sk-a ", "bEaReR sk-a"] {
            assert_eq!(bearer(header), Some("sk-a"), "{header:?}");
        }
        for header in ["Basic sk-a", "Bearersk-a", "Bearer ", "sk-a", ""] {
            assert_eq!(bearer(header), None, "{header:?}");
        }
    }
}
