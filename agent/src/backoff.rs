//! Reconnect pacing: exponential backoff (1, 2, 4 … capped at 30 s) with
//! ±20 % jitter, reset after a connection that was accepted and stayed up.

use std::time::Duration;

/// The knobs of [`Backoff`]. [`BackoffPolicy::default`] is the product's
/// schedule; tests inject a faster one through [`crate::RunSettings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The delay before the second attempt.
    pub initial: Duration,
    /// No delay (before jitter) exceeds this.
    pub max: Duration,
    /// Relative jitter: each delay is scaled by a uniform factor in `1 ± jitter`.
    pub jitter: f64,
    /// A connection accepted by the orchestrator that stayed up this long
    /// resets the schedule to `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Where the reconnect schedule stands. Owned by the run loop only.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Failed attempts since the last reset.
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// A backoff with a seeded generator, for reproducible tests.
    pub fn with_rng(policy: BackoffPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy,
            failures: 0,
            rng,
        }
    }

    /// The delay before the next attempt without jitter: `initial * 2^failures`,
    /// capped at `max`.
    pub fn base_delay(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// Record a failed (or ended) attempt and return how long to wait before the next.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base_delay();
        self.failures = self.failures.saturating_add(1);
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (self.rng.f64() * 2.0 - 1.0);
        base.mul_f64(factor)
    }

    /// Report how a connection ended. `accepted_for` is how long it stayed up
    /// after `worker.accepted` (`None` if it never got that far); a long
    /// enough one starts the schedule over.
    pub fn connection_ended(&mut self, accepted_for: Option<Duration>) {
        if accepted_for.is_some_and(|up| up >= self.policy.reset_after) {
            self.reset();
        }
    }

    /// Start the schedule over at `initial`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        }
    }

    #[test]
    fn doubles_from_one_second_and_caps_at_thirty() {
        let mut b = Backoff::new(no_jitter());
        let seq: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let want: Vec<Duration> = [1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec();
        assert_eq!(seq, want);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(no_jitter());
        for _ in 0..10_000 {
            assert!(b.next_delay() <= secs(30));
        }
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut b = Backoff::with_rng(BackoffPolicy::default(), fastrand::Rng::with_seed(7));
        let mut seen_spread = false;
        for _ in 0..200 {
            let base = b.base_delay();
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{d:?} vs {base:?}"
            );
            seen_spread |= d != base;
        }
        assert!(seen_spread, "jitter never moved a delay");
    }

    #[test]
    fn a_long_accepted_connection_resets_the_schedule() {
        let mut b = Backoff::new(no_jitter());
        for _ in 0..4 {
            b.next_delay();
        }
        assert_eq!(b.base_delay(), secs(16));
        b.connection_ended(Some(secs(30)));
        assert_eq!(b.next_delay(), secs(1));
        assert_eq!(b.next_delay(), secs(2));
    }

    #[test]
    fn short_or_refused_connections_do_not_reset() {
        let mut b = Backoff::new(no_jitter());
        b.next_delay();
        b.next_delay();
        b.connection_ended(Some(secs(29)));
        b.connection_ended(None);
        assert_eq!(b.next_delay(), secs(4));
    }

    #[test]
    fn a_custom_policy_scales_the_whole_schedule() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            jitter: 0.0,
            reset_after: Duration::from_millis(100),
        });
        let seq: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![10, 20, 40, 40]);
    }
}
