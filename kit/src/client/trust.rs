//! The federation trust verbs: the instance's identity and its rotation, the team's policy,
//! invitations, grants and backfill, and peering two instances by invitation.

use kite_api::common::{Deleted, Items};
use kite_api::grants::{Backfill, Backfilled, Grant, NewGrant};
use kite_api::invitations::{AcceptInvitation, CreatedInvitation, InvitationInfo, NewInvitation};
use kite_api::operational::{OperationalEndpoint, OperationalEndpointSet, PutOperationalEndpoint};
use kite_api::peers::PeerView;
use kite_api::policy::{IdentityView, Policy, PolicyPatch};
use kite_wire::peering::Invitation;
use reqwest::Method;

use super::specs::enc;
use super::{Answered, ApiClient, ClientError};

impl ApiClient {
    /// The instance's server descriptor and its next key rotation.
    pub async fn identity(&self) -> Result<Answered<IdentityView>, ClientError> {
        self.typed(Method::GET, "/api/federation/identity").await
    }

    /// Rotates the instance's identity key; answers the descriptor after it.
    pub async fn rotate_identity(&self) -> Result<Answered<IdentityView>, ClientError> {
        self.typed(Method::POST, "/api/federation/identity/rotate")
            .await
    }

    /// The team's federation policy.
    pub async fn policy(&self) -> Result<Answered<Policy>, ClientError> {
        self.typed(Method::GET, "/api/federation/policy").await
    }

    /// Changes the team's federation policy (a field left None keeps its value).
    pub async fn set_policy(&self, patch: &PolicyPatch) -> Result<Answered<Policy>, ClientError> {
        self.send(Method::PUT, "/api/federation/policy", Some(patch))
            .await
    }

    /// Sets the team's operational endpoint; the answer carries its secret when this made it.
    pub async fn set_operational_endpoint(
        &self,
        url: &str,
    ) -> Result<Answered<OperationalEndpointSet>, ClientError> {
        let body = PutOperationalEndpoint {
            url: url.to_string(),
        };
        self.send(Method::PUT, "/api/operational-endpoint", Some(&body))
            .await
    }

    /// The team's operational endpoint and its deliveries.
    pub async fn operational_endpoint(&self) -> Result<Answered<OperationalEndpoint>, ClientError> {
        self.typed(Method::GET, "/api/operational-endpoint").await
    }

    /// Removes the team's operational endpoint.
    pub async fn delete_operational_endpoint(&self) -> Result<Answered<Deleted>, ClientError> {
        self.typed(Method::DELETE, "/api/operational-endpoint")
            .await
    }

    /// Makes an invitation (what this side sends to whoever accepts it); the answer carries
    /// the invitation string (`invitation`, shown once).
    pub async fn create_invitation(
        &self,
        new: &NewInvitation,
    ) -> Result<Answered<CreatedInvitation>, ClientError> {
        self.send(Method::POST, "/api/federation/invitations", Some(new))
            .await
    }

    /// The team's invitations (never their tokens).
    pub async fn list_invitations(&self) -> Result<Answered<Items<InvitationInfo>>, ClientError> {
        self.typed(Method::GET, "/api/federation/invitations").await
    }

    /// Revokes an invitation.
    pub async fn delete_invitation(&self, id: &str) -> Result<Answered<Deleted>, ClientError> {
        let path = format!("/api/federation/invitations/{}", enc(id));
        self.typed(Method::DELETE, &path).await
    }

    /// Accepts another server's invitation; answers the new peer.
    pub async fn accept_invitation(
        &self,
        accept: &AcceptInvitation,
    ) -> Result<Answered<PeerView>, ClientError> {
        let path = "/api/federation/invitations/accept";
        self.send(Method::POST, path, Some(accept)).await
    }

    /// Gives a peer a grant; answers it.
    pub async fn create_grant(
        &self,
        peer: &str,
        grant: &NewGrant,
    ) -> Result<Answered<Grant>, ClientError> {
        let path = format!("/api/federation/peers/{}/grants", enc(peer));
        self.send(Method::POST, &path, Some(grant)).await
    }

    /// A peer's grants.
    pub async fn list_grants(&self, peer: &str) -> Result<Answered<Items<Grant>>, ClientError> {
        let path = format!("/api/federation/peers/{}/grants", enc(peer));
        self.typed(Method::GET, &path).await
    }

    /// Deletes a grant of a peer.
    pub async fn delete_grant(
        &self,
        peer: &str,
        grant: &str,
    ) -> Result<Answered<Deleted>, ClientError> {
        let path = format!("/api/federation/peers/{}/grants/{}", enc(peer), enc(grant));
        self.typed(Method::DELETE, &path).await
    }

    /// Pulls a peer's history; answers what was fetched and stored.
    pub async fn backfill(
        &self,
        peer: &str,
        b: &Backfill,
    ) -> Result<Answered<Backfilled>, ClientError> {
        let path = format!("/api/federation/peers/{}/backfill", enc(peer));
        self.send(Method::POST, &path, Some(b)).await
    }
}

/// Peers two instances by invitation: `inviter` invites (sending `scopes` to the other),
/// `accepter` accepts (sending the same scopes back). Answers the peer ids on the inviter
/// and on the accepter.
pub async fn peer_by_invitation(
    inviter: &ApiClient,
    accepter: &ApiClient,
    scopes: &[&str],
    max_hops: u32,
) -> Result<(String, String), ClientError> {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let max_hops = i32::try_from(max_hops).unwrap_or(i32::MAX);
    let inv = inviter
        .create_invitation(&NewInvitation {
            scopes: scopes.clone(),
            max_hops,
            ..NewInvitation::default()
        })
        .await?;
    let invitation = Invitation::decode(&inv.invitation).map_err(|e| ClientError::Decode {
        url: inviter.base().to_owned(),
        reason: e.to_string(),
    })?;
    let on_accepter = accepter
        .accept_invitation(&AcceptInvitation {
            invitation,
            scopes: Some(scopes),
            max_hops: Some(max_hops),
            filters: Vec::new(),
            ordering_key: None,
            on_dead: Default::default(),
            delivery: Default::default(),
        })
        .await?;
    let accepter_name = accepter.identity().await?.value.descriptor.server_name;
    let on_inviter = inviter
        .list_peers()
        .await?
        .value
        .items
        .into_iter()
        .find(|p| p.peer.server_name.as_deref() == Some(accepter_name.as_str()))
        .map(|p| p.peer.id.to_string())
        .unwrap_or_default();
    Ok((on_inviter, on_accepter.peer.id.to_string()))
}
