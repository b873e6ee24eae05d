//! Token-bucket rate limits: per team on ingest, per trusted sender on federation inbound.
//! Buckets live in each ingress process.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kite_protocol::ApiError;

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
    clock: DefaultClock,
    what: &'static str,
}

impl Limiter {
    pub(crate) fn new(rate: Rate, what: &'static str) -> Self {
        let inner = NonZeroU32::new(rate.per_second).map(|per| {
            let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(per);
            RateLimiter::keyed(Quota::per_second(per).allow_burst(burst))
        });
        Self {
            inner,
            clock: DefaultClock::default(),
            what,
        }
    }

    /// Takes a token for `key`, or answers 429 `rate_limited` with `Retry-After`.
    pub(crate) fn check(&self, key: &str) -> Result<(), ApiErr> {
        let Some(l) = &self.inner else {
            return Ok(());
        };
        l.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut e = ApiError::new(
                429,
                "rate_limited",
                format!("{} rate limit exceeded; retry later", self.what),
            );
            e.retry_after = Some(wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64);
            ApiErr(e)
        })
    }
}
