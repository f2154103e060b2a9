//! hyper's header-read timeout, paid per connection instead of per request.
//!
//! hyper arms its timer each time it starts reading a request head. With
//! tokio's timer that is an allocation and an insertion into, then a removal
//! from, the runtime's shared timer wheel for every request: about a twentieth
//! of the cost of a status poll. Here each connection has one deadline cell
//! and one watchdog task that looks at it a few times per timeout; a request
//! only writes the cell. A timeout fires up to one check interval late.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use warp::hyper::rt::{Sleep, Timer};

/// No deadline set.
const NONE: u64 = u64::MAX;

/// Milliseconds since the first use, a clock cheap to store atomically.
fn millis(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(start).as_millis()).unwrap_or(NONE - 1)
}

/// The deadline of a connection's current request head, and who to wake.
struct Cell {
    deadline_ms: AtomicU64,
    waker: AtomicWaker,
    /// Which deadline future set `deadline_ms` (hyper may make the next
    /// before it drops the last).
    owner: AtomicU64,
    next_owner: AtomicU64,
}

/// The timer of one connection, handed to hyper.
#[derive(Clone)]
pub struct ConnectionTimer {
    cell: Arc<Cell>,
}

impl ConnectionTimer {
    /// A timer and its watchdog, which checks every `every` and must be
    /// polled (spawned) for as long as the connection lives.
    pub fn new(every: Duration) -> (ConnectionTimer, impl Future<Output = ()> + Send) {
        let cell = Arc::new(Cell {
            deadline_ms: AtomicU64::new(NONE),
            waker: AtomicWaker::new(),
            owner: AtomicU64::new(0),
            next_owner: AtomicU64::new(1),
        });
        let watched = cell.clone();
        let watchdog = async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if millis(Instant::now()) >= watched.deadline_ms.load(Ordering::Acquire) {
                    watched.waker.wake();
                }
            }
        };
        (ConnectionTimer { cell }, watchdog)
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline_ms = millis(deadline);
        let id = self.cell.next_owner.fetch_add(1, Ordering::Relaxed);
        self.cell.owner.store(id, Ordering::Relaxed);
        self.cell.deadline_ms.store(deadline_ms, Ordering::Release);
        Box::pin(HeadDeadline {
            cell: self.cell.clone(),
            deadline_ms,
            id,
        })
    }
}

/// Resolves once its deadline has passed (seen by a poll, or by the watchdog).
struct HeadDeadline {
    cell: Arc<Cell>,
    deadline_ms: u64,
    id: u64,
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if millis(Instant::now()) >= self.deadline_ms {
            return Poll::Ready(());
        }
        self.cell.waker.register(cx.waker());
        Poll::Pending
    }
}

impl Sleep for HeadDeadline {}

impl Drop for HeadDeadline {
    fn drop(&mut self) {
        // The head arrived: the watchdog has nothing to watch until the next
        // one (unless a newer deadline has taken over the cell).
        if self.cell.owner.load(Ordering::Relaxed) == self.id {
            self.cell.deadline_ms.store(NONE, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_fires_through_the_watchdog_and_a_dropped_one_does_not() {
        let (timer, watchdog) = ConnectionTimer::new(Duration::from_millis(20));
        let watchdog = tokio::spawn(watchdog);
        let started = Instant::now();
        timer.sleep(Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        let sleep = timer.sleep(Duration::from_secs(3600));
        assert_ne!(timer.cell.deadline_ms.load(Ordering::Acquire), NONE);
        drop(sleep);
        assert_eq!(timer.cell.deadline_ms.load(Ordering::Acquire), NONE);
        // A newer deadline outlives the drop of an older one.
        let older = timer.sleep(Duration::from_secs(3600));
        let newer = timer.sleep(Duration::from_secs(3600));
        drop(older);
        assert_ne!(timer.cell.deadline_ms.load(Ordering::Acquire), NONE);
        drop(newer);
        watchdog.abort();
    }
}
