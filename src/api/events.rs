//! `GET /uploads/{id}/events` and `GET /events`: Server-Sent Events from
//! the live feed ([`crate::actors::events`]).
//!
//! An upload's stream starts with its current state read from the record,
//! then sends each change of it, and ends after its terminal state (or,
//! with no event, when it is deleted: a reconnect is then a 404). Its ids
//! are the record's version and the progress shown, so `Last-Event-ID`
//! skips what was seen, across restarts. The tenant's stream sends every
//! change of the key's uploads until the client leaves; its ids are the
//! feed's, which start from the clock; the stream opens with an id (alone,
//! which sets a client's last event id and dispatches nothing), so that a
//! client that drops before any change comes back with it. A tenant stream
//! resumed with a `Last-Event-ID` before the tenant's last change, or one
//! that fell behind, gets `event: resync` (with the id to resume from):
//! reload the list. Both send a comment after [`KEEP_ALIVE`] without an event, end
//! when the server stops or, instead of their next frame, when their key
//! is revoked (so within [`KEEP_ALIVE`]), are dropped like any
//! response when their client stops reading ([`super::bounds::watch`]),
//! and count against `max_event_streams_per_tenant`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::routes::path_param;
use super::uploads::upload_id;
use super::{with_state, AppState};
use crate::actors::events::{self, Change, Missed, Subscription};

/// Longest a stream stays silent: then it sends a comment line, which
/// keeps proxies from closing it (and shows the server it is read).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

const RESYNC_DATA: &[u8] = b"{\"message\":\"Events were missed; reload the list.\"}";

/// `GET /uploads/{id}/events`: the route's filter.
pub fn upload(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(warp::method())
        .and(path_param(0))
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_state(state.clone()))
        .and_then(upload_stream)
        .boxed()
}

/// `GET /events`: the route's filter.
pub fn tenant(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(warp::method())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_state(state.clone()))
        .and_then(tenant_stream)
        .boxed()
}

async fn upload_stream(
    tenant: Tenant,
    method: Method,
    id: String,
    last_event_id: Option<String>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let id = upload_id(&id).ok_or(ApiError::NotFound)?;
    let services = &state.services;
    let read = || {
        services
            .store
            .get(id)
            .map_err(ApiError::from)?
            .filter(|r| *r.tenant == *tenant.0)
            .ok_or(ApiError::NotFound)
    };
    // An unknown upload is a 404 before a place is asked for.
    read()?;
    if method == Method::HEAD {
        return Ok(headers_only());
    }
    // Open before the record is read for the stream: no change after that
    // read is missed.
    let subscription = subscribe(&state, &tenant)?;
    let record = read()?;
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
    let follow = Follow {
        upload: id,
        last: current,
        ended,
        read_owed: false,
    };
    Ok(EventStream::new(subscription, state.clone(), Kind::Upload(follow), first).response())
}

async fn tenant_stream(
    tenant: Tenant,
    method: Method,
    last_event_id: Option<String>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    if method == Method::HEAD {
        return Ok(headers_only());
    }
    let subscription = subscribe(&state, &tenant)?;
    // Changes are not kept: a client that saw less than the last one missed some.
    let missed = last_event_id.is_some_and(|v| {
        v.trim()
            .parse::<u64>()
            .map_or(true, |seen| subscription.missed_since(seen))
    });
    // Either way the client has an id to come back with from the start.
    let opened = subscription.opened_after();
    let first = if missed {
        resync(opened)
    } else {
        Bytes::from(format!("id: {opened}\n\n"))
    };
    Ok(EventStream::new(subscription, state.clone(), Kind::Tenant, Some(first)).response())
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

/// The answer to `HEAD`: a stream's headers, and no place taken among the
/// tenant's streams.
fn headers_only() -> Response {
    let mut response = Response::new(Default::default());
    stream_headers(response.headers_mut());
    response
}

fn stream_headers(headers: &mut warp::http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// `event: resync`, with the id of the last change it stands for.
fn resync(last: u64) -> Bytes {
    events::frame("resync", Some(last), RESYNC_DATA)
}

/// One open stream, of either kind.
struct EventStream {
    subscription: Subscription,
    state: Arc<AppState>,
    kind: Kind,
    /// The frame to send before any change (the current state, a resync).
    first: Option<Bytes>,
    /// When a keep-alive is due, if nothing is sent before.
    quiet_until: Instant,
    /// Longest silence: [`KEEP_ALIVE`], or less if the stall timeout is short.
    keep_alive: Duration,
}

enum Kind {
    /// The key's stream: every change.
    Tenant,
    /// One upload's stream.
    Upload(Follow),
}

/// Where an upload's stream is.
struct Follow {
    upload: Uuid,
    /// The id of the last event sent, or of the state the client had seen.
    last: u64,
    /// Its last event is sent: the stream ends.
    ended: bool,
    /// Changes were missed and the record could not be read: read it again.
    read_owed: bool,
}

impl EventStream {
    fn new(
        subscription: Subscription,
        state: Arc<AppState>,
        kind: Kind,
        first: Option<Bytes>,
    ) -> EventStream {
        // A stream that sends nothing for the stall timeout is dropped.
        let stall = state.services.config.response_stall_timeout;
        let keep_alive = KEEP_ALIVE.min(stall / 2);
        EventStream {
            subscription,
            state,
            kind,
            first,
            quiet_until: Instant::now() + keep_alive,
            keep_alive,
        }
    }

    /// A `text/event-stream` response of the stream's frames, never cached
    /// or buffered by proxies.
    fn response(self) -> Response {
        let body = futures_util::stream::unfold(self, |mut stream| async move {
            let frame = stream.next().await?;
            stream.quiet_until = Instant::now() + stream.keep_alive;
            Some((Ok::<_, std::convert::Infallible>(frame), stream))
        });
        let mut response = warp::reply::stream(body).into_response();
        stream_headers(response.headers_mut());
        super::bounds::watch(response)
    }

    /// The next frame to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if let Kind::Upload(follow) = &self.kind {
                if follow.ended {
                    return None;
                }
            }
            let next = tokio::time::timeout_at(self.quiet_until, self.subscription.next()).await;
            // A revoked key's streams end instead of their next frame.
            if !self
                .state
                .services
                .keys
                .is_active(self.subscription.tenant())
            {
                return None;
            }
            let frame = match (&mut self.kind, next) {
                (_, Ok(Err(Missed::Closed))) => return None,
                (Kind::Tenant, Err(_)) => Some(Bytes::from_static(KEEP_ALIVE_FRAME)),
                (Kind::Tenant, Ok(Ok(change))) => Some(change.tenant_frame.clone()),
                (Kind::Tenant, Ok(Err(Missed::Lagged(last)))) => Some(resync(last)),
                (Kind::Upload(follow), Err(_)) => {
                    let read = follow.read_owed.then(|| follow.read_again(&self.state));
                    read.flatten()
                        .or(Some(Bytes::from_static(KEEP_ALIVE_FRAME)))
                }
                (Kind::Upload(follow), Ok(Ok(change))) => follow.take(&change),
                (Kind::Upload(follow), Ok(Err(Missed::Lagged(_)))) => {
                    follow.read_again(&self.state)
                }
            };
            if frame.is_some() {
                return frame;
            }
        }
    }
}

impl Follow {
    /// The frame of `change`, if it is a change of this upload it has not sent.
    fn take(&mut self, change: &Change) -> Option<Bytes> {
        if change.upload != self.upload {
            return None;
        }
        let Some(id) = change.upload_event_id else {
            // Deleted.
            self.ended = true;
            return None;
        };
        if id <= self.last {
            return None;
        }
        self.last = id;
        self.ended = change.last;
        change.upload_frame.clone()
    }

    /// After changes were missed: the record as it is now, if it is newer
    /// than what was sent (gone: the stream ends).
    fn read_again(&mut self, state: &AppState) -> Option<Bytes> {
        let services = &state.services;
        let Ok(record) = services.store.get(self.upload) else {
            // Tried again at the next keep-alive.
            self.read_owed = true;
            return None;
        };
        self.read_owed = false;
        let Some(record) = record else {
            self.ended = true;
            return None;
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
