//! kite-federation: how this instance deals with other servers.
//!
//! - [`client`]: the one outbound HTTP client (timeouts, no redirects, the SSRF guard, answers
//!   read up to a bound);
//! - [`Federation`]: the instance's identity (its descriptor, signing every server-to-server
//!   request with its current key for its destination, method and path), each team's
//!   policy, and the check of a peer's signed request: for this server, by a key pinned for
//!   the peer and still valid, admitted by the policy now, and not taken before
//!   ([`replay`]);
//! - [`keys`]: the peers' pinned keys (per peer) and the keys peers vouch for (bounded);
//! - [`handshake`]: accepting an invitation (`kite peer accept`);
//! - [`heartbeat`]: the signed heartbeats that move a peer between `active` and `degraded`;
//! - [`provenance`]: origin signatures (signing where an event enters the federation,
//!   checking them with pinned or vouched-for keys) and the peers' grants.

pub mod client;
pub mod handshake;
pub mod heartbeat;
mod inbound;
mod keys;
mod outbound;
pub mod provenance;
pub mod replay;

use kite_wire::ids::PeerId;
use kite_wire::Code;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kite_store::cache::{Cache, Loadable};
use kite_store::federation::Policy;
use kite_store::grants::Grant;
use kite_store::identity::SigningKey;
use kite_store::types::FederationMode;
use kite_store::{Store, StoreError};
use kite_wire::identity;
use kite_wire::peering::{self, PublishedKey, ServerDescriptor};
use kite_wire::scope::ScopeSet;
use kite_wire::ApiError;
use tokio::sync::{broadcast, watch, Mutex};
use tokio_util::sync::CancellationToken;

pub use client::{
    http_client, literal_forbidden, read_capped, read_prefix, ClientError, ReadError,
};
pub use inbound::{Inbound, VerifiedPeer};
pub use outbound::{error_of, root_cause, MAX_PEER_MESSAGE_CHARS};
pub use replay::ReplayClaim;

/// Federation settings.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// This server's name (its instance id).
    pub server_name: String,
    /// The base URL other servers reach it at (None: a process without the ingress role).
    pub public_url: Option<String>,
    /// How often a heartbeat goes to each handshake peer.
    pub heartbeat_interval: Duration,
    /// Heartbeats missed in a row after which a peer is `degraded`.
    pub heartbeat_misses: u32,
    /// How long a rotated-out identity key stays published and accepted.
    pub key_overlap: Duration,
    /// How long an identity key signs before it is rotated on schedule (None: by hand only).
    pub key_rotation: Option<Duration>,
    /// Timeout of one server-to-server request.
    pub request_timeout: Duration,
    /// Reach loopback and private addresses (otherwise refused at connect time).
    pub allow_private_peers: bool,
    /// PEM file of an extra CA to trust for peers' TLS certificates.
    pub peer_ca: Option<PathBuf>,
    /// The least time between two descriptor refreshes of one peer.
    pub refresh_cooldown: Duration,
}

impl FederationConfig {
    /// The defaults: heartbeats every 60 s, `degraded` after 3 missed, keys rotated yearly and
    /// overlapping for 30 days, 10 s requests, private addresses refused, a descriptor
    /// refreshed at most once a second a peer.
    pub fn new(server_name: &str) -> Self {
        Self {
            server_name: server_name.to_string(),
            public_url: None,
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_misses: 3,
            key_overlap: Duration::from_secs(30 * 24 * 3600),
            key_rotation: Some(Duration::from_secs(365 * 24 * 3600)),
            request_timeout: Duration::from_secs(10),
            allow_private_peers: false,
            peer_ca: None,
            refresh_cooldown: Duration::from_secs(1),
        }
    }
}

/// A federation failure.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The other server could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The other server refused, with its error code.
    #[error("{url} answered {status} {code}: {message}")]
    Refused {
        /// What was called.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// Its error code (`http_<status>` when it sent none).
        code: String,
        /// Its message.
        message: String,
    },
    /// The other server answered something this side cannot use.
    #[error("{0}")]
    BadAnswer(String),
    /// This process has no public URL to tell other servers.
    #[error("this instance has no public URL (set KITE_PUBLIC_URL)")]
    NoPublicUrl,
}

/// What the cache holds: this server's keys, the teams' policies, the peers' grants (the
/// peers' pinned keys are cached per peer, [`keys::PinnedKeys`]).
#[derive(Debug)]
struct Snapshot {
    signing: SigningKey,
    published: Vec<PublishedKey>,
    policies: HashMap<String, Policy>,
    grants: HashMap<PeerId, Vec<(Grant, Option<ScopeSet>)>>,
}

impl Loadable for Snapshot {
    async fn load(store: &Store) -> kite_store::Result<Self> {
        Ok(Self {
            signing: store.signing_key().await?,
            published: store.server_keys().await?,
            policies: store.all_policies().await?,
            grants: store
                .all_grants()
                .await?
                .into_iter()
                .map(|(peer, grants)| {
                    let compiled = grants
                        .into_iter()
                        .map(|g| {
                            let scopes = ScopeSet::compile(&g.scopes).ok();
                            (g, scopes)
                        })
                        .collect();
                    (peer, compiled)
                })
                .collect(),
        })
    }
}

/// The instance's federation: identity, policy, signed requests both ways.
pub struct Federation {
    store: Store,
    http: reqwest::Client,
    cfg: FederationConfig,
    snap: Cache<Snapshot>,
    refreshed: Mutex<HashMap<PeerId, Instant>>,
    /// Each peer's pinned keys.
    pinned: keys::PinnedKeys,
    /// Keys of servers that are not peers, as a peer vouched for them.
    vouched: keys::Vouched,
    /// Signed requests taken recently.
    replay: Arc<replay::ReplayGuard>,
    /// Each peer's key queries in flight ([`keys::QUERIES_PER_PEER`] at once).
    queries: std::sync::Mutex<HashMap<PeerId, Arc<tokio::sync::Semaphore>>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("server_name", &self.cfg.server_name)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Makes the instance's first identity key if it has none, and the federation over
    /// `store`, reloading what it caches when `generation` moves and a peer's pinned keys
    /// when `peer_keys` names it.
    pub async fn start(
        store: Store,
        generation: watch::Receiver<u64>,
        peer_keys: &broadcast::Sender<Option<PeerId>>,
        cfg: FederationConfig,
    ) -> Result<Arc<Self>, FedError> {
        if !identity::valid_server_name(&cfg.server_name) {
            return Err(FedError::BadAnswer(format!(
                "the instance id {:?} is not a server name (a DNS-like name of at most 253 \
                 bytes: letters, digits, '-' and '.')",
                cfg.server_name
            )));
        }
        store.ensure_server_key().await?;
        let http = http_client(
            cfg.request_timeout,
            cfg.allow_private_peers,
            cfg.peer_ca.as_deref(),
        )
        .map_err(|e| FedError::BadAnswer(e.to_string()))?;
        let fed = Arc::new(Self {
            snap: Cache::new(store.clone(), generation),
            store,
            http,
            cfg,
            refreshed: Mutex::new(HashMap::new()),
            pinned: keys::PinnedKeys::default(),
            vouched: keys::Vouched::default(),
            replay: replay::ReplayGuard::new(replay::REPLAY_PER_SENDER),
            queries: std::sync::Mutex::new(HashMap::new()),
        });
        let mut changes = peer_keys.subscribe();
        let weak = Arc::downgrade(&fed);
        tokio::spawn(async move {
            loop {
                let changed = match changes.recv().await {
                    Ok(peer) => peer,
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(fed) = weak.upgrade() else { return };
                fed.pinned.forget(changed);
            }
        });
        Ok(fed)
    }

    /// The settings.
    pub fn config(&self) -> &FederationConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key queries a peer may be asked at once.
    fn queries_of(&self, peer: PeerId) -> Arc<tokio::sync::Semaphore> {
        let mut m = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        // Peers come and go: forget the idle ones now and then.
        if m.len() > 1024 {
            m.retain(|_, s| s.available_permits() < keys::QUERIES_PER_PEER);
        }
        m.entry(peer)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(keys::QUERIES_PER_PEER)))
            .clone()
    }

    /// Drops what is cached (after a change made by this process).
    pub async fn invalidate(&self) {
        self.snap.invalidate().await;
    }

    /// A team's policy.
    pub async fn policy(&self, team: &str) -> Result<Policy, StoreError> {
        Ok(self
            .snap
            .get()
            .await?
            .policies
            .get(team)
            .cloned()
            .unwrap_or_default())
    }

    /// Refuses every federation request of a team whose policy is `closed`.
    pub async fn check_open(&self, team: &str) -> Result<(), FedRefusal> {
        if self.policy(team).await?.default_mode == FederationMode::Closed {
            return Err(FedRefusal::Api(ApiError::new(
                Code::FederationClosed,
                "this team's federation policy is closed",
            )));
        }
        Ok(())
    }

    /// The published keys: the current one and any still inside their overlap.
    pub async fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        let now = Utc::now();
        Ok(self
            .snap
            .get()
            .await?
            .published
            .iter()
            .filter(|k| k.valid_until.is_none_or(|t| t > now))
            .cloned()
            .collect())
    }

    /// The descriptor of this server (`GET /.well-known/kite/server`).
    pub async fn descriptor(&self) -> Result<ServerDescriptor, FedError> {
        let base = self
            .cfg
            .public_url
            .as_deref()
            .ok_or(FedError::NoPublicUrl)?;
        Ok(ServerDescriptor {
            server_name: self.cfg.server_name.clone(),
            keys: self.published_keys().await?,
            protocol_versions: peering::PROTOCOL_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect(),
            endpoints: peering::Endpoints::at(base),
        })
    }

    /// Rotates the identity key: a new one signs from now on; the old one stays published
    /// and accepted for the overlap. Answers the published keys.
    pub async fn rotate(&self) -> Result<Vec<PublishedKey>, StoreError> {
        let keys = self.store.rotate_server_key(self.cfg.key_overlap).await?;
        self.invalidate().await;
        Ok(keys)
    }
}

/// Rotates the identity key once it has signed for `key_rotation` (the old one stays valid
/// for the overlap), until `stop` is cancelled; several processes rotate once between them.
pub async fn rotate_on_schedule(fed: Arc<Federation>, stop: CancellationToken) {
    let Some(age) = fed.cfg.key_rotation else {
        return;
    };
    let tick = (age / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        match fed
            .store
            .rotate_server_key_if_older(age, fed.cfg.key_overlap)
            .await
        {
            Ok(true) => {
                fed.invalidate().await;
                tracing::info!("identity key rotated on schedule");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot rotate the identity key on schedule"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// Why a server request was refused.
#[derive(Debug, thiserror::Error)]
pub enum FedRefusal {
    /// Refused with this error.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
