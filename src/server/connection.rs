//! What each connection is watched for: hyper's header-read timeout and the
//! server's graceful stop, both paid per connection instead of per request.
//!
//! hyper arms its timer each time it starts reading a request head. With
//! tokio's timer that is an allocation and an insertion into, then a removal
//! from, the runtime's shared timer wheel for every request: about a twentieth
//! of the cost of a status poll. And hyper_util's graceful watcher locks a
//! mutex shared by every connection each time a connection is polled. Here
//! each connection has one [`Cell`] and one watchdog task that looks at it a
//! few times per timeout and waits for the stop; a request only writes the
//! cell. A timeout fires up to one check interval late.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;
use warp::hyper::rt::{Sleep, Timer};

use crate::api::bounds::millis;

/// No deadline set.
const NONE: u64 = u64::MAX;

/// The deadline of a connection's current request head, whether the server
/// is stopping, and who to wake for each.
struct Cell {
    deadline_ms: AtomicU64,
    waker: AtomicWaker,
    /// Which deadline future set `deadline_ms` (hyper may make the next
    /// before it drops the last).
    owner: AtomicU64,
    next_owner: AtomicU64,
    /// Set by the watchdog once the server stops.
    stopping: AtomicBool,
    /// The connection's task, woken when `stopping` is set.
    connection: AtomicWaker,
}

/// The timer of one connection, handed to hyper.
#[derive(Clone)]
pub struct ConnectionTimer {
    cell: Arc<Cell>,
}

impl ConnectionTimer {
    /// A timer and its watchdog, which checks every `every`, tells the
    /// connection when `stop` turns true, and must be polled (spawned) for as
    /// long as the connection lives.
    pub fn new(
        every: Duration,
        stop: watch::Receiver<bool>,
    ) -> (ConnectionTimer, impl Future<Output = ()> + Send) {
        let cell = Arc::new(Cell {
            deadline_ms: AtomicU64::new(NONE),
            waker: AtomicWaker::new(),
            owner: AtomicU64::new(0),
            next_owner: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            connection: AtomicWaker::new(),
        });
        let watched = cell.clone();
        let watchdog = async move {
            let mut stop = stop;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Already stopping, or stopping later; an error means the server is gone.
            let stopped = stop.wait_for(|&stopping| stopping);
            tokio::pin!(stopped);
            let mut told = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if millis(Instant::now()) >= watched.deadline_ms.load(Ordering::Acquire) {
                            watched.waker.wake();
                        }
                    }
                    _ = &mut stopped, if !told => {
                        told = true;
                        watched.stopping.store(true, Ordering::Release);
                        watched.connection.wake();
                    }
                }
            }
        };
        (ConnectionTimer { cell }, watchdog)
    }

    /// `connection`, closed gracefully once the server stops: the request in
    /// flight is answered, then the connection closes.
    pub fn stoppable<C: GracefulConnection>(&self, connection: C) -> Stoppable<C> {
        Stoppable {
            connection: Box::pin(connection),
            cell: self.cell.clone(),
            closing: false,
        }
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

/// A connection that closes gracefully once its watchdog sees the stop.
pub struct Stoppable<C> {
    connection: Pin<Box<C>>,
    cell: Arc<Cell>,
    /// The graceful close has begun.
    closing: bool,
}

impl<C: GracefulConnection> Future for Stoppable<C> {
    type Output = Result<(), C::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.closing {
            // Registered before `stopping` is read, so a stop set between
            // the two still wakes this task.
            this.cell.connection.register(cx.waker());
            if this.cell.stopping.load(Ordering::Acquire) {
                this.closing = true;
                this.connection.as_mut().graceful_shutdown();
            }
        }
        this.connection.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_fires_through_the_watchdog_and_a_dropped_one_does_not() {
        let (_stop, stopped) = watch::channel(false);
        let (timer, watchdog) = ConnectionTimer::new(Duration::from_millis(20), stopped);
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
