//! The cleaner: removes from final storage what deleted uploads owned and
//! what failed uploads left there when the first try did not
//! ([`crate::store::cleanup`] records each one with the deletion or the
//! failure). A token the uploader is storing now is left until it is done
//! (it wakes the cleaner then). It tries each again with backoff (one log
//! line a try, the waits doubling from [`BACKOFF`]'s first to its longest)
//! until the store answers, and settles its row. A store that refuses the credentials
//! pauses the whole pass (one line a pass, not one per upload). At start it
//! takes up every removal still recorded. It is a task of the server's own
//! (on `Services::tasks`), woken by the uploader when it records one, and
//! ends when the server stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::Services;
use crate::backoff::Backoff;
use crate::storage::StorageError;

/// Waits between tries of one removal, and between passes the store refused.
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

/// Tries the recorded removal of `token` at once (a deletion does, before
/// it answers); true if it is done. If not, the cleaner is woken to try it
/// with backoff.
pub async fn remove_now(services: &Arc<Services>, token: &str) -> bool {
    let removed = !services.storing.contains(token)
        && matches!(try_removal(services, token).await, Outcome::Removed);
    if !removed {
        wake(services);
    }
    removed
}

/// Failed tries so far, and when to try again.
#[derive(Default)]
struct Retry {
    /// Tries that failed in a row.
    tries: u32,
    /// Not before then.
    next: Option<Instant>,
}

impl Retry {
    fn due(&self) -> bool {
        self.next.is_none_or(|at| at <= Instant::now())
    }

    /// One more failed try: returns the wait before the next.
    fn failed(&mut self) -> Duration {
        self.tries += 1;
        let wait = BACKOFF.before_retry(self.tries);
        self.next = Some(Instant::now() + wait);
        wait
    }
}

/// What one try of one removal came to.
enum Outcome {
    Removed,
    /// Try this one again later; why.
    Failed(String),
    /// The store refuses the credentials: every removal would fail alike.
    Refused(StorageError),
    /// The server is stopping.
    Stop,
}

async fn run(services: Arc<Services>) {
    let mut retries: HashMap<String, Retry> = HashMap::new();
    // Set while the store refuses: the whole pass waits.
    let mut refused = Retry::default();
    loop {
        if refused.due() {
            match pass(&services, &mut retries).await {
                Some(Outcome::Stop) => return,
                Some(Outcome::Refused(e)) => {
                    let wait = refused.failed();
                    warn!(
                        owed = retries.len().max(1),
                        retry_in_secs = wait.as_secs(),
                        error = %e,
                        "the object store refuses the removals owed to it"
                    );
                }
                _ => refused = Retry::default(),
            }
        }
        // Until a retry is due, a new removal is recorded, or the look comes round.
        let next = retries
            .values()
            .chain([&refused])
            .filter_map(|r| r.next)
            .min();
        let wait = next
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

/// Tries every removal that is due; stops early when the store refuses or
/// the server stops.
async fn pass(services: &Arc<Services>, retries: &mut HashMap<String, Retry>) -> Option<Outcome> {
    let store = services.store.clone();
    let pending = match services.blocking(move || store.pending_cleanups()).await {
        Ok(Ok(pending)) => pending,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the removals owed to final storage");
            return None;
        }
        Err(e) => return Some(joined(services, &e)),
    };
    let mut owed = pending.len();
    services.metrics.cleanups_pending(owed);
    let tokens: HashSet<&str> = pending.iter().map(String::as_str).collect();
    retries.retain(|token, _| tokens.contains(token.as_str()));
    for token in pending {
        let retry = retries.entry(token.clone()).or_default();
        if !retry.due() || services.storing.contains(&token) {
            continue;
        }
        match try_removal(services, &token).await {
            Outcome::Removed => {
                owed -= 1;
                services.metrics.cleanups_pending(owed);
                let tries = retries.remove(&token).map_or(0, |r| r.tries) + 1;
                info!(
                    token,
                    tries, "removed an upload's outputs from final storage"
                );
            }
            Outcome::Failed(error) => {
                services.metrics.cleanup_failed();
                let retry = retries.entry(token.clone()).or_default();
                let wait = retry.failed();
                warn!(
                    token,
                    tries = retry.tries,
                    retry_in_secs = wait.as_secs(),
                    error = %error,
                    "cannot remove an upload's outputs from final storage yet"
                );
            }
            stop @ (Outcome::Stop | Outcome::Refused(_)) => return Some(stop),
        }
    }
    None
}

/// Removes what is stored under `token` and settles its row.
async fn try_removal(services: &Arc<Services>, token: &str) -> Outcome {
    let storage = services.storage.clone();
    let t = token.to_string();
    let removed = match services.blocking(move || storage.remove(&t)).await {
        Ok(removed) => removed,
        Err(e) => return joined(services, &e),
    };
    let error = match removed {
        Ok(()) => {
            let store = services.store.clone();
            let t = token.to_string();
            match services.blocking(move || store.cleaned_up(&t)).await {
                Ok(Ok(())) => {
                    services.removals.remove(token);
                    return Outcome::Removed;
                }
                Ok(Err(e)) => format!("removed, but cannot record it: {e}"),
                Err(e) => return joined(services, &e),
            }
        }
        Err(StorageError::Interrupted) => return Outcome::Stop,
        Err(e @ StorageError::Refused { .. }) => return Outcome::Refused(e),
        Err(e) => e.to_string(),
    };
    Outcome::Failed(error)
}

/// A blocking task of the cleaner ended without an answer: the server is
/// stopping, or the task panicked (then the removal is tried again later).
fn joined(services: &Services, e: &tokio::task::JoinError) -> Outcome {
    if services.stop.is_cancelled() {
        return Outcome::Stop;
    }
    error!(error = %e, "a removal from final storage failed unexpectedly");
    Outcome::Failed(e.to_string())
}
