//! Origin signatures and grants: signing an event where it enters the federation, checking
//! an origin's signature (with the keys pinned for the origin, or those a forwarding peer
//! vouches for), and the `send` and `backfill` grants a team gives its handshake peers.

use chrono::Utc;
use kite_protocol::fed::{self, FedInfo};
use kite_protocol::identity::PublicKey;
use kite_protocol::peering::{self, KeyQuery, KeyQueryResponse, PublishedKey};
use kite_protocol::provenance::{self, SigText};
use kite_protocol::scope::ScopeSet;
use kite_protocol::ApiError;
use kite_store::cache::PeerSnapshot;
use kite_store::peers::Peer;
use kite_store::types::GrantPermission;
use serde_json::{Map, Value};

use crate::{FedError, FedRefusal, Federation};

fn invalid_origin(m: impl Into<String>) -> FedRefusal {
    FedRefusal::Api(ApiError::new(401, "invalid_origin_signature", m))
}

impl Federation {
    /// The copy of a stored event sent to a handshake peer: the federation extensions
    /// advanced, and the origin signature: the one it came with, or, for an event entering
    /// the federation here, this server's.
    pub async fn forward_signed(
        &self,
        rest: &str,
        info: &FedInfo,
        origin_sig: Option<&SigText>,
    ) -> Result<String, String> {
        let text =
            fed::forward_text(rest, info, &self.cfg.server_name).map_err(|e| e.to_string())?;
        match (origin_sig, &info.origin) {
            (Some(sig), _) => fed::splice(&text, &sig.members()).map_err(|e| e.to_string()),
            (None, None) => {
                let snap = self.snap.get().await.map_err(|e| e.to_string())?;
                provenance::sign_text(
                    &text,
                    &self.cfg.server_name,
                    &snap.signing.key_id,
                    &snap.signing.key,
                )
                .map_err(|e| e.to_string())
            }
            // Entered the federation elsewhere, unsigned (a Kite token peer): sent as it came.
            (None, Some(_)) => Ok(text),
        }
    }

    /// Checks the origin signature of an event (its JSON object as received) that carries
    /// one: against this server's keys when it signed, the keys pinned for the origin when
    /// it is a peer of `team`, else the keys `via` (the handshake peer that forwarded it)
    /// vouches for. Refused 401 `invalid_origin_signature` when it does not verify or no
    /// key can be had.
    pub async fn verify_origin(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        event: &Map<String, Value>,
        via: Option<&Peer>,
    ) -> Result<(), FedRefusal> {
        let sig = match provenance::read(event) {
            Ok(Some(sig)) => sig,
            Ok(None) => return Ok(()),
            Err(e) => return Err(invalid_origin(e.to_string())),
        };
        let key = self
            .origin_key(team, peers, &sig.server_name, &sig.key_id, via)
            .await?;
        let key = key.ok_or_else(|| {
            invalid_origin(format!(
                "no key {:?} of {:?} can be had here or from the forwarding peer",
                sig.key_id, sig.server_name
            ))
        })?;
        if key.valid_until.is_some_and(|t| t <= Utc::now()) {
            return Err(invalid_origin(format!(
                "key {:?} of {:?} has expired",
                sig.key_id, sig.server_name
            )));
        }
        let public = PublicKey::from_base64(&key.public_key)
            .ok_or_else(|| invalid_origin("the origin's key is not an Ed25519 key"))?;
        if provenance::verify(event, &sig, &public) {
            Ok(())
        } else {
            Err(invalid_origin(format!(
                "the event does not verify with {:?}'s key {:?}: it was altered or forged",
                sig.server_name, sig.key_id
            )))
        }
    }

    async fn origin_key(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        server: &str,
        key_id: &str,
        via: Option<&Peer>,
    ) -> Result<Option<PublishedKey>, FedRefusal> {
        let find = |keys: &[PublishedKey]| keys.iter().find(|k| k.key_id == key_id).cloned();
        if server == self.cfg.server_name {
            return Ok(find(&self.snap.get().await?.published));
        }
        if let Some(p) = peers.by_server(team, server) {
            return self.peer_key(p, key_id).await;
        }
        if let Some(k) = self
            .vouched
            .lock()
            .await
            .get(&(server.to_string(), key_id.to_string()))
        {
            return Ok(Some(k.clone()));
        }
        let Some(via) = via.filter(|v| v.server_name.is_some()) else {
            return Ok(None);
        };
        let keys = match self.query_keys(via, server).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(via = %via.name, origin = %server, error = %e, "key query failed");
                return Ok(None);
            }
        };
        let mut vouched = self.vouched.lock().await;
        for k in &keys {
            vouched.insert((server.to_string(), k.key_id.clone()), k.clone());
        }
        Ok(find(&keys))
    }

    /// Asks a handshake peer which keys `server` publishes (as it knows them: its own, or
    /// those it pinned).
    pub async fn query_keys(
        &self,
        via: &Peer,
        server: &str,
    ) -> Result<Vec<PublishedKey>, FedError> {
        let (Some(base), Some(team)) = (via.peer_base_url.as_deref(), via.peer_team.as_deref())
        else {
            return Ok(Vec::new());
        };
        let body = serde_json::to_vec(&KeyQuery {
            server_name: server.to_string(),
        })
        .unwrap_or_default();
        let bytes = self
            .post_signed(&peering::keys_query_url(base, team), body)
            .await?;
        let answer: KeyQueryResponse = serde_json::from_slice(&bytes)
            .map_err(|e| FedError::BadAnswer(format!("not a key query answer: {e}")))?;
        if answer.server_name != server {
            return Err(FedError::BadAnswer(format!(
                "asked for {server:?}'s keys, got {:?}'s",
                answer.server_name
            )));
        }
        Ok(answer.keys)
    }

    /// What this server answers a key query about `server` from a peer of `team`: its own
    /// keys, or those pinned for its peer of that name (None: it knows no such server).
    pub async fn vouch(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        server: &str,
    ) -> Result<Option<Vec<PublishedKey>>, FedRefusal> {
        if server == self.cfg.server_name {
            return Ok(Some(self.published_keys().await?));
        }
        let Some(p) = peers.by_server(team, server) else {
            return Ok(None);
        };
        Ok(Some(self.pinned_keys(p.id).await?))
    }

    /// Whether a live grant lets `peer` do `permission` with events of type `ty`.
    pub async fn granted(
        &self,
        peer: uuid::Uuid,
        permission: GrantPermission,
        ty: &str,
    ) -> Result<bool, FedRefusal> {
        let now = Utc::now();
        Ok(self
            .snap
            .get()
            .await?
            .grants
            .get(&peer)
            .into_iter()
            .flatten()
            .any(|(g, scopes)| {
                g.allows(permission, now) && scopes.as_ref().is_some_and(|s| s.matches(ty))
            }))
    }

    /// Whether any grant (live or not) was ever given to `peer`.
    pub async fn has_grants(&self, peer: uuid::Uuid) -> Result<bool, FedRefusal> {
        Ok(self
            .snap
            .get()
            .await?
            .grants
            .get(&peer)
            .is_some_and(|g| !g.is_empty()))
    }

    /// Refuses (403 `not_granted`) an event of type `ty` from a sender without a live `send`
    /// grant for it: a handshake peer always, a Kite token sender only when grants were set
    /// for the peer of its name.
    pub async fn check_send(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        from: &Sender,
        ty: &str,
    ) -> Result<(), FedRefusal> {
        let peer = match from {
            Sender::Peer(p) => Some(p.id),
            Sender::Token(name) => {
                let p = peers
                    .by_team
                    .get(team)
                    .into_iter()
                    .flatten()
                    .find(|p| &p.peer.name == name)
                    .map(|p| p.peer.id);
                match p {
                    Some(id) if self.has_grants(id).await? => Some(id),
                    _ => None,
                }
            }
        };
        match peer {
            Some(id) if !self.granted(id, GrantPermission::Send, ty).await? => {
                Err(FedRefusal::Api(ApiError::new(
                    403,
                    "not_granted",
                    format!("no live send grant here covers events of type {ty:?}"),
                )))
            }
            _ => Ok(()),
        }
    }

    /// The event types a peer may pull (its live `backfill` grants' scopes), or None.
    pub async fn backfill_scopes(&self, peer: uuid::Uuid) -> Result<Option<ScopeSet>, FedRefusal> {
        let now = Utc::now();
        let scopes: Vec<String> = self
            .snap
            .get()
            .await?
            .grants
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|(g, _)| g.allows(GrantPermission::Backfill, now))
            .flat_map(|(g, _)| g.scopes.clone())
            .collect();
        if scopes.is_empty() {
            return Ok(None);
        }
        Ok(ScopeSet::compile(&scopes).ok())
    }
}

/// Who handed an event over.
#[derive(Debug, Clone)]
pub enum Sender {
    /// A handshake peer.
    Peer(Box<Peer>),
    /// A Kite token sender, by name.
    Token(String),
}

impl Federation {
    /// Asks a handshake peer for one page of its history.
    pub async fn backfill_page(
        &self,
        peer: &Peer,
        request: &kite_protocol::peering::BackfillRequest,
    ) -> Result<kite_protocol::peering::BackfillPage, FedError> {
        let (Some(base), Some(team)) = (peer.peer_base_url.as_deref(), peer.peer_team.as_deref())
        else {
            return Err(FedError::BadAnswer(
                "the peer was not made by invitation: it has no backfill endpoint".into(),
            ));
        };
        let body = serde_json::to_vec(request).unwrap_or_default();
        let bytes = self
            .post_signed(&peering::backfill_url(base, team), body)
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| FedError::BadAnswer(format!("not a backfill page: {e}")))
    }
}
