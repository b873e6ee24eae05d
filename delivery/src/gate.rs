//! A peer's own delivery policy as delivery applies it: its retry schedule and request
//! timeout over the instance's, and the gate every request to it passes (the most requests
//! in flight, and the outbound rate as a token bucket). Both are per delivery process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kite_api::peers::DeliveryPolicy;
use kite_wire::ids::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{DeliveryConfig, RetryPolicy};

/// The instance's retry schedule with what the peer's policy sets in its place.
pub(crate) fn retry_policy(cfg: &DeliveryConfig, p: &DeliveryPolicy) -> RetryPolicy {
    let ms = |v: Option<u32>, d: Duration| v.map_or(d, |ms| Duration::from_millis(ms.into()));
    let base = ms(p.retry_base_ms, cfg.retry.base);
    RetryPolicy {
        base,
        max_delay: ms(p.retry_max_delay_ms, cfg.retry.max_delay).max(base),
        max_attempts: p.max_attempts.unwrap_or(cfg.retry.max_attempts).max(1),
    }
}

/// The request timeout: the peer's, else the instance's.
pub(crate) fn timeout(cfg: &DeliveryConfig, p: &DeliveryPolicy) -> Duration {
    p.timeout_ms
        .map_or(cfg.request_timeout, |ms| Duration::from_millis(ms.into()))
}

/// Whether the peer's deliveries are claimed from Postgres a few at a time rather than
/// queued (see `claimed`): it is rate-limited, so rows must not wait in a queue or a lane
/// long enough for the sweeper to think them lost.
pub(crate) fn rate_limited(p: &DeliveryPolicy) -> bool {
    p.rate_per_sec.is_some()
}

/// What the requests to one peer pass through.
pub(crate) struct Gate {
    /// The limits it was made for (a changed policy makes a new gate).
    made_for: (Option<u32>, Option<u64>, Option<u32>),
    in_flight: Option<Arc<Semaphore>>,
    rate: Option<DefaultDirectRateLimiter>,
}

/// A request's way through a gate: held until the request is answered.
pub(crate) struct Pass {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Gate {
    fn new(p: &DeliveryPolicy) -> Self {
        let rate = p.rate_per_sec.filter(|r| *r > 0.0).map(|r| {
            let period = Duration::from_secs_f64(1.0 / r);
            let burst =
                NonZeroU32::new(p.rate_burst.unwrap_or(1).max(1)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        Self {
            made_for: key(p),
            in_flight: p
                .max_in_flight
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            rate,
        }
    }

    /// Waits until a request of `events` events may go: a place among the requests in
    /// flight, then the rate's tokens (one an event, at most the burst at once).
    pub(crate) async fn enter(&self, events: usize) -> Pass {
        let permit = match &self.in_flight {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(rate) = &self.rate {
            let mut left = u32::try_from(events.max(1)).unwrap_or(u32::MAX);
            while left > 0 {
                rate.until_ready().await;
                left -= 1;
            }
        }
        Pass { _permit: permit }
    }
}

fn key(p: &DeliveryPolicy) -> (Option<u32>, Option<u64>, Option<u32>) {
    (
        p.max_in_flight,
        p.rate_per_sec.map(f64::to_bits),
        p.rate_burst,
    )
}

/// The gates of the peers with limits, by peer.
#[derive(Default)]
pub(crate) struct Gates(Mutex<HashMap<PeerId, Arc<Gate>>>);

impl Gates {
    /// The gate of a peer with this policy (None: no limits, nothing to pass).
    pub(crate) fn of(&self, peer: PeerId, p: &DeliveryPolicy) -> Option<Arc<Gate>> {
        let mut m = self.0.lock().ok()?;
        if p.max_in_flight.is_none() && p.rate_per_sec.is_none() {
            m.remove(&peer);
            return None;
        }
        if let Some(g) = m.get(&peer).filter(|g| g.made_for == key(p)) {
            return Some(g.clone());
        }
        let g = Arc::new(Gate::new(p));
        m.insert(peer, g.clone());
        Some(g)
    }
}
