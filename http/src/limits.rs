//! Token-bucket rate limits: per team on ingest, per trusted sender on federation inbound.
//! Buckets live in each ingress process.

use kite_wire::Code;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kite_wire::ApiError;

use crate::ApiErr;

/// A rate: sustained events per second and a burst.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Sustained requests a second (0: unlimited).
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// Keyed token buckets for one kind of caller.
pub(crate) struct Limiter {
    inner: Option<DefaultKeyedRateLimiter<String>>,
    burst: Option<NonZeroU32>,
    clock: DefaultClock,
    what: &'static str,
}

impl Limiter {
    pub(crate) fn new(rate: Rate, what: &'static str) -> Self {
        let quota = NonZeroU32::new(rate.per_second).map(|per| {
            let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(per);
            Quota::per_second(per).allow_burst(burst)
        });
        Self {
            inner: quota.map(RateLimiter::keyed),
            burst: quota.map(|q| q.burst_size()),
            clock: DefaultClock::default(),
            what,
        }
    }

    /// Drops the buckets of keys that are full again (callers gone quiet), so the map holds
    /// only keys seen lately.
    pub(crate) fn forget_quiet(&self) {
        if let Some(l) = &self.inner {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Takes a token for `key`, or answers 429 `rate_limited` with `Retry-After`.
    pub(crate) fn check(&self, key: &str) -> Result<(), ApiErr> {
        self.check_n(key, 1)
    }

    /// The most tokens one request may take at once (the burst); `None` when unlimited.
    pub(crate) fn burst(&self) -> Option<usize> {
        self.burst.map(|b| b.get() as usize)
    }

    /// Takes `n` tokens for `key` at once (a batch of `n` events), or answers 429
    /// `rate_limited` with `Retry-After`; nothing is taken when it answers 429.
    pub(crate) fn check_n(&self, key: &str, n: usize) -> Result<(), ApiErr> {
        let Some(l) = &self.inner else {
            return Ok(());
        };
        let limited = |wait: Duration| {
            let mut e = ApiError::new(
                Code::RateLimited,
                format!("{} rate limit exceeded; retry later", self.what),
            );
            e.retry_after = Some(wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64);
            ApiErr(e)
        };
        let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match l.check_key_n(&key.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(limited(not_until.wait_time_from(self.clock.now()))),
            // More than the burst at once never fits: a second is as good a hint as any.
            Err(_) => Err(limited(Duration::from_secs(1))),
        }
    }
}
