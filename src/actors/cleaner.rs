//! The cleaner: removes from final storage what failed uploads left there.
//! Each removal was recorded with the failure ([`crate::store::cleanup`]);
//! the cleaner tries it, and on failure again with backoff (one log line a
//! try, the waits doubling from [`BACKOFF`]'s first to its longest), until
//! the store answers. At start it takes up every removal still recorded. It
//! is a task of the server's own (on `Services::tasks`), woken by the
//! uploader when it records one, and ends when the server stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Services;
use crate::backoff::Backoff;
use crate::storage::StorageError;

/// Waits between tries of one removal.
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// How often the recorded removals are read again when nothing wakes the cleaner.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// Starts the cleaner.
pub fn start(services: &Arc<Services>) {
    let services = services.clone();
    services.tasks.clone().spawn(run(services));
}

/// Tells the cleaner a removal was recorded.
pub fn wake(services: &Services) {
    services.cleanups.notify_one();
}

/// One removal's failed tries so far and when to try again.
struct Retry {
    tries: u32,
    next: Instant,
}

async fn run(services: Arc<Services>) {
    let mut retries: HashMap<String, Retry> = HashMap::new();
    loop {
        let pending = {
            let store = services.store.clone();
            services.blocking(move || store.pending_cleanups()).await
        };
        let pending = match pending {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the removals owed to final storage");
                Vec::new()
            }
            Err(_) => return,
        };
        let mut owed = pending.len();
        services.metrics.cleanups_pending(owed);
        retries.retain(|token, _| pending.contains(token));
        for token in pending {
            if services.stop.is_cancelled() {
                return;
            }
            if retries.get(&token).is_some_and(|r| r.next > Instant::now()) {
                continue;
            }
            let storage = services.storage.clone();
            let t = token.clone();
            let removed = match services.blocking(move || storage.remove(&t)).await {
                Ok(removed) => removed,
                Err(_) => return,
            };
            match removed {
                Ok(()) => {
                    let store = services.store.clone();
                    let t = token.clone();
                    match services.blocking(move || store.cleaned_up(&t)).await {
                        Ok(Ok(())) => {
                            owed -= 1;
                            services.metrics.cleanups_pending(owed);
                            let tries = retries.remove(&token).map_or(0, |r| r.tries) + 1;
                            info!(
                                token,
                                tries, "removed a failed upload's outputs from final storage"
                            );
                        }
                        Ok(Err(e)) => warn!(token, error = %e, "removed, but cannot record it"),
                        Err(_) => return,
                    }
                }
                Err(StorageError::Interrupted) => return,
                Err(e) => {
                    services.metrics.cleanup_failed();
                    let retry = retries.entry(token.clone()).or_insert(Retry {
                        tries: 0,
                        next: Instant::now(),
                    });
                    retry.tries += 1;
                    let wait = BACKOFF.before_retry(retry.tries);
                    retry.next = Instant::now() + wait;
                    warn!(
                        token,
                        tries = retry.tries,
                        retry_in_secs = wait.as_secs(),
                        error = %e,
                        "cannot remove a failed upload's outputs from final storage yet"
                    );
                }
            }
        }
        // Until the next retry is due, a new removal is recorded, or the look comes round.
        let next_retry = retries.values().map(|r| r.next).min();
        let wait = next_retry
            .map_or(LOOK_EVERY, |at| {
                at.saturating_duration_since(Instant::now())
            })
            .min(LOOK_EVERY);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = services.cleanups.notified() => {}
            () = services.stop.cancelled() => return,
        }
    }
}
