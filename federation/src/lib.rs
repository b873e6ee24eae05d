//! kite-federation: how this instance deals with other servers.
//!
//! - [`client`]: the one outbound HTTP client (timeouts, no redirects, the SSRF guard);
//! - [`Federation`]: the instance's identity (its descriptor, signing every server-to-server
//!   request with its current key), each team's policy, and the check of a peer's signed
//!   request against the keys pinned for it (refreshing its descriptor once on an unknown
//!   key id);
//! - [`handshake`]: accepting an invitation (`kite peer accept`);
//! - [`heartbeat`]: the signed heartbeats that move a peer between `active` and `degraded`;
//! - [`provenance`]: origin signatures (signing where an event enters the federation,
//!   checking them with pinned or vouched-for keys) and the peers' grants.

pub mod client;
pub mod handshake;
pub mod heartbeat;
pub mod provenance;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kite_protocol::identity::{self, PublicKey};
use kite_protocol::peering::{self, PublishedKey, ServerDescriptor};
use kite_protocol::provider::SigError;
use kite_protocol::scope::ScopeSet;
use kite_protocol::ApiError;
use kite_store::cache::{Cache, Loadable, PeerSnapshot};
use kite_store::federation::Policy;
use kite_store::grants::Grant;
use kite_store::identity::SigningKey;
use kite_store::peers::Peer;
use kite_store::types::{FederationMode, PeerStatus};
use kite_store::{Store, StoreError};
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

pub use client::{http_client, literal_forbidden, ClientError};

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
    /// The defaults: heartbeats every 60 s, `degraded` after 3 missed, keys overlapping for
    /// 30 days, 10 s requests, private addresses refused, a descriptor refreshed at most
    /// once a second a peer.
    pub fn new(server_name: &str) -> Self {
        Self {
            server_name: server_name.to_string(),
            public_url: None,
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_misses: 3,
            key_overlap: Duration::from_secs(30 * 24 * 3600),
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

/// The error code and message of a kite error body (`{"error":{"code","message"}}`).
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    Some((
        e.get("code")?.as_str()?.to_string(),
        e.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string(),
    ))
}

/// What the cache holds: this server's keys, the teams' policies, the peers' pinned keys.
#[derive(Debug)]
struct Snapshot {
    signing: SigningKey,
    published: Vec<PublishedKey>,
    policies: HashMap<String, Policy>,
    peer_keys: HashMap<Uuid, Vec<PublishedKey>>,
    grants: HashMap<Uuid, Vec<(Grant, Option<ScopeSet>)>>,
}

impl Loadable for Snapshot {
    async fn load(store: &Store) -> kite_store::Result<Self> {
        Ok(Self {
            signing: store.signing_key().await?,
            published: store.server_keys().await?,
            policies: store.all_policies().await?,
            peer_keys: store.all_peer_keys().await?,
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
    refreshed: Mutex<HashMap<Uuid, Instant>>,
    /// Keys of servers that are not peers, as a peer vouched for them.
    vouched: Mutex<HashMap<(String, String), PublishedKey>>,
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
    /// `store`, reloading what it caches when `generation` moves.
    pub async fn start(
        store: Store,
        generation: watch::Receiver<u64>,
        cfg: FederationConfig,
    ) -> Result<Arc<Self>, FedError> {
        store.ensure_server_key().await?;
        let http = http_client(
            cfg.request_timeout,
            cfg.allow_private_peers,
            cfg.peer_ca.as_deref(),
        )
        .map_err(|e| FedError::BadAnswer(e.to_string()))?;
        Ok(Arc::new(Self {
            snap: Cache::new(store.clone(), generation),
            store,
            http,
            cfg,
            refreshed: Mutex::new(HashMap::new()),
            vouched: Mutex::new(HashMap::new()),
        }))
    }

    /// The settings.
    pub fn config(&self) -> &FederationConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
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
                403,
                "federation_closed",
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

    /// The headers signing `body` as this server (`webhook-*` with `v1a`, `X-Kite-Key-Id`,
    /// `X-Kite-Server`) under the message id `id`.
    pub async fn signed_headers(
        &self,
        id: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        let snap = self.snap.get().await?;
        Ok(identity::signed_headers(
            &self.cfg.server_name,
            &snap.signing.key_id,
            &snap.signing.key,
            id,
            Utc::now().timestamp(),
            body,
        ))
    }

    /// POSTs a JSON body signed as this server; answers the body of a 2xx, else why not.
    pub async fn post_signed(&self, url: &str, body: Vec<u8>) -> Result<Vec<u8>, FedError> {
        let id = format!("msg_{}", Uuid::now_v7().simple());
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json");
        for (k, v) in self.signed_headers(&id, &body).await? {
            req = req.header(k, v);
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        };
        let resp = req.body(body).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?.to_vec();
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let (code, message) = error_of(&bytes).unwrap_or_else(|| {
            (
                format!("http_{status}"),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            )
        });
        Err(FedError::Refused {
            url: url.to_string(),
            status,
            code,
            message,
        })
    }

    /// Fetches a server's descriptor from its base URL.
    pub async fn fetch_descriptor(&self, base_url: &str) -> Result<ServerDescriptor, FedError> {
        let url = peering::descriptor_url(base_url);
        if !self.cfg.allow_private_peers && literal_forbidden(&url) {
            return Err(FedError::Unreachable {
                url,
                reason: "forbidden destination: a loopback or private address".into(),
            });
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable {
            url: url.clone(),
            reason: root_cause(&e),
        };
        let resp = self.http.get(&url).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status != 200 {
            return Err(FedError::BadAnswer(format!(
                "{url} answered {status}, not a server descriptor"
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| FedError::BadAnswer(format!("{url} is not a kite server descriptor: {e}")))
    }

    /// Checks a request that claims to come from a handshake peer of `team`: the policy
    /// lets it in, the peer exists and is not revoked, and the request is signed by a key
    /// pinned for it and still valid. An unknown key id refreshes the peer's descriptor
    /// once (rotation needs no re-peering). Answers the peer.
    pub async fn verify_peer(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Peer, FedRefusal> {
        let claimed = identity::claimed(headers).ok_or_else(|| {
            FedRefusal::Api(ApiError::new(
                401,
                "unknown_sender",
                "a server request names its server in X-Kite-Server and its key in X-Kite-Key-Id",
            ))
        })?;
        self.check_open(team).await?;
        let peer = peers.by_server(team, &claimed.server_name).ok_or_else(|| {
            FedRefusal::Api(ApiError::new(
                401,
                "unknown_sender",
                format!("{:?} is not a peer of this team", claimed.server_name),
            ))
        })?;
        if peer.status == PeerStatus::Revoked {
            return Err(FedRefusal::Api(ApiError::new(
                403,
                "peer_revoked",
                "this server revoked the peering",
            )));
        }
        let key = self.peer_key(peer, &claimed.key_id).await?;
        let invalid = |m: String| FedRefusal::Api(ApiError::new(401, "invalid_signature", m));
        let key = key.ok_or_else(|| {
            invalid(format!(
                "key {:?} is not one {} publishes",
                claimed.key_id, claimed.server_name
            ))
        })?;
        if let Some(until) = key.valid_until.filter(|t| *t <= Utc::now()) {
            return Err(invalid(format!(
                "key {:?} expired at {until}",
                claimed.key_id
            )));
        }
        let public = PublicKey::from_base64(&key.public_key)
            .ok_or_else(|| invalid(format!("key {:?} is not an Ed25519 key", key.key_id)))?;
        identity::verify_request(&public, headers, body, Utc::now().timestamp()).map_err(|e| {
            match e {
                SigError::Invalid => invalid("signature missing or invalid".into()),
                SigError::Stale => FedRefusal::Api(ApiError::new(
                    401,
                    "stale_timestamp",
                    "the signed timestamp is more than 5 minutes from now",
                )),
            }
        })?;
        Ok(peer.clone())
    }

    /// A key pinned for a handshake peer; an unknown key id refreshes the peer's descriptor
    /// once (at most once a cooldown).
    async fn peer_key(
        &self,
        peer: &Peer,
        key_id: &str,
    ) -> Result<Option<PublishedKey>, FedRefusal> {
        if let Some(k) = self.pinned(peer.id, key_id).await? {
            return Ok(Some(k));
        }
        if !self.may_refresh(peer.id).await {
            return Ok(None);
        }
        Ok(self
            .refresh(peer)
            .await?
            .into_iter()
            .find(|k| k.key_id == key_id))
    }

    async fn pinned(&self, peer: Uuid, key_id: &str) -> Result<Option<PublishedKey>, StoreError> {
        Ok(self
            .snap
            .get()
            .await?
            .peer_keys
            .get(&peer)
            .and_then(|keys| keys.iter().find(|k| k.key_id == key_id))
            .cloned())
    }

    /// The keys pinned for a peer.
    pub async fn pinned_keys(&self, peer: Uuid) -> Result<Vec<PublishedKey>, StoreError> {
        Ok(self
            .snap
            .get()
            .await?
            .peer_keys
            .get(&peer)
            .cloned()
            .unwrap_or_default())
    }

    async fn may_refresh(&self, peer: Uuid) -> bool {
        let mut last = self.refreshed.lock().await;
        let now = Instant::now();
        match last.get(&peer) {
            Some(t) if now.duration_since(*t) < self.cfg.refresh_cooldown => false,
            _ => {
                last.insert(peer, now);
                true
            }
        }
    }

    /// Fetches a peer's descriptor again and pins what it publishes now.
    async fn refresh(&self, peer: &Peer) -> Result<Vec<PublishedKey>, FedRefusal> {
        let Some(base) = peer.peer_base_url.as_deref() else {
            return Ok(Vec::new());
        };
        let desc = match self.fetch_descriptor(base).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(peer = %peer.name, error = %e, "could not refresh the peer's descriptor");
                return Ok(Vec::new());
            }
        };
        if Some(desc.server_name.as_str()) != peer.server_name.as_deref() {
            tracing::warn!(peer = %peer.name, served = %desc.server_name, "the peer's URL serves another server");
            return Ok(Vec::new());
        }
        self.pin(peer.id, &desc.keys).await?;
        Ok(desc.keys)
    }

    /// Pins what a peer publishes now (descriptor or signed heartbeat).
    pub async fn pin(&self, peer: Uuid, keys: &[PublishedKey]) -> Result<(), StoreError> {
        if self.store.pin_keys(peer, keys).await? {
            self.invalidate().await;
        }
        Ok(())
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

/// The innermost cause of an error (what a failed HTTP call says went wrong).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_code() {
        assert_eq!(
            error_of(br#"{"error":{"code":"peer_revoked","message":"no"}}"#),
            Some(("peer_revoked".into(), "no".into()))
        );
        assert_eq!(error_of(b"<html>"), None);
    }
}
