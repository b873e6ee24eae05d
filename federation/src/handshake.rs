//! Accepting an invitation (`kite peer accept`, `POST /api/federation/invitations/accept`):
//! fetch the inviter's descriptor, record it as a `proposed` peer with its keys pinned, call
//! its accept endpoint signed with this server's key, and on its answer make the peer
//! `accepted` (or drop it when the inviter refused).
//!
//! The terms are this side's own: what it sends is what its admin asked for (by default what
//! the invitation offers), and the inviter's answer may narrow them, never widen them; nor
//! may it say it sends more than its invitation offered. An answer that asks for more is
//! refused and nothing is kept.

use kite_store::federation::NewHandshakePeer;
use kite_store::peers::Peer;
use kite_store::types::PeerStatus;
use kite_store::StoreError;
use kite_wire::fed::hop_limit;
use kite_wire::peering::{
    self, AcceptRequest, AcceptResponse, Invitation, ServerDescriptor, Terms,
};

use crate::{FedError, Federation};

/// Why accepting failed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The invitation names this server.
    #[error("the invitation is this server's own")]
    SelfPeering,
    /// This team already peers with that server.
    #[error("this team already peers with {0}")]
    AlreadyPeered(String),
    /// The URL in the invitation serves another server.
    #[error("the invitation names server {named:?} but its URL serves {served:?}")]
    WrongServer {
        /// Who the invitation names.
        named: String,
        /// Who answered.
        served: String,
    },
    /// The inviter speaks no federation protocol version this build speaks.
    #[error("{server} speaks {theirs:?}; this server speaks {ours:?}: no version in common")]
    Protocol {
        /// The inviter.
        server: String,
        /// What it speaks.
        theirs: Vec<String>,
        /// What this build speaks.
        ours: Vec<String>,
    },
    /// The inviter's answer asks for more than this side's terms or its own invitation.
    #[error("the inviter's answer is refused: {0}")]
    Terms(String),
    /// Something on the way failed, or the inviter refused.
    #[error(transparent)]
    Fed(#[from] FedError),
}

impl From<StoreError> for AcceptError {
    fn from(e: StoreError) -> Self {
        AcceptError::Fed(FedError::Store(e))
    }
}

impl Federation {
    /// Accepts `inv` for `team`: this side will send `scopes` (default: what the invitation
    /// offers) with `max_hops` (default [`hop_limit::DEFAULT`]), or less if the inviter's answer narrows them.
    /// Answers the new peer, `accepted`.
    pub async fn accept_invitation(
        &self,
        team: &str,
        inv: &Invitation,
        scopes: Option<Vec<String>>,
        max_hops: Option<i32>,
        filters: Vec<kite_store::peers::Filter>,
        conduct: kite_store::peers::Conduct,
    ) -> Result<Peer, AcceptError> {
        if inv.server_name == self.cfg.server_name {
            return Err(AcceptError::SelfPeering);
        }
        let ours = Terms {
            scopes: scopes.unwrap_or_else(|| inv.offer.scopes.clone()),
            max_hops: max_hops.unwrap_or(hop_limit::DEFAULT),
        };
        ours.check()
            .map_err(|e| AcceptError::Terms(e.to_string()))?;
        let (theirs, version) = self.inviter(inv).await?;
        let ours_descriptor = self.descriptor().await?;
        let proposed = self
            .propose(team, inv, &theirs, &ours, (filters, conduct), version)
            .await?;
        let request = AcceptRequest {
            token: inv.token.clone(),
            server: ours_descriptor,
            team: team.into(),
            scopes: Some(ours.scopes.clone()),
            max_hops: ours.max_hops,
        };
        let answer = self
            .ask_inviter(inv, &request)
            .await
            .and_then(|a| agreed(a, &theirs.server_name, &ours, &inv.offer));
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.store.drop_proposed_peer(proposed.id).await?;
                return Err(e);
            }
        };
        let peer = self
            .store
            .confirm_handshake_peer(
                proposed.id,
                &answer.your_scopes,
                answer.your_max_hops,
                &answer.scopes,
            )
            .await?;
        Ok(peer)
    }

    /// The inviter's descriptor, if it is the server the invitation names, and the newest
    /// protocol version both servers speak.
    async fn inviter(
        &self,
        inv: &Invitation,
    ) -> Result<(ServerDescriptor, &'static str), AcceptError> {
        let theirs = self.fetch_descriptor(&inv.url).await?;
        if theirs.server_name != inv.server_name {
            return Err(AcceptError::WrongServer {
                named: inv.server_name.clone(),
                served: theirs.server_name,
            });
        }
        let Some(version) = peering::agree(&theirs.protocol_versions) else {
            return Err(AcceptError::Protocol {
                server: theirs.server_name,
                theirs: theirs.protocol_versions,
                ours: peering::PROTOCOL_VERSIONS
                    .iter()
                    .map(|v| v.to_string())
                    .collect(),
            });
        };
        Ok((theirs, version))
    }

    /// Records the inviter as a `proposed` peer of `team`, its keys pinned, that this side
    /// sends `ours` (already peered: [`AcceptError::AlreadyPeered`]).
    async fn propose(
        &self,
        team: &str,
        inv: &Invitation,
        theirs: &ServerDescriptor,
        ours: &Terms,
        (filters, conduct): (Vec<kite_store::peers::Filter>, kite_store::peers::Conduct),
        version: &str,
    ) -> Result<Peer, AcceptError> {
        let proposed = self
            .store
            .create_handshake_peer(
                team,
                &NewHandshakePeer {
                    server_name: theirs.server_name.clone(),
                    base_url: inv.url.trim_end_matches('/').to_string(),
                    team: inv.team.clone(),
                    scopes: ours.scopes.clone(),
                    max_hops: ours.max_hops,
                    filters,
                    conduct,
                    keys: theirs.keys.clone(),
                    status: PeerStatus::Proposed,
                    protocol_version: version.to_string(),
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict => AcceptError::AlreadyPeered(theirs.server_name.clone()),
                e => e.into(),
            })?;
        self.pinned.forget(Some(proposed.id));
        Ok(proposed)
    }

    /// Calls the inviter's accept endpoint with `request`, signed as this server, and reads
    /// its answer (scopes or hops no peering may agree are [`AcceptError::Terms`]).
    async fn ask_inviter(
        &self,
        inv: &Invitation,
        request: &AcceptRequest,
    ) -> Result<AcceptResponse, AcceptError> {
        let body = serde_json::to_vec(request).unwrap_or_default();
        let bytes = self
            .post_signed(
                &peering::accept_url(&inv.url, &inv.team),
                &inv.server_name,
                body,
                peering::MAX_ANSWER_BYTES,
            )
            .await?;
        peering::read::<AcceptResponse>(&bytes, peering::MAX_ANSWER_BYTES).map_err(|e| match e {
            // Scopes or hops no peering may agree: more than this side offered.
            peering::PeeringError::Terms(m) => AcceptError::Terms(m),
            e => AcceptError::Fed(FedError::BadAnswer(format!(
                "the inviter's answer is not an acceptance: {e}"
            ))),
        })
    }
}

/// The inviter's answer, if it keeps to the terms: it is the invited server, what it says
/// this side sends is within `ours`, and what it says it sends is within its `offer`.
fn agreed(
    a: AcceptResponse,
    server: &str,
    ours: &Terms,
    offer: &Terms,
) -> Result<AcceptResponse, AcceptError> {
    if a.server_name != server {
        return Err(AcceptError::WrongServer {
            named: server.to_string(),
            served: a.server_name,
        });
    }
    if !a.yours().within(ours) {
        return Err(AcceptError::Terms(format!(
            "it asks this side to send {:?} with max_hops {}, more than this side offered \
             ({:?}, max_hops {})",
            a.your_scopes, a.your_max_hops, ours.scopes, ours.max_hops
        )));
    }
    if !a.theirs().within(offer) {
        return Err(AcceptError::Terms(format!(
            "it says it sends {:?} with max_hops {}, more than its invitation offered ({:?}, \
             max_hops {})",
            a.scopes, a.max_hops, offer.scopes, offer.max_hops
        )));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(scopes: &[&str], max_hops: i32) -> Terms {
        Terms {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            max_hops,
        }
    }

    fn answer(yours: Terms, theirs: Terms) -> AcceptResponse {
        AcceptResponse {
            server_name: "a".into(),
            team: "t".into(),
            scopes: theirs.scopes,
            max_hops: theirs.max_hops,
            your_scopes: yours.scopes,
            your_max_hops: yours.max_hops,
        }
    }

    #[test]
    fn an_answer_may_narrow_the_terms_never_widen_them() {
        let ours = terms(&["stripe.*"], 2);
        let offer = terms(&["stripe.*", "github.*"], 3);
        assert!(agreed(answer(ours.clone(), offer.clone()), "a", &ours, &offer).is_ok());
        assert!(agreed(
            answer(ours.clone(), terms(&["github.*"], 1)),
            "a",
            &ours,
            &offer
        )
        .is_ok());
        for (yours, theirs) in [
            (terms(&["*"], 2), offer.clone()),
            (terms(&["stripe.*"], 1000), offer.clone()),
            (ours.clone(), terms(&["*"], 3)),
            (ours.clone(), terms(&["stripe.*"], 16)),
        ] {
            assert!(matches!(
                agreed(answer(yours, theirs), "a", &ours, &offer),
                Err(AcceptError::Terms(_))
            ));
        }
        assert!(matches!(
            agreed(answer(ours.clone(), offer.clone()), "b", &ours, &offer),
            Err(AcceptError::WrongServer { .. })
        ));
    }
}
