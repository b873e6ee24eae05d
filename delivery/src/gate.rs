//! A peer's own delivery policy as delivery applies it: its retry schedule and request
//! timeout over the instance's, the gate every request to it passes (the most requests in
//! flight), and its outbound rate (a token bucket the claiming worker takes from before it
//! claims rows, so no claimed row waits for the rate). Limits are per delivery process.

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
/// queued (`crate::claimed`): it is ordered; or rate-limited, so its rows must not wait in a
/// queue or a lane long enough for the sweeper to take them for lost; or it has a retry
/// schedule of its own, whose delays must not go through the instance's shared retry queues
/// (a message there expires only at the queue's head, so one peer's long delays would hold
/// every other peer's retries behind them).
pub(crate) fn claimed(p: &DeliveryPolicy, ordered: bool) -> bool {
    ordered
        || p.rate_per_sec.is_some()
        || p.retry_base_ms.is_some()
        || p.retry_max_delay_ms.is_some()
}

/// An outbound rate of `per_sec` as a token bucket of `burst` (default 1); None for a rate
/// that is not positive.
pub(crate) fn rate_limiter(per_sec: f64, burst: Option<u32>) -> Option<DefaultDirectRateLimiter> {
    (per_sec > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / per_sec);
        let burst = NonZeroU32::new(burst.unwrap_or(1).max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        RateLimiter::direct(quota)
    })
}

/// The most requests to one peer in flight at once, per process: its policy's
/// `max_in_flight`, else the instance's ([`DeliveryConfig::max_in_flight`]).
pub(crate) struct Gate {
    /// The limit it was made for (a changed policy makes a new gate).
    made_for: u32,
    in_flight: Arc<Semaphore>,
}

/// A request's place among its peer's requests in flight, held until it is answered.
pub(crate) struct Pass {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Gate {
    /// Waits for a place among the requests in flight.
    pub(crate) async fn enter(&self) -> Pass {
        Pass {
            _permit: self.in_flight.clone().acquire_owned().await.ok(),
        }
    }
}

/// The gates of the peers, by peer.
#[derive(Default)]
pub(crate) struct Gates(Mutex<HashMap<PeerId, Arc<Gate>>>);

impl Gates {
    /// The gate of a peer with this policy, `most` in flight unless the policy says (a
    /// gate left by another limit is replaced); None only if the lock was poisoned.
    pub(crate) fn of(&self, peer: PeerId, p: &DeliveryPolicy, most: u32) -> Option<Arc<Gate>> {
        let n = p.max_in_flight.unwrap_or(most);
        let mut m = self.0.lock().ok()?;
        if let Some(g) = m.get(&peer).filter(|g| g.made_for == n) {
            return Some(g.clone());
        }
        let g = Arc::new(Gate {
            made_for: n,
            in_flight: Arc::new(Semaphore::new(n.max(1) as usize)),
        });
        m.insert(peer, g.clone());
        Some(g)
    }

    /// Drops the gates of peers not in `live` (deleted since) that no request holds: a
    /// request of a deleted peer still draining keeps its gate, so a second one is not made
    /// beside it.
    pub(crate) fn keep_only(&self, live: &std::collections::HashSet<PeerId>) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|id, g| live.contains(id) || Arc::strong_count(g) > 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_is_kept_while_its_peer_lives_and_made_again_for_a_new_limit() {
        let gates = Gates::default();
        let (a, b) = (PeerId(uuid::Uuid::new_v4()), PeerId(uuid::Uuid::new_v4()));
        let p = DeliveryPolicy::default();
        let of = |peer, most| gates.of(peer, &p, most).expect("gate");
        let first = of(a, 4);
        assert!(Arc::ptr_eq(&first, &of(a, 4)), "the same gate");
        assert!(!Arc::ptr_eq(&first, &of(a, 2)), "a new limit, a new gate");
        let held = of(b, 4);
        let live = [a].into_iter().collect();
        gates.keep_only(&live);
        assert!(
            Arc::ptr_eq(&held, &of(b, 4)),
            "kept while a request holds it"
        );
        drop(held);
        gates.keep_only(&live);
        let kept: Vec<PeerId> = gates.0.lock().expect("lock").keys().copied().collect();
        assert_eq!(kept, [a], "the deleted peer's gate is gone");
    }
}
