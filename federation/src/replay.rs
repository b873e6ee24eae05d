//! The replay cache: a signed server-to-server request is taken once. A request is known by
//! its sender, `webhook-id` and `webhook-timestamp`; it is remembered from when it is taken
//! until its timestamp leaves the five-minute window (after which the signature check
//! refuses it as stale). A request that was refused after its signature checked (a 4xx or a
//! 5xx of its own) is forgotten again, so its sender may retry it as it was.
//!
//! The cache holds at most a fixed number of requests. When it is full the oldest is
//! dropped, and every request no newer than the dropped one is refused from then on (too
//! old to be told apart from a replay): at the bound, the window shrinks instead of the
//! memory growing.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use kite_protocol::provider::DEFAULT_TOLERANCE_SECS;

/// Requests remembered at most (about 40 bytes each).
pub const REPLAY_CAPACITY: usize = 100_000;

/// Why a signed request was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replayed {
    /// This request was taken already.
    #[error("this signed request was taken already (same sender, webhook-id and timestamp)")]
    Seen,
    /// The cache is full and the request is older than what it still remembers.
    #[error("the signed request is too old to be told apart from a replay; sign it again")]
    TooOld,
}

#[derive(Debug)]
struct Inner {
    /// Request key → its timestamp.
    seen: HashMap<u64, i64>,
    /// Keys in the order they were taken, with their timestamps.
    order: VecDeque<(u64, i64)>,
    /// Requests with a timestamp at or below this are refused (the cache dropped one).
    floor: i64,
}

/// Signed requests taken recently, bounded.
#[derive(Debug)]
pub struct ReplayGuard {
    inner: Mutex<Inner>,
    hasher: RandomState,
    capacity: usize,
}

impl ReplayGuard {
    /// A cache remembering at most `capacity` requests.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
                floor: i64::MIN,
            }),
            hasher: RandomState::new(),
            capacity: capacity.max(1),
        })
    }

    /// Requests remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.seen.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the request `id` signed by `server` at `ts`, unless it was taken already; the
    /// claim is kept once the request succeeds ([`ReplayClaim::keep`]) and forgotten if it
    /// is dropped unkept.
    pub fn claim(
        self: &Arc<Self>,
        server: &str,
        id: &str,
        ts: i64,
        now: i64,
    ) -> Result<ReplayClaim, Replayed> {
        let key = self.hasher.hash_one((server, id, ts));
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what the timestamp window refuses by itself.
        while let Some(&(k, t)) = g.order.front() {
            if t + DEFAULT_TOLERANCE_SECS >= now {
                break;
            }
            g.order.pop_front();
            if g.seen.get(&k) == Some(&t) {
                g.seen.remove(&k);
            }
        }
        if ts <= g.floor {
            return Err(Replayed::TooOld);
        }
        if g.seen.contains_key(&key) {
            return Err(Replayed::Seen);
        }
        while g.seen.len() >= self.capacity {
            let Some((k, t)) = g.order.pop_front() else {
                break;
            };
            if g.seen.get(&k) == Some(&t) {
                g.seen.remove(&k);
                g.floor = g.floor.max(t);
            }
        }
        if ts <= g.floor {
            return Err(Replayed::TooOld);
        }
        g.seen.insert(key, ts);
        g.order.push_back((key, ts));
        // Claims given back leave their place in the order behind: compact it now and then.
        if g.order.len() > 2 * self.capacity {
            let Inner { seen, order, .. } = &mut *g;
            order.retain(|(k, t)| seen.get(k) == Some(t));
        }
        Ok(ReplayClaim {
            guard: self.clone(),
            key,
            ts,
            keep: false,
        })
    }
}

/// A request taken by [`ReplayGuard::claim`]: kept when its handling succeeded, forgotten
/// when dropped without [`ReplayClaim::keep`].
#[derive(Debug)]
pub struct ReplayClaim {
    guard: Arc<ReplayGuard>,
    key: u64,
    ts: i64,
    keep: bool,
}

impl ReplayClaim {
    /// The request was taken: a replay of it is refused until its timestamp expires.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ReplayClaim {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let mut g = self.guard.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.seen.get(&self.key) == Some(&self.ts) {
            g.seen.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_and_a_refused_one_may_be_retried() {
        let g = ReplayGuard::new(10);
        let now = 1_000;
        g.claim("a", "msg_1", now, now).unwrap().keep();
        assert_eq!(g.claim("a", "msg_1", now, now).err(), Some(Replayed::Seen));
        // Another sender, id or timestamp is another request.
        g.claim("b", "msg_1", now, now).unwrap().keep();
        g.claim("a", "msg_2", now, now).unwrap().keep();
        g.claim("a", "msg_1", now + 1, now).unwrap().keep();
        // Dropped unkept (the request failed): forgotten.
        drop(g.claim("a", "msg_3", now, now).unwrap());
        g.claim("a", "msg_3", now, now).unwrap().keep();
        // Past the window it is forgotten (the signature check refuses it as stale anyway).
        assert_eq!(g.len(), 5);
        g.claim("c", "later", now + 400, now + 400).unwrap().keep();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn at_its_bound_the_window_shrinks_instead_of_the_memory_growing() {
        let g = ReplayGuard::new(3);
        for (i, ts) in [(1, 100), (2, 101), (3, 102), (4, 103)] {
            g.claim("a", &format!("m{i}"), ts, 103).unwrap().keep();
        }
        assert_eq!(g.len(), 3);
        // m1 was dropped: it, and anything as old, is refused rather than taken again.
        assert_eq!(g.claim("a", "m1", 100, 103).err(), Some(Replayed::TooOld));
        assert_eq!(g.claim("a", "m9", 100, 103).err(), Some(Replayed::TooOld));
        g.claim("a", "m5", 104, 104).unwrap().keep();
        assert_eq!(g.len(), 3);
        // Claims given back do not grow the order without bound.
        for i in 0..100 {
            drop(g.claim("b", &format!("x{i}"), 105, 105).unwrap());
        }
        let order = g.inner.lock().unwrap().order.len();
        assert!(order <= 2 * 3 + 1, "{order}");
    }
}
