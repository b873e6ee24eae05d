//! Requests other servers make to this one: the check of a handshake peer's signed
//! request (for this server, by a key pinned for the peer and still valid, admitted by the
//! team's policy now, not taken before), and the peers' pinned keys it is checked with.

use kite_wire::ids::PeerId;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use kite_store::cache::PeerSnapshot;
use kite_store::federation::KeySource;
use kite_store::peers::Peer;
use kite_store::types::{FederationMode, PeerStatus, SignatureProtocol};
use kite_store::StoreError;
use kite_wire::identity::{self, Claimed, PublicKey, Target};
use kite_wire::peering::PublishedKey;
use kite_wire::provider::SigError;
use kite_wire::{ApiError, Code};

use crate::{FedError, FedRefusal, Federation, ReplayClaim};

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

impl Federation {
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
        let claimed = identity::claimed(headers).ok_or_else(|| {
            refuse(
                Code::UnknownSender,
                "a server request names its server in X-Kite-Server and its key in X-Kite-Key-Id"
                    .into(),
            )
        })?;
        self.check_open(team).await?;
        self.check_destination(&claimed)?;
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
        let (key, public) = self.signing_key(peer, &claimed).await?;
        let now = Utc::now().timestamp();
        self.check_request_signature(request, &public, body, now)?;
        let claim = self.claim(&claimed.server_name, headers, now)?;
        Ok(VerifiedPeer {
            peer: peer.clone(),
            key,
            claim,
        })
    }

    /// Refuses a request made for another server than this one (`X-Kite-Destination`).
    fn check_destination(&self, claimed: &Claimed) -> Result<(), FedRefusal> {
        if claimed.destination.as_deref() == Some(self.cfg.server_name.as_str()) {
            return Ok(());
        }
        Err(refuse(
            Code::WrongDestination,
            format!(
                "this request is for {:?}, not for this server ({:?}): a signed request is \
                 good only at the server it was made for",
                claimed.destination.as_deref().unwrap_or("no server"),
                self.cfg.server_name
            ),
        ))
    }

    /// The key the request says it was signed with: pinned for `peer`, not expired, and an
    /// Ed25519 key (else 401 `invalid_signature`).
    async fn signing_key(
        &self,
        peer: &Peer,
        claimed: &Claimed,
    ) -> Result<(PublishedKey, PublicKey), FedRefusal> {
        let invalid = |m: String| refuse(Code::InvalidSignature, m);
        let key = self.peer_key(peer, &claimed.key_id).await?;
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
        Ok((key, public))
    }

    /// Checks the request's `kite1` signature by `public`, over its method and path at this
    /// server, at `now`.
    fn check_request_signature(
        &self,
        request: &Inbound<'_>,
        public: &PublicKey,
        body: &[u8],
        now: i64,
    ) -> Result<(), FedRefusal> {
        let target = Target {
            method: request.method,
            destination: &self.cfg.server_name,
            path: request.path,
        };
        identity::verify_request(public, &target, request.headers, body, now).map_err(|e| match e {
            SigError::Invalid => refuse(
                Code::InvalidSignature,
                "signature missing or invalid (a kite1 signature over this method, path and \
                 destination)"
                    .into(),
            ),
            SigError::Stale => refuse(
                Code::StaleTimestamp,
                "the signed timestamp is more than 5 minutes from now".into(),
            ),
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
    pub(crate) async fn peer_key(
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
    pub async fn pinned_keys(&self, peer: PeerId) -> Result<Arc<Vec<PublishedKey>>, StoreError> {
        self.pinned.get(&self.store, peer).await
    }

    /// Whether a peer's descriptor may be fetched again now (at most once a cooldown).
    async fn may_refresh(&self, peer: PeerId) -> bool {
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
    /// rules of [`Store::pin_keys`](kite_store::Store::pin_keys); a change reloads that peer's keys only.
    pub async fn pin(
        &self,
        peer: PeerId,
        keys: &[PublishedKey],
        source: KeySource<'_>,
    ) -> Result<(), StoreError> {
        if self.store.pin_keys(peer, keys, source).await? {
            self.pinned.forget(Some(peer));
        }
        Ok(())
    }
}

/// A refusal with this code and message.
fn refuse(code: Code, message: String) -> FedRefusal {
    FedRefusal::Api(ApiError::new(code, message))
}
