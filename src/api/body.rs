//! Guards on the raw request body before multer sees it: an idle timeout
//! (a client that stops sending mid-body) and a cap on the bytes read while
//! multer looks for the end of a part's header block, which it would
//! otherwise buffer without bound. And [`Tracked`], which lets a refused
//! request's unread body be drained so that the client reads the error
//! instead of a reset connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};

/// Why the body stream stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed while the body was arriving.
    #[error("the connection failed while reading the body: {0}")]
    Transport(String),
    /// No bytes arrived for the idle timeout.
    #[error("no data received for {0:?}")]
    IdleTimeout(Duration),
    /// A part's header block grew past the cap.
    #[error("a part's headers are larger than {0} bytes")]
    HeadersTooLarge(u64),
}

/// Tracks the bytes read while the parser is between parts (reading headers).
pub struct HeaderWatch {
    /// Total body bytes pulled so far.
    read: AtomicU64,
    /// `read` when the parser started looking for the next part.
    since: AtomicU64,
    /// True while the parser is reading a header block.
    armed: AtomicBool,
    /// Most bytes allowed while armed.
    cap: u64,
}

impl HeaderWatch {
    /// A watch allowing `cap` bytes per header block.
    pub fn new(cap: u64) -> Arc<HeaderWatch> {
        Arc::new(HeaderWatch {
            read: AtomicU64::new(0),
            since: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            cap,
        })
    }

    /// The parser is about to read a part's headers.
    pub fn arm(&self) {
        self.since
            .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    /// The parser is reading a part's data, which is streamed, not buffered.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    fn record(&self, n: usize) -> Result<(), BodyError> {
        // Judged on the bytes before this chunk: one chunk may hold a whole
        // small header block and the start of the data after it. The parser
        // asking for more after `cap` bytes means the block is still open, so
        // at most `cap` plus one chunk is ever buffered.
        let before = self.read.fetch_add(n as u64, Ordering::Relaxed);
        let in_headers = before.saturating_sub(self.since.load(Ordering::Relaxed));
        if self.armed.load(Ordering::Relaxed) && in_headers > self.cap {
            return Err(BodyError::HeadersTooLarge(self.cap));
        }
        Ok(())
    }
}

/// Wraps a warp body stream with the idle timeout and the header watch.
pub fn guarded<'a, S, B>(
    body: S,
    watch: Arc<HeaderWatch>,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'a
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'a,
    B: Buf + Send,
{
    let body = Box::pin(body);
    futures_util::stream::unfold(Some(body), move |state| {
        let watch = watch.clone();
        async move {
            let mut body = state?;
            let item = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Err(BodyError::IdleTimeout(idle)),
                Ok(None) => return None,
                Ok(Some(Err(e))) => Err(BodyError::Transport(e.to_string())),
                Ok(Some(Ok(mut buf))) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    watch.record(bytes.len()).map(|()| bytes)
                }
            };
            // After an error the stream ends.
            let next = if item.is_ok() { Some(body) } else { None };
            Some((item, next))
        }
    })
}

/// Most unread body bytes drained after a request is refused. A client
/// that is told no only a little way past a limit still reads the answer;
/// a larger remainder is not worth reading, so the connection is closed.
pub const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
/// Longest time spent draining one refused body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that remembers whether it was ever read and how much of it.
pub struct Tracked<S> {
    inner: S,
    polled: bool,
    read: u64,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Tracked<S> {
        Tracked {
            inner,
            polled: false,
            read: 0,
        }
    }
}

impl<S, B> Stream for Tracked<S>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    type Item = Result<B, warp::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.polled = true;
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(buf))) = &next {
            self.read += buf.remaining() as u64;
        }
        next
    }
}

impl<S, B> Tracked<S>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    /// Reads and discards what is left of a refused request's body, within
    /// [`DRAIN_BYTES`] and [`DRAIN_TIME`], so that HTTP/1.1 can send the
    /// error on a connection the client is still writing to. Nothing is
    /// read when the client asked `Expect: 100-continue` and the body was
    /// never touched (reading it would invite the upload that was refused),
    /// nor when the declared length is already past the cap.
    pub async fn drain(&mut self, expects_continue: bool, content_length: Option<u64>) {
        if expects_continue && !self.polled {
            return;
        }
        let unread = content_length.map(|len| len.saturating_sub(self.read));
        if unread.is_some_and(|left| left > DRAIN_BYTES) {
            return;
        }
        let start = self.read;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while self.read - start <= DRAIN_BYTES {
                match self.next().await {
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        })
        .await;
    }
}
