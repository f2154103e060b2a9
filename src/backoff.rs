//! Exponential backoff: the one rule for how long to wait before trying
//! something again (webhook deliveries, object-store requests, restarts of a
//! crashed actor).

use std::time::Duration;

/// Waits that start at `first` and double with each retry, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first).
    pub fn before_retry(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(31);
        self.first.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5)
            .map(|n| backoff.before_retry(n).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(backoff.before_retry(0), Duration::from_millis(100));
        assert_eq!(backoff.before_retry(u32::MAX), Duration::from_millis(500));
    }
}
