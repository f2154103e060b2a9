//! What requests may hold, across every connection: a cap on the requests
//! in flight that hold a file, a body or a buffer ([`InFlight`]), and the
//! reset of a response that makes no progress because its client reads
//! nothing ([`Watched`]).
//!
//! A permit of [`InFlight`] is taken when such a request is routed (none
//! left: a quick 503) and rides with its response body ([`Held`]) until the
//! last byte is handed on or the body is dropped. The stall watch needs no
//! timer per response: each task that runs requests (an HTTP/1 connection,
//! an HTTP/2 stream) is polled inside [`Watched`], which tells the bodies
//! made while it polls where to report ([`Activity`]); it arms one timer only
//! while a body of its task is waiting to send. An HTTP/2 stream whose client
//! never opens its window is never polled for data, so only a watch outside
//! the body can see it: when it fires, the task's future is dropped, which
//! resets the stream (or closes the HTTP/1 connection) and closes the file.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use warp::hyper::body::Body as _;
use warp::reply::Response;
use warp::Reply;

/// The cap on requests in flight that hold a file, a body or a buffer.
pub struct InFlight {
    permits: Arc<Semaphore>,
    cap: usize,
}

impl InFlight {
    /// A cap of `cap` requests.
    pub fn new(cap: usize) -> InFlight {
        InFlight {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    /// A place for one more request, if there is one.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Requests holding a place now.
    pub fn held(&self) -> usize {
        self.cap - self.permits.available_permits()
    }
}

/// Milliseconds since the first use: a clock cheap to store atomically
/// (tokio's, as the timer is).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(Instant::now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// What the response bodies of one task report: how many are sending and
/// when one last moved.
#[derive(Default)]
pub struct Activity {
    sending: AtomicUsize,
    moved_ms: AtomicU64,
}

impl Activity {
    fn moved(&self) {
        self.moved_ms.store(now_ms(), Ordering::Relaxed);
    }
}

thread_local! {
    /// The activity of the task being polled on this thread, set by [`Watched`].
    static CURRENT: RefCell<Option<Arc<Activity>>> = const { RefCell::new(None) };
}

/// `response` with its body holding `permit` until the body ends, and
/// reporting to the task polling now (if it is [`Watched`]).
pub fn hold(response: Response, permit: OwnedSemaphorePermit) -> Response {
    let (mut parts, body) = response.into_parts();
    let activity = CURRENT.with(|current| current.borrow().clone());
    if let Some(activity) = &activity {
        activity.sending.fetch_add(1, Ordering::Relaxed);
        activity.moved();
    }
    // The length goes with the head: a stream body has none of its own.
    if let Some(length) = body.size_hint().exact() {
        if !parts
            .headers
            .contains_key(warp::http::header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(warp::http::header::CONTENT_LENGTH, length.into());
        }
    }
    let held = Held {
        body,
        _permit: permit,
        activity,
    };
    let mut response = warp::reply::stream(held).into_response();
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    *response.extensions_mut() = parts.extensions;
    response
}

type WarpBody = <Response as BodyOf>::Body;

/// Names the body type of a response (warp's has no public name).
pub trait BodyOf {
    /// The body.
    type Body;
}

impl<B> BodyOf for warp::http::Response<B> {
    type Body = B;
}

/// A response body that holds its in-flight place and reports its progress.
struct Held {
    body: WarpBody,
    _permit: OwnedSemaphorePermit,
    activity: Option<Arc<Activity>>,
}

impl Stream for Held {
    type Item = Result<Bytes, warp::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            if let Some(activity) = &self.activity {
                activity.moved();
            }
            // Trailers are not sent by any route; data is all there is.
            if let Ok(data) = frame.into_data() {
                return Poll::Ready(Some(Ok(data)));
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(activity) = &self.activity {
            activity.sending.fetch_sub(1, Ordering::Relaxed);
            activity.moved();
        }
    }
}

/// Why a watched task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its future finished.
    Done,
    /// A response of it made no progress for the stall time: it was dropped.
    Stalled,
}

pin_project_lite::pin_project! {
    /// A task that runs requests, ended (its future dropped) once a response
    /// of it has sent nothing for `stall`.
    pub struct Watched<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
        stall: Duration,
        // Armed only while a body is sending.
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F: Future> Watched<F> {
    /// `inner`, watched for responses that stall for `stall`.
    pub fn new(inner: F, stall: Duration) -> Watched<F> {
        Watched {
            inner,
            activity: Arc::default(),
            stall,
            timer: None,
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut this = self.project();
        let outer = CURRENT.with(|current| current.replace(Some(this.activity.clone())));
        let polled = this.inner.poll(cx);
        CURRENT.with(|current| *current.borrow_mut() = outer);
        if polled.is_ready() {
            return Poll::Ready(Ended::Done);
        }
        if this.activity.sending.load(Ordering::Relaxed) == 0 {
            this.timer.set(None);
            return Poll::Pending;
        }
        let stall_ms = u64::try_from(this.stall.as_millis()).unwrap_or(u64::MAX);
        let due_ms = this
            .activity
            .moved_ms
            .load(Ordering::Relaxed)
            .saturating_add(stall_ms);
        let now = now_ms();
        if now >= due_ms {
            return Poll::Ready(Ended::Stalled);
        }
        let due = Instant::now() + Duration::from_millis(due_ms - now);
        match this.timer.as_mut().as_pin_mut() {
            Some(timer) => timer.reset(due),
            None => this.timer.set(Some(tokio::time::sleep_until(due))),
        }
        if let Some(timer) = this.timer.as_mut().as_pin_mut() {
            if timer.poll(cx).is_ready() {
                // Due already: look again at once.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static str) -> Response {
        warp::reply::with_header(body, "x-kept", "yes").into_response()
    }

    #[tokio::test]
    async fn a_held_body_keeps_its_place_until_it_ends() {
        let cap = InFlight::new(2);
        let permit = cap.try_take().unwrap();
        let held = hold(response("hello"), permit);
        assert_eq!(cap.held(), 1);
        assert_eq!(held.headers()["x-kept"], "yes");
        assert_eq!(held.headers()["content-length"], "5");
        let mut body = held.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) =
            futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(bytes, b"hello");
        drop(body);
        assert_eq!(cap.held(), 0);
        let _a = cap.try_take().unwrap();
        let _b = cap.try_take().unwrap();
        assert!(cap.try_take().is_none());
    }

    #[tokio::test]
    async fn a_task_whose_response_sends_nothing_is_ended_and_an_idle_one_is_not() {
        let cap = InFlight::new(1);
        // A response made inside the task, then never read.
        let stalled = Watched::new(
            async {
                let _response = hold(response("never read"), cap.try_take().unwrap());
                std::future::pending::<()>().await;
            },
            Duration::from_millis(300),
        );
        let started = Instant::now();
        assert_eq!(stalled.await, Ended::Stalled);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(cap.held(), 0, "the place is given back");

        // With no response sending, waiting is not a stall.
        let idle = Watched::new(
            tokio::time::sleep(Duration::from_secs(1)),
            Duration::from_millis(300),
        );
        assert_eq!(idle.await, Ended::Done);
    }
}
