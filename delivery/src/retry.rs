//! Backoff between delivery attempts.

use std::time::Duration;

use rand::Rng;

/// Backoff settings: `base`, doubling, capped at `max_delay`, `max_attempts` failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub base: Duration,
    /// Cap on any delay.
    pub max_delay: Duration,
    /// Failed attempts after which a row is dead.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`, before jitter: base·2^(failures−1), capped.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    /// The delay with jitter: between 80 % and 100 % of [`RetryPolicy::delay`].
    pub fn jittered(&self, failures: u32) -> Duration {
        let d = self.delay(failures);
        d.mul_f64(rand::rng().random_range(0.8..=1.0))
    }

    /// Number of retry tier queues needed.
    pub fn tiers(&self) -> u32 {
        self.max_attempts.saturating_sub(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=10).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        for n in 1..=10 {
            let j = p.jittered(n);
            assert!(j <= p.delay(n) && j >= p.delay(n).mul_f64(0.79));
        }
        assert_eq!(p.tiers(), 9);
    }
}
