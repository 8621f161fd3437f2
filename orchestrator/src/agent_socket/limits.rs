//! The limits of one connection: the text message allowance.

use std::time::Instant;

/// Sustained text messages per second an agent may send.
const RATE_PER_SEC: f64 = 50.0;
/// Text messages an agent may send in one burst.
const RATE_BURST: f64 = 200.0;

/// Allowance of text messages: [`RATE_BURST`] at once, [`RATE_PER_SEC`] sustained.
pub(super) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            tokens: RATE_BURST,
            last: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(RATE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        assert!((0..200).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        let t1 = t0 + Duration::from_millis(100);
        assert!((0..5).all(|_| b.take(t1)));
        assert!(!b.take(t1));
    }
}
