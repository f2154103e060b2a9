//! What requests may hold, across every connection: a cap on the requests
//! in flight that hold a file, a body or a buffer ([`InFlight`]), and the
//! reset of a response that makes no progress because its client reads
//! nothing ([`Watched`]).
//!
//! A place of [`InFlight`] is taken when such a request is routed (none
//! left: a quick 503) and rides with its response body ([`hold`]) until the
//! last byte is handed on or the body is dropped. The body is handed on in
//! slices of [`SLICE`] bytes: HTTP/2 queues whatever it is given, window or
//! not, so the slice is what a stalled stream can park in the connection.
//!
//! The stall watch needs no timer per response: each task that runs
//! requests (an HTTP/1 connection, an HTTP/2 stream) is polled inside
//! [`Watched`], which tells the bodies made while it polls where to report
//! ([`Activity`]); it arms one timer only while a body of its task is
//! sending. A stream whose client never opens its window is not polled
//! again once its first slice is queued, so only a watch outside the body
//! can see it: when it fires, the task's future is dropped, which resets
//! the stream (or closes the HTTP/1 connection) and closes the file.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use warp::hyper::body::Body as _;
use warp::reply::Response;
use warp::Reply;

/// The cap on requests in flight that hold a file, a body or a buffer. A
/// quarter of the places is kept for requests with a valid API key
/// (uploads, lists): `/media` needs no key, and its requests alone must not
/// be able to shut uploads out.
pub struct InFlight {
    held: AtomicUsize,
    cap: usize,
    /// Places only a request with a key may take.
    reserve: usize,
}

/// One request's place among those in flight, given back when dropped.
pub struct Place(Arc<InFlight>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Release);
    }
}

impl InFlight {
    /// A cap of `cap` requests.
    pub fn new(cap: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            held: AtomicUsize::new(0),
            cap,
            reserve: cap / 4,
        })
    }

    /// A place for one more request, if there is one: any place for a
    /// request with a key (`keyed`), one outside the reserve for others.
    pub fn try_take(self: &Arc<Self>, keyed: bool) -> Option<Place> {
        let limit = if keyed {
            self.cap
        } else {
            self.cap - self.reserve
        };
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()?;
        Some(Place(self.clone()))
    }

    /// Requests holding a place now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// Milliseconds from the first use to `at`: a clock cheap to store atomically.
pub fn millis(at: std::time::Instant) -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(at.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX - 1)
}

fn now_ms() -> u64 {
    millis(std::time::Instant::now())
}

/// Most bytes a response body hands on at a time. HTTP/2 takes a whole
/// chunk into its send queue even when the client's window has room for one
/// byte, and that queue outlives the response once the body has ended: the
/// slice bounds what a stalled stream can leave there (16 KiB, one HTTP/2
/// frame). It is also the least a response must send per stall time.
pub const SLICE: usize = 16 * 1024;

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

/// `response` with its body holding `place` until the body ends, handed on
/// in slices of at most [`SLICE`] bytes, and reporting to the task polling
/// now (if it is [`Watched`]).
pub fn hold(response: Response, place: Place) -> Response {
    handed_on(response, Some(place))
}

/// `response` with its body handed on and reporting as [`hold`] does, but
/// holding no place: for a stream that is bounded otherwise (the event
/// streams), and is still dropped if its client stops reading.
pub fn watch(response: Response) -> Response {
    handed_on(response, None)
}

fn handed_on(response: Response, place: Option<Place>) -> Response {
    let (mut parts, body) = response.into_parts();
    let activity = CURRENT.with(|current| current.borrow().clone());
    if let Some(activity) = &activity {
        activity.sending.fetch_add(1, Ordering::Relaxed);
        activity.moved();
    }
    // The length goes with the head: a stream body has none of its own.
    set_length(&mut parts, body.size_hint().exact());
    let held = Held {
        body,
        rest: Bytes::new(),
        _place: place,
        activity,
    };
    let mut response = warp::reply::stream(held).into_response();
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    *response.extensions_mut() = parts.extensions;
    response
}

/// Sets `Content-Length` to `length` unless the response has one, or is of a
/// status that must not (RFC 9110 8.6: 1xx, 204, 304).
pub fn set_length(parts: &mut warp::http::response::Parts, length: Option<u64>) {
    let status = parts.status;
    let may = !(status.is_informational()
        || status == warp::http::StatusCode::NO_CONTENT
        || status == warp::http::StatusCode::NOT_MODIFIED);
    if let Some(length) = length.filter(|_| may) {
        if !parts
            .headers
            .contains_key(warp::http::header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(warp::http::header::CONTENT_LENGTH, length.into());
        }
    }
}

/// The body type of warp's responses.
pub type WarpBody = <Response as BodyOf>::Body;

/// Names the body type of a response (warp's has no public name).
pub trait BodyOf {
    /// The body.
    type Body;
}

impl<B> BodyOf for warp::http::Response<B> {
    type Body = B;
}

/// A response body that holds its in-flight place, hands its data on in
/// slices and reports its progress.
struct Held {
    body: WarpBody,
    /// What is left of the body's last chunk.
    rest: Bytes,
    _place: Option<Place>,
    activity: Option<Arc<Activity>>,
}

impl Stream for Held {
    type Item = Result<Bytes, warp::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if !self.rest.is_empty() {
                let take = self.rest.len().min(SLICE);
                let slice = self.rest.split_to(take);
                if let Some(activity) = &self.activity {
                    activity.moved();
                }
                return Poll::Ready(Some(Ok(slice)));
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            // Trailers are not sent by any route; data is all there is.
            if let Ok(data) = frame.into_data() {
                self.rest = data;
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
        let due = tokio::time::Instant::now() + Duration::from_millis(due_ms - now);
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
        let place = cap.try_take(false).unwrap();
        let held = hold(response("hello"), place);
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
    }

    #[test]
    fn a_quarter_of_the_places_is_kept_for_requests_with_a_key() {
        let cap = InFlight::new(8);
        let public: Vec<Place> = (0..6).map_while(|_| cap.try_take(false)).collect();
        assert_eq!(public.len(), 6);
        let keyed: Vec<Place> = (0..4).map_while(|_| cap.try_take(true)).collect();
        assert_eq!(keyed.len(), 2);
        assert!(cap.try_take(true).is_none());
        drop(public);
        assert_eq!(cap.held(), 2);
        assert!(cap.try_take(false).is_some());
    }

    #[tokio::test]
    async fn a_body_is_handed_on_in_slices() {
        let cap = InFlight::new(1);
        let big = vec![7u8; 3 * SLICE + 5];
        let held = hold(
            Response::new(big.clone().into()),
            cap.try_take(false).unwrap(),
        );
        assert_eq!(
            held.headers()["content-length"],
            big.len().to_string().as_str()
        );
        let mut body = held.into_body();
        let mut sizes = Vec::new();
        while let Some(frame) =
            futures_util::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [SLICE, SLICE, SLICE, 5]);

        // A 304 gets no length, as RFC 9110 8.6 has it.
        let not_modified = warp::reply::with_status("", warp::http::StatusCode::NOT_MODIFIED);
        drop(body);
        let held = hold(not_modified.into_response(), cap.try_take(false).unwrap());
        assert!(held.headers().get("content-length").is_none());
    }

    #[tokio::test]
    async fn a_task_whose_response_sends_nothing_is_ended_and_an_idle_one_is_not() {
        let cap = InFlight::new(1);
        // A response made inside the task, then never read.
        let stalled = Watched::new(
            async {
                let _response = hold(response("never read"), cap.try_take(false).unwrap());
                std::future::pending::<()>().await;
            },
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
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
