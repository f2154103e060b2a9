//! The HTTP API under `/api/client/v1`, and media serving under `/media`.
//! Every route is one entry of [`routes::ROUTES`]; handlers are plain
//! functions in their own files, each with the small warp filter that gives
//! it what it needs; every error becomes JSON in [`error::recover`].
//! Operator endpoints (health, readiness, metrics, OpenAPI) are in [`ops`];
//! [`observe`] routes each request and wraps it with a request id, a log line
//! and the HTTP metrics.

pub mod auth;
pub mod body;
pub mod bounds;
pub mod console;
pub mod cors;
pub mod error;
pub mod events;
pub mod folder;
pub mod idempotency;
pub mod intake;
pub mod lifecycle;
pub mod me;
pub mod media;
pub mod observe;
pub mod ops;
pub mod parts;
pub mod remote_media;
pub mod routes;
pub mod tus;
pub mod uploads;
pub mod view_cache;

use std::sync::Arc;

use warp::Filter;

use crate::actors::Services;
use crate::store::record::UploadRecord;
use crate::view::UploadView;

/// What the handlers need.
pub struct AppState {
    /// Actors, database, storage, keys.
    pub services: Arc<Services>,
    /// Rendered bodies of finished uploads.
    pub views: view_cache::ViewCache,
    /// Places for requests that hold a file, a body or a buffer.
    pub in_flight: Arc<bounds::InFlight>,
    /// The final storage's last check, shared by the start-up check and `/readyz`.
    pub storage_check: crate::storage::check::StorageCheck,
    /// `Idempotency-Key`s whose first request is being received or recorded.
    pub idempotency_claims: Arc<idempotency::Claims>,
    /// The one writer of each tus upload.
    pub tus_writers: tus::Writers,
}

impl AppState {
    /// How clients see `record` now: with live progress and playback URLs.
    pub fn view<'a>(&self, record: &'a UploadRecord) -> UploadView<'a> {
        let live = self.services.progress.get(record.id);
        UploadView::render(
            record,
            self.services.storage.as_ref(),
            &self.services.base_url,
            live,
            self.services.previews.serves(record),
        )
    }
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The routes as the HTTP service, with request ids, logs and metrics.
pub fn service(state: Arc<AppState>) -> observe::HttpService<impl observe::Routes + Clone> {
    let table = routes::table(&state);
    observe::HttpService::new(table, state)
}
