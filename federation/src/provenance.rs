//! Origin signatures and grants: signing an event where it enters the federation, proving
//! where an event a peer sends comes from ([`VerifiedEvent`]), and the `send` and `backfill`
//! grants a team gives its handshake peers.
//!
//! An event from a handshake peer is taken only when its origin proves it: it carries an
//! origin signature made by the server `kitefedorigin` names, with a key of that server's own
//! (this server's, the keys pinned for the origin when it is a peer of the team, else one
//! the forwarding peer vouches for, [`crate::keys::Vouched`]); its `kitefedchain` ends with
//! the peer that sent it and names the origin; `kitefedhops` is the chain's length. A
//! peer's word about another server counts only as a bounded, expiring vouch for the events
//! that peer forwards.

use chrono::Utc;
use kite_store::cache::PeerSnapshot;
use kite_store::peers::Peer;
use kite_store::types::GrantPermission;
use kite_wire::event::IncomingEvent;
use kite_wire::fed::{self, FedInfo};
use kite_wire::identity::PublicKey;
use kite_wire::ids::PeerId;
use kite_wire::peering::{self, KeyQuery, KeyQueryResponse, PublishedKey};
use kite_wire::provenance::{self, OriginSig, SigText};
use kite_wire::scope::ScopeSet;
use kite_wire::ApiError;
use kite_wire::Code;
use serde_json::{Map, Value};

use crate::keys::VouchKey;
use crate::{FedError, FedRefusal, Federation};

fn invalid_origin(m: impl Into<String>) -> FedRefusal {
    FedRefusal::Api(ApiError::new(Code::InvalidOriginSignature, m))
}

fn invalid_chain(m: impl Into<String>) -> FedRefusal {
    FedRefusal::Api(ApiError::new(Code::InvalidChain, m))
}

/// An event a handshake peer sent whose provenance was proven: signed by its origin with the
/// origin's own key, its chain ending with the peer that sent it. Only
/// [`Federation::verify_event`] makes one, and ingress stores a peer's events only as one.
#[derive(Debug)]
pub struct VerifiedEvent(IncomingEvent);

impl VerifiedEvent {
    /// The event, to store.
    pub fn into_event(self) -> IncomingEvent {
        self.0
    }
}

/// Where a key that checks an origin signature came from.
enum KeyFrom {
    /// This server's own, or pinned for a peer.
    Held,
    /// Vouched for by the forwarding peer (forgotten if it does not verify).
    Vouched(VouchKey),
}

impl Federation {
    /// The copy of a stored event sent to a handshake peer: the federation extensions
    /// advanced, and the origin signature: the one it came with, or, for an event entering
    /// the federation here, this server's. An event that came unsigned from a Kite token
    /// peer (which cannot sign) enters the kite federation here: this server vouches for it
    /// as its origin (`kitefedorigin` names it and it signs), and the chain keeps the servers
    /// it passed before, so loops are still found.
    pub async fn forward_signed(
        &self,
        rest: &str,
        info: &FedInfo,
        origin_sig: Option<&SigText>,
    ) -> Result<String, fed::FedError> {
        if let Some(sig) = origin_sig {
            let text = fed::forward_text(rest, info, &self.cfg.server_name)?;
            return fed::splice(&text, &sig.members());
        }
        let entering = FedInfo {
            origin: None,
            ..info.clone()
        };
        let text = fed::forward_text(rest, &entering, &self.cfg.server_name)?;
        let snap = self.snap.get().await.map_err(|e| fed::FedError {
            field: provenance::EXT_SIG,
            reason: format!("cannot read this server's key: {e}"),
        })?;
        provenance::sign_text(
            &text,
            &self.cfg.server_name,
            &snap.signing.key_id,
            &snap.signing.key,
        )
        .map_err(|e| fed::FedError {
            field: provenance::EXT_SIG,
            reason: e.to_string(),
        })
    }

    /// Proves where an event a handshake peer (`via`) sent comes from, or refuses it:
    /// 400 `invalid_chain` when its chain does not end with `via`, does not name its origin
    /// or its hops are not the chain's length; 401 `invalid_origin_signature` when it carries
    /// no origin signature, one made by another server than its origin, or one that does not
    /// verify with a key of the origin's own.
    pub async fn verify_event(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        via: &Peer,
        incoming: IncomingEvent,
        body: &[u8],
    ) -> Result<VerifiedEvent, FedRefusal> {
        let sender = via.server_name.as_deref().unwrap_or_default();
        let info = &incoming.fed;
        if info.chain.last().map(String::as_str) != Some(sender) {
            return Err(invalid_chain(format!(
                "kitefedchain must end with the server that sent the event ({sender:?})"
            )));
        }
        if info.hops as usize != info.chain.len() {
            return Err(invalid_chain(format!(
                "kitefedhops ({}) must be the length of kitefedchain ({})",
                info.hops,
                info.chain.len()
            )));
        }
        let Some(origin) = info.origin.as_deref().filter(|o| info.visited(o)) else {
            return Err(invalid_chain(
                "kitefedorigin must name a server of kitefedchain",
            ));
        };
        if incoming.origin_sig.is_none() {
            return Err(invalid_origin(format!(
                "an event from a peer carries its origin's signature (kitefedsig, \
                 kitefedsigkey by {origin:?})"
            )));
        }
        let event: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| invalid_origin(format!("the event is not a JSON object: {e}")))?;
        let sig = match provenance::read(&event) {
            Ok(Some(sig)) => sig,
            Ok(None) => return Err(invalid_origin("the event carries no origin signature")),
            Err(e) => return Err(invalid_origin(e.to_string())),
        };
        if sig.server_name != origin {
            return Err(invalid_origin(format!(
                "the event is signed by {:?}, not by its origin {origin:?}: only the origin \
                 proves an origin",
                sig.server_name
            )));
        }
        self.check_signature(team, peers, &event, &sig, Some(via))
            .await?;
        Ok(VerifiedEvent(incoming))
    }

    /// Checks the origin signature of an event (its JSON object as received) that carries
    /// one, from a sender that is no handshake peer (a Kite token sender): made by the server
    /// `origin` names, against this server's keys or those pinned for it. Refused 401
    /// `invalid_origin_signature` when another server signed, it does not verify or no key
    /// can be had.
    pub async fn verify_origin(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        event: &Map<String, Value>,
        origin: Option<&str>,
    ) -> Result<(), FedRefusal> {
        match provenance::read(event) {
            Ok(Some(sig)) if Some(sig.server_name.as_str()) != origin => {
                Err(invalid_origin(format!(
                    "the event is signed by {:?}, not by its origin {:?}",
                    sig.server_name,
                    origin.unwrap_or("(none)")
                )))
            }
            Ok(Some(sig)) => self.check_signature(team, peers, event, &sig, None).await,
            Ok(None) => Ok(()),
            Err(e) => Err(invalid_origin(e.to_string())),
        }
    }

    /// Checks `sig` over `event` with a key of its signer's own: this server's, the keys
    /// pinned for it as a peer of `team`, else (for an event `via` forwarded) one `via`
    /// vouches for. A vouched key that does not verify is forgotten, so a wrong vouch is
    /// corrected by the next event.
    async fn check_signature(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        event: &Map<String, Value>,
        sig: &OriginSig,
        via: Option<&Peer>,
    ) -> Result<(), FedRefusal> {
        let (key, from) = self
            .origin_key(team, peers, sig, via)
            .await?
            .ok_or_else(|| {
                invalid_origin(format!(
                    "no key {:?} of {:?} can be had here or from the forwarding peer",
                    sig.key_id, sig.server_name
                ))
            })?;
        let wrong = |m: String| {
            if let KeyFrom::Vouched(k) = &from {
                self.vouched.forget(k);
            }
            invalid_origin(m)
        };
        if key.valid_until.is_some_and(|t| t <= Utc::now()) {
            return Err(wrong(format!(
                "key {:?} of {:?} has expired",
                sig.key_id, sig.server_name
            )));
        }
        let public = PublicKey::from_base64(&key.public_key)
            .ok_or_else(|| wrong("the origin's key is not an Ed25519 key".into()))?;
        if provenance::verify(event, sig, &public) {
            Ok(())
        } else {
            Err(wrong(format!(
                "the event does not verify with {:?}'s key {:?}: it was altered or forged",
                sig.server_name, sig.key_id
            )))
        }
    }

    /// The key that checks `sig`, and where it came from; None when none can be had.
    async fn origin_key(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        sig: &OriginSig,
        via: Option<&Peer>,
    ) -> Result<Option<(PublishedKey, KeyFrom)>, FedRefusal> {
        let (server, key_id) = (sig.server_name.as_str(), sig.key_id.as_str());
        if server == self.cfg.server_name {
            let snap = self.snap.get().await?;
            let key = snap.published.iter().find(|k| k.key_id == key_id).cloned();
            return Ok(key.map(|k| (k, KeyFrom::Held)));
        }
        if let Some(p) = peers.by_server(team, server) {
            let key = self.peer_key(p, key_id).await?;
            return Ok(key.map(|k| (k, KeyFrom::Held)));
        }
        let Some(via) = via.filter(|v| v.server_name.is_some()) else {
            return Ok(None);
        };
        let vouch = VouchKey {
            team: team.to_string(),
            via: via.id,
            server: server.to_string(),
            key_id: key_id.to_string(),
        };
        if let Some(known) = self.vouched.get(&vouch) {
            return Ok(known.map(|k| (k, KeyFrom::Vouched(vouch))));
        }
        // A few queries a peer at once; what one of them learned serves the others.
        let permits = self.queries_of(via.id);
        let _permit = permits.acquire().await;
        if let Some(known) = self.vouched.get(&vouch) {
            return Ok(known.map(|k| (k, KeyFrom::Vouched(vouch))));
        }
        let key = match self.query_key(via, server, key_id).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(via = %via.name, origin = %server, error = %e, "key query failed");
                None
            }
        };
        self.vouched.put(vouch.clone(), key.clone());
        Ok(key.map(|k| (k, KeyFrom::Vouched(vouch))))
    }

    /// Asks a handshake peer for the key `key_id` of `server` (as it knows it: its own, or
    /// one it pinned); the answer is read up to [`peering::MAX_ANSWER_BYTES`].
    pub async fn query_key(
        &self,
        via: &Peer,
        server: &str,
        key_id: &str,
    ) -> Result<Option<PublishedKey>, FedError> {
        let (Some(base), Some(team), Some(name)) = (
            via.peer_base_url.as_deref(),
            via.peer_team.as_deref(),
            via.server_name.as_deref(),
        ) else {
            return Ok(None);
        };
        let body = serde_json::to_vec(&KeyQuery {
            server_name: server.to_string(),
            key_id: key_id.to_string(),
        })
        .unwrap_or_default();
        let bytes = self
            .post_signed(
                &peering::keys_query_url(base, team),
                name,
                body,
                peering::MAX_ANSWER_BYTES,
            )
            .await?;
        let answer: KeyQueryResponse = peering::read(&bytes, peering::MAX_ANSWER_BYTES)
            .map_err(|e| FedError::BadAnswer(e.to_string()))?;
        if answer.server_name != server {
            return Err(FedError::BadAnswer(format!(
                "asked for {server:?}'s key, got {:?}'s",
                answer.server_name
            )));
        }
        Ok(answer.keys.into_iter().find(|k| k.key_id == key_id))
    }

    /// What this server answers a key query from its peer `asker` of `team`: its own key of
    /// that id, or the key of that id pinned for its peer of that name, when that key signed
    /// an event this team sent the asker (or holds for it to pull, under a `backfill` grant);
    /// None otherwise. So the asker learns only what it saw already, not even whether the
    /// server is a peer here.
    pub async fn vouch(
        &self,
        team: &str,
        peers: &PeerSnapshot,
        asker: &Peer,
        query: &KeyQuery,
    ) -> Result<Option<PublishedKey>, FedRefusal> {
        if query.server_name == self.cfg.server_name {
            let keys = self.published_keys().await?;
            return Ok(keys.into_iter().find(|k| k.key_id == query.key_id));
        }
        let Some(p) = peers.by_server(team, &query.server_name) else {
            return Ok(None);
        };
        let Some(key) = self
            .pinned_keys(p.id)
            .await?
            .iter()
            .find(|k| k.key_id == query.key_id)
            .cloned()
        else {
            return Ok(None);
        };
        let sigkey = format!("{} {}", query.server_name, query.key_id);
        let may_pull = self.backfill_scopes(asker.id).await?.is_some();
        let seen = self
            .store
            .sent_signed_by(team, asker.id, &sigkey, may_pull)
            .await?;
        Ok(seen.then_some(key))
    }

    /// Whether a live grant lets `peer` do `permission` with events of type `ty`.
    pub async fn granted(
        &self,
        peer: PeerId,
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
    pub async fn has_grants(&self, peer: PeerId) -> Result<bool, FedRefusal> {
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
                    Code::NotGranted,
                    format!("no live send grant here covers events of type {ty:?}"),
                )))
            }
            _ => Ok(()),
        }
    }

    /// The event types a peer may pull (its live `backfill` grants' scopes), or None.
    pub async fn backfill_scopes(&self, peer: PeerId) -> Result<Option<ScopeSet>, FedRefusal> {
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
        request: &kite_wire::peering::BackfillRequest,
    ) -> Result<kite_wire::peering::BackfillPage, FedError> {
        let (Some(base), Some(team)) = (peer.peer_base_url.as_deref(), peer.peer_team.as_deref())
        else {
            return Err(FedError::BadAnswer(
                "the peer was not made by invitation: it has no backfill endpoint".into(),
            ));
        };
        let Some(name) = peer.server_name.as_deref() else {
            return Err(FedError::BadAnswer("the peer has no server name".into()));
        };
        let body = serde_json::to_vec(request).unwrap_or_default();
        let bytes = self
            .post_signed(
                &peering::backfill_url(base, team),
                name,
                body,
                peering::MAX_PAGE_READ_BYTES,
            )
            .await?;
        peering::read(&bytes, peering::MAX_PAGE_READ_BYTES)
            .map_err(|e| FedError::BadAnswer(e.to_string()))
    }
}
