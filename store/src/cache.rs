//! In-memory snapshots of peers (with compiled scopes) and trusted senders, reloaded when
//! a change notification moves the config generation.

use std::collections::HashMap;
use std::sync::Arc;

use kite_wire::ids::TeamId;
use kite_wire::scope::ScopeSet;
use kite_wire::token::secret_eq;
use tokio::sync::{watch, RwLock};

use crate::peers::Peer;
use crate::senders::Sender;
use crate::sources::Source;
use crate::{Result, Store};

/// A peer with its compiled scopes.
#[derive(Debug, Clone)]
pub struct RoutedPeer {
    /// The peer.
    pub peer: Peer,
    /// Its scopes, compiled (None if the stored list no longer compiles).
    pub scopes: Option<ScopeSet>,
}

/// Peers by team.
#[derive(Debug, Default)]
pub struct PeerSnapshot {
    /// Each team's peers.
    pub by_team: HashMap<TeamId, Vec<RoutedPeer>>,
    /// The teams with a peer that filters on attributes or orders by one (routing reads
    /// their events' text).
    pub filtering: Vec<TeamId>,
    /// Of those, the teams with a peer whose filters hold an expression (routing reads
    /// their events' data too).
    pub reading_data: Vec<TeamId>,
}

impl PeerSnapshot {
    /// Whether a peer of the team filters on attributes (routing then reads its events' text).
    pub fn filters_in(&self, team_id: &str) -> bool {
        self.filtering.iter().any(|t| t == team_id)
    }

    /// The team's handshake peer with this server name.
    pub fn by_server(&self, team_id: &str, server_name: &str) -> Option<&Peer> {
        self.by_team
            .get(team_id)?
            .iter()
            .map(|p| &p.peer)
            .find(|p| p.server_name.as_deref() == Some(server_name))
    }
}

/// Trusted senders and configured hook sources by team.
#[derive(Debug, Default)]
pub struct SenderSnapshot {
    by_team: HashMap<TeamId, Vec<Sender>>,
    sources: HashMap<(String, String), Source>,
    /// (team, token hint) → the senders holding such a token, by their place in the team's
    /// list.
    hints: HashMap<(String, String), Vec<usize>>,
}

impl SenderSnapshot {
    /// The team's sender one of whose current secrets equals `bearer`, compared in constant
    /// time against every candidate.
    pub fn find(&self, team_id: &str, bearer: &str) -> Option<&Sender> {
        let mut hit = None;
        for s in self.by_team.get(team_id).into_iter().flatten() {
            let matched = s
                .secrets()
                .into_iter()
                .fold(false, |m, secret| secret_eq(secret, bearer) | m);
            if matched && hit.is_none() {
                hit = Some(s);
            }
        }
        hit
    }

    /// The team's sender with this key id.
    pub fn by_key_id(&self, team_id: &str, key_id: &str) -> Option<&Sender> {
        self.by_team
            .get(team_id)?
            .iter()
            .find(|s| !s.key_id.is_empty() && s.key_id == key_id)
    }

    /// The team's senders holding a token with one of these hints
    /// ([`kite_wire::signature::token_hint`]): whom a request that names them may be
    /// from, found without trying every secret.
    pub fn by_hints<'a>(
        &'a self,
        team_id: &'a str,
        hints: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Sender> + 'a {
        let team = self.by_team.get(team_id);
        hints
            .iter()
            .flat_map(move |h| {
                self.hints
                    .get(&(team_id.to_string(), h.to_string()))
                    .into_iter()
                    .flatten()
            })
            .filter_map(move |i| team.and_then(|t| t.get(*i)))
    }

    /// The configuration of a hook source, if it has one.
    pub fn source(&self, team_id: &str, name: &str) -> Option<&Source> {
        self.sources.get(&(team_id.to_string(), name.to_string()))
    }
}

/// A snapshot, the (generation, epoch) it was loaded at, and when.
type Versioned<T> = ((u64, u64), std::time::Instant, Arc<T>);

/// The oldest a snapshot is used: a change made in another process applies here on its
/// change notice (milliseconds), and within this time even if the notice was lost.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// A snapshot that reloads from the store when the config generation moves, or when it is
/// older than [`MAX_AGE`].
#[derive(Debug)]
pub struct Cache<T> {
    store: Store,
    generation: watch::Receiver<u64>,
    /// Moves on every local invalidation; a snapshot is current for one (generation, epoch).
    epoch: std::sync::atomic::AtomicU64,
    snap: RwLock<Option<Versioned<T>>>,
    /// Held by the one caller reloading a snapshot grown old; the others use the old one
    /// meanwhile.
    refreshing: tokio::sync::Mutex<()>,
}

impl<T: Loadable> Cache<T> {
    /// A cache over `store`, invalidated by `generation`.
    pub fn new(store: Store, generation: watch::Receiver<u64>) -> Self {
        Self {
            store,
            generation,
            epoch: std::sync::atomic::AtomicU64::new(0),
            snap: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Drops the snapshot, so the next [`Cache::get`] reloads it (after a change made by this
    /// process, which must not wait for its own notification).
    pub async fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.snap.write().await = None;
    }

    /// The current snapshot, reloading it if something changed since it was taken.
    pub async fn get(&self) -> Result<Arc<T>> {
        let generation = (
            *self.generation.borrow(),
            self.epoch.load(std::sync::atomic::Ordering::SeqCst),
        );
        let mut old = None;
        if let Some(v) = self.snap.read().await.as_ref() {
            if v.0 == generation {
                if v.1.elapsed() < MAX_AGE {
                    return Ok(v.2.clone());
                }
                old = Some(v.2.clone());
            }
        }
        // Only its age asks for a reload: one caller reloads, the others use the snapshot
        // meanwhile; if the database cannot answer now, it is as good as it was and is
        // tried again after another MAX_AGE.
        if let Some(old) = old {
            let Ok(_reloading) = self.refreshing.try_lock() else {
                return Ok(old);
            };
            let loaded = T::load(&self.store).await;
            let mut w = self.snap.write().await;
            return match (loaded, w.as_mut()) {
                (Ok(fresh), _) => {
                    let fresh = Arc::new(fresh);
                    *w = Some((generation, std::time::Instant::now(), fresh.clone()));
                    Ok(fresh)
                }
                (Err(e), Some(v)) if v.0 == generation => {
                    tracing::warn!(error = %e, "cache not reloaded; keeping the snapshot");
                    v.1 = std::time::Instant::now();
                    Ok(old)
                }
                (Err(e), _) => Err(e),
            };
        }
        // Something changed: nobody uses the old snapshot any more.
        let mut w = self.snap.write().await;
        if let Some(v) = w.as_ref() {
            if v.0 == generation && v.1.elapsed() < MAX_AGE {
                return Ok(v.2.clone());
            }
        }
        let fresh = Arc::new(T::load(&self.store).await?);
        *w = Some((generation, std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

/// Something a [`Cache`] can load.
pub trait Loadable: Sized + Send + Sync {
    /// Loads a full snapshot.
    fn load(store: &Store) -> impl std::future::Future<Output = Result<Self>> + Send;
}

impl Loadable for PeerSnapshot {
    async fn load(store: &Store) -> Result<Self> {
        let mut by_team: HashMap<TeamId, Vec<RoutedPeer>> = HashMap::new();
        for peer in store.all_peers().await? {
            let scopes = ScopeSet::compile(&peer.scopes).ok();
            by_team
                .entry(peer.team_id.clone())
                .or_default()
                .push(RoutedPeer { peer, scopes });
        }
        let teams = |test: &dyn Fn(&Peer) -> bool| {
            by_team
                .iter()
                .filter(|(_, peers)| peers.iter().any(|p| test(&p.peer)))
                .map(|(team, _)| team.clone())
                .collect()
        };
        let filtering = teams(&|p| !p.filters.is_empty() || p.ordering_key.is_some());
        let reading_data = teams(&|p| p.filters.iter().any(|f| f.reads_data()));
        Ok(Self {
            by_team,
            filtering,
            reading_data,
        })
    }
}

impl Loadable for SenderSnapshot {
    async fn load(store: &Store) -> Result<Self> {
        let mut by_team: HashMap<TeamId, Vec<Sender>> = HashMap::new();
        for s in store.all_senders().await? {
            by_team.entry(s.team_id.clone()).or_default().push(s);
        }
        // A token peer with an inbound token is a sender too, under its own name: what it
        // signs with that token is taken as its (the Kite guide's bidirectional peer); not
        // once it is revoked.
        for p in store.all_peers().await? {
            let Some(token) = p.inbound_token else {
                continue;
            };
            if matches!(
                p.status,
                crate::types::PeerStatus::Revoked | crate::types::PeerStatus::Proposed
            ) {
                continue;
            }
            by_team.entry(p.team_id.clone()).or_default().push(Sender {
                id: p.id.0,
                team_id: p.team_id,
                name: p.name,
                key_id: String::new(),
                legacy_signature: false,
                inbound_token: token,
                previous_inbound_token: None,
                previous_until: None,
                created_at: p.created_at,
            });
        }
        let sources = store
            .all_sources()
            .await?
            .into_iter()
            .map(|s| ((s.team_id.0.clone(), s.name.clone()), s))
            .collect();
        let mut hints: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (team, senders) in &by_team {
            for (i, s) in senders.iter().enumerate() {
                for secret in s.secrets() {
                    hints
                        .entry((team.0.clone(), kite_wire::signature::token_hint(secret)))
                        .or_default()
                        .push(i);
                }
            }
        }
        Ok(Self {
            by_team,
            sources,
            hints,
        })
    }
}
