//! Accepting an invitation (`kite peer accept`, `POST /api/federation/invitations/accept`):
//! fetch the inviter's descriptor, record it as a `proposed` peer with its keys pinned, call
//! its accept endpoint signed with this server's key, and on its answer make the peer
//! `accepted` with the agreed scopes (or drop it when the inviter refused).

use kite_protocol::peering::{self, AcceptRequest, AcceptResponse, Invitation};
use kite_store::federation::NewHandshakePeer;
use kite_store::peers::Peer;
use kite_store::types::PeerStatus;
use kite_store::StoreError;

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
    /// Accepts `inv` for `team`: this side will send `scopes` (default: what the inviter
    /// sends) with `max_hops` (default 3). Answers the new peer, `accepted`.
    pub async fn accept_invitation(
        &self,
        team: &str,
        inv: &Invitation,
        scopes: Option<Vec<String>>,
        max_hops: Option<i32>,
    ) -> Result<Peer, AcceptError> {
        if inv.server_name == self.cfg.server_name {
            return Err(AcceptError::SelfPeering);
        }
        let theirs = self.fetch_descriptor(&inv.url).await?;
        if theirs.server_name != inv.server_name {
            return Err(AcceptError::WrongServer {
                named: inv.server_name.clone(),
                served: theirs.server_name,
            });
        }
        let ours = self.descriptor().await?;
        let max_hops = max_hops.unwrap_or(3);
        let proposed = self
            .store
            .create_handshake_peer(
                team,
                &NewHandshakePeer {
                    server_name: theirs.server_name.clone(),
                    base_url: inv.url.trim_end_matches('/').to_string(),
                    team: inv.team.clone(),
                    scopes: scopes.clone().unwrap_or_default(),
                    max_hops,
                    keys: theirs.keys.clone(),
                    status: PeerStatus::Proposed,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict => AcceptError::AlreadyPeered(theirs.server_name.clone()),
                e => e.into(),
            })?;
        self.invalidate().await;
        let request = AcceptRequest {
            token: inv.token.clone(),
            server: ours,
            team: team.to_string(),
            scopes,
            max_hops,
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let answer = match self
            .post_signed(&peering::accept_url(&inv.url, &inv.team), body)
            .await
        {
            Ok(bytes) => serde_json::from_slice::<AcceptResponse>(&bytes).map_err(|e| {
                FedError::BadAnswer(format!("the inviter's answer is not an acceptance: {e}"))
            }),
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(a) if a.server_name == theirs.server_name => a,
            Ok(a) => {
                self.store.drop_proposed_peer(proposed.id).await?;
                return Err(AcceptError::WrongServer {
                    named: theirs.server_name,
                    served: a.server_name,
                });
            }
            Err(e) => {
                self.store.drop_proposed_peer(proposed.id).await?;
                return Err(e.into());
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
}
