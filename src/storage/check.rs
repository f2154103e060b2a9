//! The outcome of [`FinalStorage::check`], shared by the start-up check and
//! `/readyz`: kept for [`CHECK_PERIOD`], so that probes, however many and
//! however often, cost the store at most one request per period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::FinalStorage;

/// How long one outcome of the storage check stands before the next probe checks again.
pub const CHECK_PERIOD: Duration = Duration::from_secs(5);

/// One outcome, with when it was found.
type Checked = (Instant, Result<(), String>);

/// The last storage check, and the one in progress.
#[derive(Clone)]
pub struct StorageCheck {
    /// The backend checked.
    storage: Arc<dyn FinalStorage>,
    /// Held for the whole of a check, so that concurrent probes wait for it rather than repeat it.
    last: Arc<Mutex<Option<Checked>>>,
    /// How long an outcome stands.
    period: Duration,
}

impl StorageCheck {
    /// No check made yet: the first call makes one.
    pub fn new(storage: Arc<dyn FinalStorage>, period: Duration) -> StorageCheck {
        StorageCheck {
            storage,
            last: Arc::new(Mutex::new(None)),
            period,
        }
    }

    /// The last outcome while it stands, else a new one (`Err` says why the
    /// storage cannot take work). The check runs in a task of its own: a
    /// caller that stops waiting (a probe's timeout) does not cut it short,
    /// and the next caller waits for it instead of starting another.
    pub async fn outcome(&self) -> Result<(), String> {
        let this = self.clone();
        let check = tokio::spawn(async move {
            let mut last = this.last.lock().await;
            if let Some((at, outcome)) = last.as_ref() {
                if at.elapsed() < this.period {
                    return outcome.clone();
                }
            }
            let storage = this.storage.clone();
            // The trait's calls block (a request to the store).
            let outcome = match tokio::task::spawn_blocking(move || storage.check()).await {
                Ok(checked) => checked.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the check did not finish: {e}")),
            };
            *last = Some((Instant::now(), outcome.clone()));
            outcome
        });
        check
            .await
            .unwrap_or_else(|e| Err(format!("the check did not finish: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{OutputFile, StorageError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its checks; each takes a moment, as a request would.
    struct Counted(AtomicUsize);

    impl FinalStorage for Counted {
        fn put(&self, _: &str, _: &[OutputFile]) -> Result<(), StorageError> {
            unreachable!()
        }
        fn contains(&self, _: &str) -> Result<bool, StorageError> {
            unreachable!()
        }
        fn remove(&self, _: &str) -> Result<(), StorageError> {
            unreachable!()
        }
        fn url(&self, _: &str, _: &str, _: &str) -> String {
            unreachable!()
        }
        fn check(&self) -> Result<(), StorageError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            Err(StorageError::Unsupported("down"))
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_check_per_period() {
        let storage = Arc::new(Counted(AtomicUsize::new(0)));
        let check = StorageCheck::new(storage.clone(), Duration::from_millis(300));
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let check = check.clone();
                tokio::spawn(async move { check.outcome().await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err("storage error: down".into()));
        }
        assert_eq!(storage.0.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        check.outcome().await.unwrap_err();
        assert_eq!(storage.0.load(Ordering::SeqCst), 2);
    }
}
