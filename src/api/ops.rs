//! Operator endpoints, outside the client API and without API keys:
//! `/healthz`, `/readyz`, `/metrics` (optionally behind its own bearer token)
//! and the OpenAPI description at `/api/client/v1/openapi.json`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{with_state, AppState};
use crate::actors::Services;

/// The OpenAPI 3.1 description of every endpoint, kept beside the code.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: the process serves HTTP.
pub fn healthz(_: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    warp::any()
        .map(|| warp::reply::json(&serde_json::json!({ "status": "ok" })).into_response())
        .boxed()
}

/// `GET /readyz`.
pub fn readyz(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    with_state(state.clone()).then(readiness).boxed()
}

/// `GET /metrics`, behind `metrics_token` when it is set.
pub fn metrics(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    warp::header::optional::<String>("authorization")
        .and(with_state(state.clone()))
        .and_then(render_metrics)
        .boxed()
}

/// `GET /api/client/v1/openapi.json`.
pub fn openapi(_: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    warp::any()
        .map(|| {
            let mut response = Response::new(OPENAPI.into());
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        })
        .boxed()
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// The first failed check, as `name: why`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Each check: `ok` or why it failed.
    checks: std::collections::BTreeMap<&'static str, String>,
}

async fn readiness(state: Arc<AppState>) -> Response {
    let services = &state.services;
    let timeout = services.config.readiness_timeout;
    let mut checks = std::collections::BTreeMap::new();
    let mut reason = None;
    let results = [
        ("database", bounded(timeout, check_database(services)).await),
        ("storage", bounded(timeout, check_storage(&state)).await),
        ("transcoders", check_actors(services)),
    ];
    for (name, result) in results {
        let outcome = match result {
            Ok(()) => "ok".to_string(),
            Err(why) => {
                reason.get_or_insert_with(|| format!("{name}: {why}"));
                why
            }
        };
        checks.insert(name, outcome);
    }
    let (status, code) = match reason {
        None => ("ready", StatusCode::OK),
        Some(_) => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
    };
    let body = Readiness {
        status,
        reason,
        checks,
    };
    let mut response = warp::reply::with_status(warp::reply::json(&body), code).into_response();
    if let Some(why) = &body.reason {
        // On the request's log line, with its span.
        let why = format!("not ready: {why}");
        response
            .extensions_mut()
            .insert(super::error::Failure::upstream(why));
    }
    response
}

async fn bounded(
    timeout: std::time::Duration,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f64())))
}

/// The database answers a read.
async fn check_database(services: &Services) -> Result<(), String> {
    let store = services.store.clone();
    // A read transaction: cheap, but still file I/O.
    services
        .blocking(move || store.probe())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("database not readable: {e}"))
}

/// Every folder the server writes to takes a new file, and the final storage
/// passes its check (its last outcome while it stands: see [`crate::storage::check`]).
async fn check_storage(state: &AppState) -> Result<(), String> {
    let services = &state.services;
    let layout = services.layout.clone();
    // Creating and removing files blocks.
    services
        .blocking(move || {
            for (name, dir) in [
                ("staging", layout.staging_dir()),
                ("work", layout.work_root()),
                ("media", layout.media_root()),
            ] {
                probe_write(&dir).map_err(|e| format!("{name} folder not writable: {e}"))?;
            }
            Ok::<_, String>(())
        })
        .await
        .map_err(|e| e.to_string())??;
    state.storage_check.outcome().await
}

/// Creates, writes and removes a uniquely named hidden file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(format!(".readyz-{}", uuid::Uuid::new_v4()));
    let written = std::fs::File::create_new(&path).and_then(|mut f| f.write_all(b"ok"));
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

/// The transcoder pool and the actors an upload and its events pass through are running.
fn check_actors(services: &Services) -> Result<(), String> {
    let peers = &services.peers;
    let running =
        |status: Option<ractor::ActorStatus>| status == Some(ractor::ActorStatus::Running);
    let children = [
        (
            "transcoder pool",
            peers.transcoders.get().map(|a| a.get_status()),
        ),
        (
            "status registry",
            peers.registry.get().map(|a| a.get_status()),
        ),
        ("intake", peers.intake.get().map(|a| a.get_status())),
        ("uploader", peers.uploader.get().map(|a| a.get_status())),
        (
            "webhook delivery",
            peers.webhooks.get().map(|a| a.get_status()),
        ),
    ];
    match children.iter().find(|(_, status)| !running(*status)) {
        Some((name, _)) => Err(format!("{name} is not running")),
        None => Ok(()),
    }
}

async fn render_metrics(
    authorization: Option<String>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let services = &state.services;
    if let Some(token) = &services.config.metrics_token {
        let offered = authorization.as_deref().and_then(super::auth::bearer);
        if !offered.is_some_and(|offered| same_secret(offered, token)) {
            return Err(ApiError::Unauthenticated.into());
        }
    }
    let text = services
        .metrics
        .render(crate::metrics::Sampled {
            queue_depth: services.queued.load(Ordering::Relaxed),
            requests_in_flight: state.in_flight.held(),
            event_streams: services.events.open_streams(),
        })
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn same_secret(offered: &str, expected: &str) -> bool {
    let (a, b) = (offered.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_json_and_3_1() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
