//! The HTTP API under `/api/client/v1`, and media serving under `/media`.
//! Routes are small functions; handlers are plain `async fn`s in their own
//! files; every error becomes JSON in [`error::recover`]. Operator endpoints
//! (health, readiness, metrics, OpenAPI) are in [`ops`]; [`observe`] wraps it
//! all with request ids, request logs and HTTP metrics.

pub mod auth;
pub mod body;
pub mod error;
pub mod folder;
pub mod intake;
pub mod observe;
pub mod ops;
pub mod remote_media;
pub mod uploads;
pub mod view_cache;

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::actors::Services;
use crate::store::keys::KeyCache;
use crate::store::record::UploadRecord;
use crate::view::UploadView;

/// What the handlers need.
pub struct AppState {
    /// Actors, database and storage.
    pub services: Arc<Services>,
    /// API keys.
    pub keys: Arc<KeyCache>,
    /// Base URL put in front of media paths.
    pub base_url: String,
    /// Rendered bodies of finished uploads.
    pub views: view_cache::ViewCache,
}

impl AppState {
    /// How clients see `record` now: with live progress and playback URLs.
    pub fn view<'a>(&self, record: &'a UploadRecord) -> UploadView<'a> {
        let live = self.services.progress.get(record.id);
        UploadView::render(record, self.services.storage.as_ref(), &self.base_url, live)
    }
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Every route of the server, with errors mapped to JSON.
///
/// warp clones what a filter captures each time a request tries it, so the
/// status poll, the route most requests take, comes first and captures the
/// state once; the other routes come after it as one boxed filter, one
/// reference count for the lot.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    let shown = state.clone();
    let show = warp::path!("api" / "client" / "v1" / "uploads" / String)
        .and(warp::get())
        .and(auth::authorization())
        .and_then(move |id, authorization| {
            std::future::ready(uploads::show(id, authorization, &shown))
        });

    show.or(other_routes(state))
        .unify()
        .recover(error::recover)
        .unify()
}

/// Every route but `GET /uploads/{id}`.
fn other_routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    // The shared prefix is matched once for both upload routes.
    let uploads = warp::path!("api" / "client" / "v1" / "uploads" / ..);
    let create = warp::path::end()
        .and(warp::post())
        .and(auth::tenant_or_refusal(state.clone()))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<String>("expect"))
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .and_then(intake::create);
    let list = warp::path::end()
        .and(warp::get())
        .and(auth::tenant(state.clone()))
        .and(with_state(state.clone()))
        .and_then(uploads::list);
    let media = match state.services.storage.media_access() {
        crate::storage::MediaAccess::ServedLocally => media(&state),
        _ => remote_media::routes(&state),
    };

    uploads
        .and(create.or(list).unify())
        .or(media)
        .unify()
        .or(ops::routes(&state))
        .unify()
        .boxed()
}

/// The routes as the HTTP service, with request ids, logs and metrics.
pub fn service(state: Arc<AppState>) -> observe::HttpService<impl observe::RouteFilter> {
    let services = state.services.clone();
    observe::HttpService::new(routes(state), services)
}

/// Completed outputs at `/media/{token}/{file}` (and `/media/{token}/hls/...` for the
/// ladder), with Range support (206) and content types; folders of unfinished
/// uploads (`.incoming-*`) and any other path segment starting with `.` are hidden.
fn media(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    let root = state.services.layout.media_root();
    warp::path("media")
        .and(warp::get().or(warp::head()).unify())
        .and(warp::path::peek())
        .and_then(|rest: warp::path::Peek| async move {
            let hidden = rest.segments().any(|s| s.starts_with('.'));
            // `{token}/{file}`, or deeper for the HLS ladder (`{token}/hls/720p/seg_00000.ts`).
            if hidden || rest.segments().count() < 2 {
                Err(warp::reject::custom(error::ApiError::NotFound))
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
                response.headers_mut().insert(
                    "content-type",
                    warp::http::HeaderValue::from_static(content_type),
                );
            }
            response.headers_mut().insert(
                "cache-control",
                warp::http::HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        })
        .boxed()
}
