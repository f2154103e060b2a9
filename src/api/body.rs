//! Guards on the raw request body before multer sees it: an idle timeout
//! (a client that stops sending mid-body) and a cap on the bytes read while
//! multer looks for the end of a part's header block, which it would
//! otherwise buffer without bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
pub fn guarded<S, B>(
    body: S,
    watch: Arc<HeaderWatch>,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
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
