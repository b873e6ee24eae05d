//! The keys of other servers this one checks signatures with:
//! - [`PinnedKeys`]: each peer's pinned keys, cached per peer and reloaded for that peer
//!   only when they change (here, or in another process: the `kite_peer_keys` notice);
//! - [`Vouched`]: keys of servers that are no peer of a team, as one of the team's peers
//!   vouched for them. A vouch counts only for that team and for events that peer forwards,
//!   expires, can be corrected (a key that fails to verify is forgotten) and is bounded.

use kite_wire::ids::PeerId;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use kite_store::{Store, StoreError};
use kite_wire::peering::PublishedKey;

/// Each peer's pinned keys, loaded on first use.
#[derive(Debug, Default)]
pub(crate) struct PinnedKeys {
    map: RwLock<HashMap<PeerId, Arc<Vec<PublishedKey>>>>,
    /// Moves on every forget, so a load that raced one is not kept.
    generation: AtomicU64,
}

impl PinnedKeys {
    /// The keys pinned for `peer`.
    pub(crate) async fn get(
        &self,
        store: &Store,
        peer: PeerId,
    ) -> Result<Arc<Vec<PublishedKey>>, StoreError> {
        let cached = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned();
        if let Some(k) = cached {
            return Ok(k);
        }
        let before = self.generation.load(Ordering::SeqCst);
        let keys = Arc::new(store.peer_keys(peer).await?);
        // Kept only if no forget came between the load and now (checked under the lock a
        // forget takes too).
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == before {
            m.insert(peer, keys.clone());
        }
        Ok(keys)
    }

    /// Forgets one peer's keys (`Some`), or every peer's (`None`).
    pub(crate) fn forget(&self, peer: Option<PeerId>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        match peer {
            Some(p) => {
                m.remove(&p);
            }
            None => m.clear(),
        }
    }
}

/// How long a vouched key is used before it is asked for again.
pub const VOUCHED_TTL: Duration = Duration::from_secs(600);
/// How long a key the peer could not vouch for (no answer, or none) is not asked for again.
pub const MISSING_TTL: Duration = Duration::from_secs(60);
/// Key queries one peer is asked at once; more wait their turn (so a peer that answers
/// slowly holds up only the events it forwards).
pub const QUERIES_PER_PEER: usize = 4;
/// Most vouched keys held for one team.
pub const VOUCHED_PER_TEAM: usize = 256;
/// Most vouched keys held in all.
pub const VOUCHED_MAX: usize = 4096;

/// Whose vouch a key is: the team, the peer that vouched, the server and key id vouched for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VouchKey {
    pub(crate) team: String,
    pub(crate) via: PeerId,
    pub(crate) server: String,
    pub(crate) key_id: String,
}

/// A vouch: the key, or None when the peer could not vouch for one.
type Vouch = Option<PublishedKey>;

#[derive(Debug, Default)]
struct VouchedInner {
    map: HashMap<VouchKey, (Vouch, Instant)>,
    order: VecDeque<(VouchKey, Instant)>,
    per_team: HashMap<String, usize>,
}

impl VouchedInner {
    fn remove(&mut self, k: &VouchKey) {
        if self.map.remove(k).is_some() {
            if let Some(n) = self.per_team.get_mut(&k.team) {
                *n -= 1;
                if *n == 0 {
                    self.per_team.remove(&k.team);
                }
            }
        }
    }

    /// Drops the oldest vouch (of `team` if given) still held.
    fn evict_oldest(&mut self, team: Option<&str>) {
        let pos = self.order.iter().position(|(k, at)| {
            team.is_none_or(|t| k.team == t) && self.map.get(k).is_some_and(|(_, a)| a == at)
        });
        if let Some((k, _)) = pos.and_then(|i| self.order.remove(i)) {
            self.remove(&k);
        }
    }
}

/// Keys peers vouched for, bounded per team and in all, each for [`VOUCHED_TTL`].
#[derive(Debug, Default)]
pub(crate) struct Vouched {
    inner: Mutex<VouchedInner>,
}

impl Vouched {
    fn lock(&self) -> std::sync::MutexGuard<'_, VouchedInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was vouched under `k` while it is fresh: the key (until it ends), or None when
    /// the peer could not vouch for one lately; `None` outside when it must be asked.
    pub(crate) fn get(&self, k: &VouchKey) -> Option<Vouch> {
        let mut g = self.lock();
        let fresh = g.map.get(k).and_then(|(vouch, at)| match vouch {
            Some(key) => (at.elapsed() < VOUCHED_TTL
                && key.valid_until.is_none_or(|t| t > Utc::now()))
            .then(|| Some(key.clone())),
            None => (at.elapsed() < MISSING_TTL).then_some(None),
        });
        if fresh.is_none() {
            g.remove(k);
        }
        fresh
    }

    /// Holds what a peer vouched (a key, or none), making room within the bounds (oldest
    /// first).
    pub(crate) fn put(&self, k: VouchKey, key: Vouch) {
        let mut g = self.lock();
        g.remove(&k);
        while g
            .order
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= VOUCHED_TTL)
        {
            if let Some((old, at)) = g.order.pop_front() {
                if g.map.get(&old).is_some_and(|(_, a)| *a == at) {
                    g.remove(&old);
                }
            }
        }
        while g.per_team.get(&k.team).copied().unwrap_or(0) >= VOUCHED_PER_TEAM {
            g.evict_oldest(Some(&k.team));
        }
        while g.map.len() >= VOUCHED_MAX {
            g.evict_oldest(None);
        }
        let now = Instant::now();
        *g.per_team.entry(k.team.clone()).or_default() += 1;
        g.order.push_back((k.clone(), now));
        g.map.insert(k, (key, now));
        if g.order.len() > 2 * VOUCHED_MAX {
            let VouchedInner { map, order, .. } = &mut *g;
            order.retain(|(k, at)| map.get(k).is_some_and(|(_, a)| a == at));
        }
        metrics::gauge!(kite_wire::metrics::VOUCHED_KEYS).set(g.map.len() as f64);
    }

    /// Forgets a vouch that turned out wrong (an event did not verify with it).
    pub(crate) fn forget(&self, k: &VouchKey) {
        let mut g = self.lock();
        g.remove(k);
        metrics::gauge!(kite_wire::metrics::VOUCHED_KEYS).set(g.map.len() as f64);
    }

    /// Vouched keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> PublishedKey {
        PublishedKey {
            key_id: id.into(),
            public_key: "pk".into(),
            valid_from: Utc::now(),
            valid_until: None,
        }
    }

    fn vk(team: &str, via: PeerId, key_id: &str) -> VouchKey {
        VouchKey {
            team: team.into(),
            via,
            server: "a".into(),
            key_id: key_id.into(),
        }
    }

    #[test]
    fn a_vouch_counts_for_its_team_and_peer_only_and_is_bounded() {
        let v = Vouched::default();
        let (p1, p2) = (PeerId(uuid::Uuid::now_v7()), PeerId(uuid::Uuid::now_v7()));
        v.put(vk("t1", p1, "k"), Some(key("k")));
        assert!(matches!(v.get(&vk("t1", p1, "k")), Some(Some(_))));
        assert!(v.get(&vk("t2", p1, "k")).is_none());
        assert!(v.get(&vk("t1", p2, "k")).is_none());
        v.forget(&vk("t1", p1, "k"));
        assert!(v.get(&vk("t1", p1, "k")).is_none());
        // A key the peer could not vouch for is not asked for again for a while.
        v.put(vk("t1", p1, "gone"), None);
        assert_eq!(v.get(&vk("t1", p1, "gone")), Some(None));
        for i in 0..(VOUCHED_PER_TEAM + 50) {
            v.put(vk("t1", p1, &format!("k{i}")), Some(key("k")));
        }
        assert_eq!(v.len(), VOUCHED_PER_TEAM);
        // The newest are held.
        assert!(v
            .get(&vk("t1", p1, &format!("k{}", VOUCHED_PER_TEAM + 49)))
            .is_some());
        // Another team keeps its own room.
        v.put(vk("t2", p2, "k"), Some(key("k")));
        assert!(v.get(&vk("t2", p2, "k")).is_some());
        for t in 0..40 {
            for i in 0..200 {
                v.put(
                    vk(&format!("team{t}"), p1, &format!("k{i}")),
                    Some(key("k")),
                );
            }
        }
        assert!(v.len() <= VOUCHED_MAX);
    }
}
