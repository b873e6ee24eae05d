//! How a hook request proves who sent it: a handshake peer or a trusted sender on `kite`,
//! a configured source by its provider's signature, or nothing (an unsigned hook).

use std::sync::Arc;

use axum::http::HeaderMap;
use kite_federation::provenance::Sender;
use kite_federation::{Inbound, ReplayClaim};
use kite_store::cache::{PeerSnapshot, SenderSnapshot};
use kite_wire::provider::{self, Scheme};
use kite_wire::signature::{self, KEY_ID_HEADER};
use kite_wire::{ApiError, Code};

use super::{bearer, Intake};
use crate::ApiErr;

/// The authenticated sender of a federated request.
pub(super) struct Federated {
    /// The key of its rate bucket.
    pub(super) limit_key: String,
    /// Who it is.
    pub(super) who: Sender,
    /// The peers it was checked against.
    pub(super) peers: Arc<PeerSnapshot>,
}

impl Intake<'_> {
    /// Authenticates a request to `kite`, if the team's policy is open: a handshake peer by
    /// its identity signature (its claim on the request put in `claim`), else a trusted
    /// sender by its token.
    pub(super) async fn federated_sender(
        &self,
        claim: &mut Option<ReplayClaim>,
    ) -> Result<Federated, ApiErr> {
        // A closed policy refuses every federation request, existing peers' included.
        self.st.fed.check_open(self.call.team).await?;
        let peers = self.st.peers.get().await?;
        let (limit_key, who) = if kite_wire::identity::claimed(self.headers).is_some() {
            self.handshake_peer(&peers, claim).await?
        } else {
            self.trusted_sender().await?
        };
        Ok(Federated {
            limit_key,
            who,
            peers,
        })
    }

    /// A handshake peer: signed for this server, method and path with its identity key,
    /// checked against its pinned keys, taken once.
    async fn handshake_peer(
        &self,
        peers: &PeerSnapshot,
        claim: &mut Option<ReplayClaim>,
    ) -> Result<(String, Sender), ApiErr> {
        let inbound = Inbound {
            method: self.call.method,
            path: self.call.path,
            headers: self.headers,
        };
        let verified = self
            .st
            .fed
            .verify_peer(self.call.team, peers, &inbound, self.body)
            .await
            .map_err(|e| self.anonymous(e.into()))?;
        *claim = Some(verified.claim);
        let peer = verified.peer;
        Ok((peer.id.to_string(), Sender::Peer(Box::new(peer))))
    }

    /// A trusted sender, if the team's policy takes tokens and admits its name.
    async fn trusted_sender(&self) -> Result<(String, Sender), ApiErr> {
        let team = self.call.team;
        let (id, name) =
            authenticate_sender(self.snapshot, team, self.headers, self.body, self.now)
                .map_err(|e| self.anonymous(e))?;
        self.st.fed.check_tokens_allowed(team).await?;
        // The policy holds a sender to its name, as it does a handshake peer.
        self.st.fed.check_admitted(team, &name).await?;
        Ok((id, Sender::Token(name)))
    }

    /// Authenticates a request to a source other than `kite`: a configured source by its
    /// provider's signature (answering its scheme), else an unsigned hook unless this
    /// instance requires signed ones; each charged to its rate bucket.
    pub(super) async fn hook_scheme(&self) -> Result<Option<Scheme>, ApiErr> {
        let (st, team, source) = (self.st, self.call.team, self.call.source);
        if let Some(src) = self.snapshot.source(team, source) {
            let s = src.scheme;
            provider::verify(
                s,
                &src.secrets(),
                src.header.as_deref(),
                self.headers,
                self.body,
                self.now,
            )
            .map_err(|e| self.anonymous(ApiErr::from(e)))?;
            st.team_limit.check(team)?;
            return Ok(Some(s));
        }
        if st.cfg.require_signed_hooks {
            return Err(self.anonymous(ApiErr(ApiError::new(
                Code::SignatureRequired,
                format!("source {source:?} has no signature configuration and this instance requires signed hooks"),
            ))));
        }
        // An unsigned hook proves nothing about its sender: it has a bucket of its own, so
        // traffic to it never spends the rate of the team's signed hooks; one bucket for
        // every name that is not a provider's, so junk names make no new buckets.
        let label = st.source_label(team, source).await;
        st.team_limit.check(&format!("{team}/{label}"))?;
        Ok(None)
    }
}

/// Finds the trusted sender (by `X-Kite-Key-Id`, else by bearer token, else among those
/// whose tokens the request names by hint, `X-Kite-Token-Hints`, whichever's token signs its
/// `webhook-signature`: a kite sender signs with its outbound and inbound tokens and carries
/// one as its bearer) and checks its signature: Standard Webhooks headers, or the body-only
/// `X-Kite-Signature` if the sender is marked `legacy_signature`.
fn authenticate_sender(
    snapshot: &SenderSnapshot,
    team: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(String, String), ApiErr> {
    let unknown = |m: &str| ApiErr(ApiError::new(Code::UnknownSender, m));
    let key_id = headers
        .get(KEY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let hints = signature::token_hints(headers);
    let signed_by = || {
        snapshot
            .by_hints(team, &hints)
            .find(|s| signature::verify_federation(&s.secrets(), false, headers, body, now).is_ok())
    };
    let sender = match (key_id, bearer(headers)) {
        (Some(k), _) => snapshot
            .by_key_id(team, k)
            .or_else(signed_by)
            .ok_or_else(|| unknown("X-Kite-Key-Id names no trusted sender"))?,
        (None, Some(b)) => snapshot.find(team, b).or_else(signed_by).ok_or_else(|| {
            unknown("neither the bearer token nor the signature is a trusted sender's")
        })?,
        (None, None) => signed_by().ok_or_else(|| {
            unknown(
                "no trusted sender's token signs this request (name a key with X-Kite-Key-Id, \
                 send a bearer token, or name the tokens signed with in X-Kite-Token-Hints)",
            )
        })?,
    };
    let id = (sender.id.to_string(), sender.name.clone());
    signature::verify_federation(
        &sender.secrets(),
        sender.legacy_signature,
        headers,
        body,
        now,
    )
    .map(|()| id)
    .map_err(ApiErr::from)
}
