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
mod keys;
pub mod provenance;
pub mod replay;

use kite_wire::Code;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kite_store::cache::{Cache, Loadable, PeerSnapshot};
use kite_store::federation::{KeySource, Policy};
use kite_store::grants::Grant;
use kite_store::identity::SigningKey;
use kite_store::peers::Peer;
use kite_store::types::{FederationMode, PeerStatus, SignatureProtocol};
use kite_store::{Store, StoreError};
use kite_wire::identity::{self, PublicKey, Target};
use kite_wire::peering::{self, PublishedKey, ServerDescriptor};
use kite_wire::provider::SigError;
use kite_wire::scope::ScopeSet;
use kite_wire::ApiError;
use tokio::sync::{broadcast, watch, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use client::{
    http_client, literal_forbidden, read_capped, read_prefix, ClientError, ReadError,
};
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

/// What the cache holds: this server's keys, the teams' policies, the peers' grants (the
/// peers' pinned keys are cached per peer, [`keys::PinnedKeys`]).
#[derive(Debug)]
struct Snapshot {
    signing: SigningKey,
    published: Vec<PublishedKey>,
    policies: HashMap<String, Policy>,
    grants: HashMap<Uuid, Vec<(Grant, Option<ScopeSet>)>>,
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
    refreshed: Mutex<HashMap<Uuid, Instant>>,
    /// Each peer's pinned keys.
    pinned: keys::PinnedKeys,
    /// Keys of servers that are not peers, as a peer vouched for them.
    vouched: keys::Vouched,
    /// Signed requests taken recently.
    replay: Arc<replay::ReplayGuard>,
    /// Each peer's key queries in flight ([`keys::QUERIES_PER_PEER`] at once).
    queries: std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Semaphore>>>,
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
        peer_keys: &broadcast::Sender<Option<Uuid>>,
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
    fn queries_of(&self, peer: Uuid) -> Arc<tokio::sync::Semaphore> {
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

    /// The headers signing `body` as this server (`webhook-*` with `kite1`, `X-Kite-Key-Id`,
    /// `X-Kite-Server`, `X-Kite-Destination`) under the message id `id`, for `target`.
    pub async fn signed_headers(
        &self,
        target: &Target<'_>,
        id: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        let snap = self.snap.get().await?;
        Ok(identity::signed_headers(
            &self.cfg.server_name,
            &snap.signing.key_id,
            &snap.signing.key,
            target,
            id,
            Utc::now().timestamp(),
            body,
        ))
    }

    /// POSTs a JSON body signed as this server for `destination` (the server at `url`);
    /// answers the body of a 2xx, read up to `max` bytes (a longer answer is refused), else
    /// why not.
    pub async fn post_signed(
        &self,
        url: &str,
        destination: &str,
        body: Vec<u8>,
        max: usize,
    ) -> Result<Vec<u8>, FedError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| FedError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let id = format!("msg_{}", Uuid::now_v7().simple());
        let target = Target {
            method: "POST",
            destination,
            path: parsed.path(),
        };
        let mut req = self
            .http
            .post(parsed.clone())
            .header("content-type", "application/json");
        for (k, v) in self.signed_headers(&target, &id, &body).await? {
            req = req.header(k, v);
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        };
        let resp = req.body(body).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return read_capped(resp, max)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| self.unreadable(url, e));
        }
        let bytes = read_prefix(resp, peering::MAX_ANSWER_BYTES).await;
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

    fn unreadable(&self, url: &str, e: ReadError) -> FedError {
        match e {
            ReadError::TooLarge { .. } => FedError::BadAnswer(format!("{url}: {e}")),
            ReadError::Http(e) => FedError::Unreachable {
                url: url.to_string(),
                reason: root_cause(&e),
            },
        }
    }

    /// Fetches a server's descriptor from its base URL: read up to
    /// [`peering::MAX_ANSWER_BYTES`] and checked whole (its name, at most
    /// [`peering::MAX_KEYS`] well-formed keys).
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
        if status != 200 {
            return Err(FedError::BadAnswer(format!(
                "{url} answered {status}, not a server descriptor"
            )));
        }
        let bytes = read_capped(resp, peering::MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.unreadable(&url, e))?;
        peering::read(&bytes, peering::MAX_ANSWER_BYTES)
            .map_err(|e| FedError::BadAnswer(format!("{url}: {e}")))
    }

    /// Checks a request that claims to come from a handshake peer of `team`, as it arrived
    /// (`method` and `path`): it is for this server (`X-Kite-Destination`), the policy lets
    /// the peer in now (a closed team, or an `invite_only` one whose `allowed_peers` no
    /// longer names it, refuses), the peer exists and is not revoked, the request is signed
    /// for this method, path and server by a key pinned for the peer and still valid, and it
    /// was not taken before. An unknown key id refreshes the peer's descriptor once (rotation
    /// needs no re-peering). Answers the peer, the key it signed with and the claim on the
    /// request, to keep once the request succeeds.
    pub async fn verify_peer(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        request: &Inbound<'_>,
        body: &[u8],
    ) -> Result<VerifiedPeer, FedRefusal> {
        let headers = request.headers;
        let refuse = |code: Code, m: String| FedRefusal::Api(ApiError::new(code, m));
        let claimed = identity::claimed(headers).ok_or_else(|| {
            refuse(
                Code::UnknownSender,
                "a server request names its server in X-Kite-Server and its key in X-Kite-Key-Id"
                    .into(),
            )
        })?;
        self.check_open(team).await?;
        if claimed.destination.as_deref() != Some(self.cfg.server_name.as_str()) {
            return Err(refuse(
                Code::WrongDestination,
                format!(
                    "this request is for {:?}, not for this server ({:?}): a signed request is \
                     good only at the server it was made for",
                    claimed.destination.as_deref().unwrap_or("no server"),
                    self.cfg.server_name
                ),
            ));
        }
        let peer = peers.by_server(team, &claimed.server_name).ok_or_else(|| {
            refuse(
                Code::UnknownSender,
                format!("{:?} is not a peer of this team", claimed.server_name),
            )
        })?;
        if peer.status == PeerStatus::Revoked {
            return Err(refuse(
                Code::PeerRevoked,
                "this server revoked the peering".into(),
            ));
        }
        self.check_admitted(team, &claimed.server_name).await?;
        let key = self.peer_key(peer, &claimed.key_id).await?;
        let invalid = |m: String| refuse(Code::InvalidSignature, m);
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
        let target = Target {
            method: request.method,
            destination: &self.cfg.server_name,
            path: request.path,
        };
        let now = Utc::now().timestamp();
        identity::verify_request(&public, &target, headers, body, now).map_err(|e| match e {
            SigError::Invalid => invalid(
                "signature missing or invalid (a kite1 signature over this method, path and \
                 destination)"
                    .into(),
            ),
            SigError::Stale => refuse(
                Code::StaleTimestamp,
                "the signed timestamp is more than 5 minutes from now".into(),
            ),
        })?;
        let claim = self.claim(&claimed.server_name, headers, now)?;
        Ok(VerifiedPeer {
            peer: peer.clone(),
            key,
            claim,
        })
    }

    /// Takes a verified request once: a replay of it is refused 401 `replayed_request`.
    pub fn claim(
        &self,
        server: &str,
        headers: &http::HeaderMap,
        now: i64,
    ) -> Result<ReplayClaim, FedRefusal> {
        let (id, ts) = identity::request_id(headers).ok_or_else(|| {
            FedRefusal::Api(ApiError::new(
                Code::InvalidSignature,
                "webhook-id and webhook-timestamp are required",
            ))
        })?;
        let claim = self
            .replay
            .claim(server, id, ts, now)
            .map_err(|e| FedRefusal::Api(ApiError::new(Code::ReplayedRequest, e.to_string())))?;
        metrics::gauge!(kite_wire::metrics::REPLAY_ENTRIES).set(self.replay.len() as f64);
        Ok(claim)
    }

    /// Refuses shared tokens (a Kite token peer or trusted sender, a federation token) when
    /// the team's policy asks for identity keys: 403 `identity_signatures_required`.
    pub async fn check_tokens_allowed(&self, team: &str) -> Result<(), FedRefusal> {
        if self.policy(team).await?.min_signature_protocol == SignatureProtocol::Identity {
            return Err(FedRefusal::Api(ApiError::new(
                Code::IdentitySignaturesRequired,
                "this team's federation policy (min_signature_protocol identity) takes \
                 identity-key signatures only: peer by invitation (kite peer invite / accept)",
            )));
        }
        Ok(())
    }

    /// Refuses a server the team's policy no longer admits: 403 `federation_closed`, or
    /// `peer_not_allowed` under `invite_only` when `allowed_peers` does not name it.
    pub async fn check_admitted(&self, team: &str, server: &str) -> Result<(), FedRefusal> {
        match self.policy(team).await?.admits(server) {
            Ok(()) => Ok(()),
            Err(FederationMode::Closed) => Err(FedRefusal::Api(ApiError::new(
                Code::FederationClosed,
                "this team's federation policy is closed",
            ))),
            Err(_) => Err(FedRefusal::Api(ApiError::new(
                Code::PeerNotAllowed,
                format!(
                    "this team federates by invitation with allowed peers only, and {server:?} \
                     is not one"
                ),
            ))),
        }
    }

    /// A key pinned for a handshake peer; an unknown key id refreshes the peer's descriptor
    /// once (at most once a cooldown).
    async fn peer_key(
        &self,
        peer: &Peer,
        key_id: &str,
    ) -> Result<Option<PublishedKey>, FedRefusal> {
        if let Some(k) = self
            .pinned_keys(peer.id)
            .await?
            .iter()
            .find(|k| k.key_id == key_id)
        {
            return Ok(Some(k.clone()));
        }
        if !self.may_refresh(peer.id).await {
            return Ok(None);
        }
        self.refresh(peer).await?;
        Ok(self
            .pinned_keys(peer.id)
            .await?
            .iter()
            .find(|k| k.key_id == key_id)
            .cloned())
    }

    /// The keys pinned for a peer.
    pub async fn pinned_keys(&self, peer: Uuid) -> Result<Arc<Vec<PublishedKey>>, StoreError> {
        self.pinned.get(&self.store, peer).await
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

    /// Fetches a peer's descriptor again and pins what it publishes now (a failure is
    /// logged: the request that asked goes on with the keys pinned already).
    async fn refresh(&self, peer: &Peer) -> Result<(), FedRefusal> {
        match self.refresh_keys(peer).await {
            Ok(()) => Ok(()),
            Err(FedError::Store(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(peer = %peer.name, error = %e, "could not refresh the peer's descriptor");
                Ok(())
            }
        }
    }

    /// Fetches a handshake peer's descriptor from its base URL and pins the keys it
    /// publishes now, by the rules of key validity (an ended key never comes back); also
    /// what `POST /api/federation/peers/{id}/refresh` does.
    pub async fn refresh_keys(&self, peer: &Peer) -> Result<(), FedError> {
        let Some(base) = peer.peer_base_url.as_deref() else {
            return Err(FedError::BadAnswer(
                "the peer was not made by invitation: it has no descriptor".into(),
            ));
        };
        let desc = self.fetch_descriptor(base).await?;
        if Some(desc.server_name.as_str()) != peer.server_name.as_deref() {
            return Err(FedError::BadAnswer(format!(
                "{base} serves {:?}, not {:?}",
                desc.server_name,
                peer.server_name.as_deref().unwrap_or_default()
            )));
        }
        self.pin(peer.id, &desc.keys, KeySource::Descriptor).await?;
        Ok(())
    }

    /// Pins what a peer publishes now (its descriptor, or a heartbeat it signed), by the
    /// rules of [`Store::pin_keys`]; a change reloads that peer's keys only.
    pub async fn pin(
        &self,
        peer: Uuid,
        keys: &[PublishedKey],
        source: KeySource<'_>,
    ) -> Result<(), StoreError> {
        if self.store.pin_keys(peer, keys, source).await? {
            self.pinned.forget(Some(peer));
        }
        Ok(())
    }
}

/// A server-to-server request as it arrived: what its signature is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Its method.
    pub method: &'a str,
    /// Its path.
    pub path: &'a str,
    /// Its headers.
    pub headers: &'a http::HeaderMap,
}

/// A request [`Federation::verify_peer`] checked: the peer, the key it signed with, and the
/// claim on the request (kept once it succeeded, so a replay is refused).
#[derive(Debug)]
pub struct VerifiedPeer {
    /// The peer that sent it.
    pub peer: Peer,
    /// The pinned key it was signed with.
    pub key: PublishedKey,
    /// The request, taken once.
    pub claim: ReplayClaim,
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
