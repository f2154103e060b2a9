//! `GET /uploads/{id}/events` and `GET /events`: Server-Sent Events from
//! the live feed ([`crate::actors::events`]).
//!
//! An upload's stream starts with its current state read from the record,
//! then sends each change of it, and ends after its last (completed,
//! failed, or `event: deleted`). Its ids are the record's version and the
//! progress shown, so `Last-Event-ID` skips what was seen, across restarts.
//! The tenant's stream sends every change of the key's uploads until the
//! client leaves; its ids are the feed's, which start from the clock. A
//! tenant stream resumed with `Last-Event-ID` after changes it did not see,
//! or one that fell behind, gets `event: resync`: reload the list. Both
//! send a comment after [`KEEP_ALIVE`] without an event, and both count
//! against `max_event_streams_per_tenant`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::routes::path_param;
use super::uploads::upload_id;
use super::{with_state, AppState};
use crate::actors::events::{self, Missed, Subscription};

/// Longest a stream stays silent: then it sends a comment line, which
/// keeps proxies from closing it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

const RESYNC_FRAME: &[u8] =
    b"event: resync\ndata: {\"message\":\"Events were missed; reload the list.\"}\n\n";

/// `GET /uploads/{id}/events`: the route's filter.
pub fn upload(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(path_param(0))
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_state(state.clone()))
        .and_then(upload_stream)
        .boxed()
}

/// `GET /events`: the route's filter.
pub fn tenant(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_state(state.clone()))
        .and_then(tenant_stream)
        .boxed()
}

async fn upload_stream(
    tenant: Tenant,
    id: String,
    last_event_id: Option<String>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let id = upload_id(&id).ok_or(ApiError::NotFound)?;
    // Open before the record is read: no change after the read is missed.
    let subscription = subscribe(&state, &tenant)?;
    let services = &state.services;
    let record = services
        .store
        .get(id)
        .map_err(ApiError::from)?
        .filter(|r| *r.tenant == *tenant.0)
        .ok_or(ApiError::NotFound)?;
    let progress = events::shown_progress(services, &record);
    let current = events::upload_event_id(&record, progress);
    let seen = last_event_id.and_then(|v| v.trim().parse::<u64>().ok());
    let first = match seen {
        Some(seen) if seen >= current => None,
        _ => Some(events::upload_frame(services, &record, progress)),
    };
    let ended = record.status.is_terminal();
    if ended && first.is_none() {
        // Seen to its end: 204 tells an EventSource not to reconnect.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let stream = UploadStream {
        subscription,
        upload: id,
        last: current,
        ended,
        first,
        state: state.clone(),
    };
    Ok(event_stream(Frames::Upload(stream)))
}

async fn tenant_stream(
    tenant: Tenant,
    last_event_id: Option<String>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let subscription = subscribe(&state, &tenant)?;
    // Changes are not kept: a client that saw less than the last one missed some.
    let missed = last_event_id.is_some_and(|v| {
        v.trim()
            .parse::<u64>()
            .map_or(true, |seen| seen < subscription.last_seq())
    });
    let stream = TenantStream {
        subscription,
        first: missed.then(|| Bytes::from_static(RESYNC_FRAME)),
    };
    Ok(event_stream(Frames::Tenant(stream)))
}

/// A place among the tenant's streams, or a 429.
fn subscribe(state: &AppState, tenant: &Tenant) -> Result<Subscription, ApiError> {
    let config = &state.services.config;
    let limit = config.max_event_streams_per_tenant;
    state
        .services
        .events
        .subscribe(&tenant.0, limit)
        .map_err(|_| ApiError::TooManyEventStreams {
            limit,
            retry_after: config.retry_after,
        })
}

/// The frames of one stream, of either kind.
enum Frames {
    Upload(UploadStream),
    Tenant(TenantStream),
}

impl Frames {
    async fn next(&mut self) -> Option<Bytes> {
        match self {
            Frames::Upload(stream) => stream.next().await,
            Frames::Tenant(stream) => stream.next().await,
        }
    }
}

/// A `text/event-stream` response of `frames`, never cached or buffered by proxies.
fn event_stream(frames: Frames) -> Response {
    let body = futures_util::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), frames))
    });
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The next change of the feed within [`KEEP_ALIVE`], or `None` if there was none.
async fn within_keep_alive(
    subscription: &mut Subscription,
) -> Option<Result<Arc<events::Change>, Missed>> {
    tokio::time::timeout(KEEP_ALIVE, subscription.next())
        .await
        .ok()
}

/// One upload's stream.
struct UploadStream {
    subscription: Subscription,
    upload: Uuid,
    /// The id of the last event sent, or of the state the client had seen.
    last: u64,
    /// Its last event is sent: the stream ends.
    ended: bool,
    /// The current state, unless the client had seen it.
    first: Option<Bytes>,
    state: Arc<AppState>,
}

impl UploadStream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        while !self.ended {
            let change = match within_keep_alive(&mut self.subscription).await {
                None => return Some(Bytes::from_static(KEEP_ALIVE_FRAME)),
                Some(Ok(change)) => change,
                Some(Err(Missed::Closed)) => return None,
                Some(Err(Missed::Lagged)) => match self.read_again() {
                    Some(frame) => return Some(frame),
                    None => continue,
                },
            };
            if change.upload != self.upload {
                continue;
            }
            if let Some(id) = change.upload_event_id {
                if id <= self.last {
                    continue;
                }
                self.last = id;
            }
            self.ended = change.last;
            return Some(change.upload_frame.clone());
        }
        None
    }

    /// After changes were missed: the record as it is now, if it is newer
    /// than what was sent (gone: its deletion).
    fn read_again(&mut self) -> Option<Bytes> {
        let services = &self.state.services;
        let Ok(record) = services.store.get(self.upload) else {
            // The database could not be read: the next change will tell.
            return None;
        };
        let Some(record) = record else {
            self.ended = true;
            return Some(events::deleted_frame(self.upload));
        };
        let progress = events::shown_progress(services, &record);
        let id = events::upload_event_id(&record, progress);
        if id <= self.last {
            return None;
        }
        self.last = id;
        self.ended = record.status.is_terminal();
        Some(events::upload_frame(services, &record, progress))
    }
}

/// A tenant's stream.
struct TenantStream {
    subscription: Subscription,
    /// `event: resync`, when a resumed stream missed changes.
    first: Option<Bytes>,
}

impl TenantStream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match within_keep_alive(&mut self.subscription).await {
            None => Some(Bytes::from_static(KEEP_ALIVE_FRAME)),
            Some(Ok(change)) => Some(change.tenant_frame.clone()),
            Some(Err(Missed::Lagged)) => Some(Bytes::from_static(RESYNC_FRAME)),
            Some(Err(Missed::Closed)) => None,
        }
    }
}
