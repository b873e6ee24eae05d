//! The replay cache: a signed server-to-server request is taken once. A request is known by
//! its sender, `webhook-id` and `webhook-timestamp`; it is remembered from when it is taken
//! until its timestamp leaves the five-minute window (after which the signature check
//! refuses it as stale). A request that was refused after its signature checked (a 4xx or a
//! 5xx of its own) is forgotten again, so its sender may retry it as it was.
//!
//! Each sender has a cache of its own, of at most [`REPLAY_PER_SENDER`] requests (only
//! verified peers reach it, so there are as many as the instance has peers). When one is
//! full its oldest request is dropped, and every request of that sender no newer than the
//! dropped one is refused from then on (too old to be told apart from a replay): at the
//! bound, that sender's window shrinks instead of the memory growing, and a sender that
//! floods it (with timestamps in the future, say) shrinks only its own.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use kite_wire::provider::DEFAULT_TOLERANCE_SECS;

/// Requests of one sender remembered at most (about 40 bytes each): more than five seconds
/// of one request an event at 10,000 events a second.
pub const REPLAY_PER_SENDER: usize = 50_000;

/// Why a signed request was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replayed {
    /// This request was taken already.
    #[error("this signed request was taken already (same sender, webhook-id and timestamp)")]
    Seen,
    /// The sender's cache is full and the request is older than what it still remembers.
    #[error("the signed request is too old to be told apart from a replay; sign it again")]
    TooOld,
}

/// One sender's requests.
#[derive(Debug)]
struct Sender {
    /// Request key → its timestamp.
    seen: HashMap<u64, i64>,
    /// Keys in the order they were taken, with their timestamps.
    order: VecDeque<(u64, i64)>,
    /// Requests with a timestamp at or below this are refused (the cache dropped one).
    floor: i64,
}

impl Sender {
    fn new() -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            floor: i64::MIN,
        }
    }

    /// Forgets what the timestamp window refuses by itself.
    fn expire(&mut self, now: i64) {
        while let Some(&(k, t)) = self.order.front() {
            if t + DEFAULT_TOLERANCE_SECS >= now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
    }
}

/// Signed requests taken recently, bounded per sender.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: Mutex<HashMap<String, Sender>>,
    /// Requests remembered, of every sender (kept in step under the lock).
    total: std::sync::atomic::AtomicUsize,
    hasher: RandomState,
    per_sender: usize,
}

impl ReplayGuard {
    /// A cache remembering at most `per_sender` requests of each sender.
    pub fn new(per_sender: usize) -> Arc<Self> {
        Arc::new(Self {
            senders: Mutex::new(HashMap::new()),
            total: std::sync::atomic::AtomicUsize::new(0),
            hasher: RandomState::new(),
            per_sender: per_sender.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sender>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests remembered now, of every sender.
    pub fn len(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, senders: &HashMap<String, Sender>) {
        let n = senders.values().map(|s| s.seen.len()).sum();
        self.total.store(n, std::sync::atomic::Ordering::Relaxed);
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
        let key = self.hasher.hash_one((id, ts));
        let mut senders = self.lock();
        // Senders with nothing left in their window are forgotten whole.
        if senders.len() > 64 {
            senders.retain(|_, s| {
                s.expire(now);
                !s.seen.is_empty() || s.floor >= now - DEFAULT_TOLERANCE_SECS
            });
        }
        let s = senders
            .entry(server.to_string())
            .or_insert_with(Sender::new);
        s.expire(now);
        if ts <= s.floor {
            return Err(Replayed::TooOld);
        }
        if s.seen.contains_key(&key) {
            return Err(Replayed::Seen);
        }
        while s.seen.len() >= self.per_sender {
            let Some((k, t)) = s.order.pop_front() else {
                break;
            };
            if s.seen.get(&k) == Some(&t) {
                s.seen.remove(&k);
                s.floor = s.floor.max(t);
            }
        }
        if ts <= s.floor {
            return Err(Replayed::TooOld);
        }
        s.seen.insert(key, ts);
        s.order.push_back((key, ts));
        // Claims given back leave their place in the order behind: compact it now and then.
        if s.order.len() > 2 * self.per_sender {
            let Sender { seen, order, .. } = s;
            order.retain(|(k, t)| seen.get(k) == Some(t));
        }
        self.count(&senders);
        Ok(ReplayClaim {
            guard: self.clone(),
            server: server.to_string(),
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
    server: String,
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
        let mut senders = self.guard.lock();
        if let Some(s) = senders.get_mut(&self.server) {
            if s.seen.get(&self.key) == Some(&self.ts) {
                s.seen.remove(&self.key);
            }
        }
        self.guard.count(&senders);
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
        g.claim("a", "later", now + 400, now + 400).unwrap().keep();
        g.claim("b", "later", now + 400, now + 400).unwrap().keep();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn at_its_bound_a_senders_window_shrinks_and_only_its_own() {
        let g = ReplayGuard::new(3);
        for (i, ts) in [(1, 100), (2, 101), (3, 102), (4, 103)] {
            g.claim("a", &format!("m{i}"), ts, 103).unwrap().keep();
        }
        assert_eq!(g.len(), 3);
        // m1 was dropped: it, and anything of a's as old, is refused rather than taken again.
        assert_eq!(g.claim("a", "m1", 100, 103).err(), Some(Replayed::TooOld));
        assert_eq!(g.claim("a", "m9", 100, 103).err(), Some(Replayed::TooOld));
        g.claim("a", "m5", 104, 104).unwrap().keep();
        // A sender that floods its cache with requests stamped in the future shrinks only
        // its own window: another sender's requests of now are taken.
        for i in 0..10 {
            if let Ok(c) = g.claim("flood", &format!("f{i}"), 400, 104) {
                c.keep();
            }
        }
        assert_eq!(
            g.claim("flood", "now", 104, 104).err(),
            Some(Replayed::TooOld)
        );
        g.claim("a", "m6", 104, 104).unwrap().keep();
        // Claims given back do not grow the order without bound.
        for i in 0..100 {
            drop(g.claim("b", &format!("x{i}"), 105, 105).unwrap());
        }
        let order = g.lock()["b"].order.len();
        assert!(order <= 2 * 3 + 1, "{order}");
    }
}
