//! The federation trust verbs: the instance's identity and its rotation, the team's policy,
//! invitations, and peering two instances by invitation.

use serde_json::Value;

use super::specs::{enc, Body};
use super::{ApiClient, ClientError, Reply};

impl ApiClient {
    /// The instance's server descriptor: `server_name`, `keys`, `protocol_versions`,
    /// `endpoints`.
    pub async fn identity(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/identity").await
    }

    /// Rotates the instance's identity key; answers the descriptor after it.
    pub async fn rotate_identity(&self) -> Result<Reply, ClientError> {
        self.post("/api/federation/identity/rotate", Value::Null)
            .await
    }

    /// The team's federation policy.
    pub async fn policy(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/policy").await
    }

    /// Changes the team's federation policy (a field left None keeps its value).
    pub async fn set_policy(
        &self,
        mode: Option<&str>,
        allowed_peers: Option<Vec<String>>,
        max_backfill: Option<u32>,
        min_signature_protocol: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let body = Body::default()
            .opt("default_mode", mode)
            .opt("allowed_peers", allowed_peers)
            .opt("max_backfill_events_per_request", max_backfill)
            .opt("min_signature_protocol", min_signature_protocol);
        self.put("/api/federation/policy", body.value()).await
    }

    /// Makes an invitation (what this side sends to whoever accepts it); the answer carries
    /// the invitation string (`invitation`, shown once), `id` and `expires_at`.
    pub async fn create_invitation(
        &self,
        scopes: &[String],
        max_hops: Option<u32>,
        ttl_secs: Option<u64>,
    ) -> Result<Reply, ClientError> {
        let body = Body::default()
            .opt("scopes", (!scopes.is_empty()).then(|| scopes.to_vec()))
            .opt("max_hops", max_hops)
            .opt("ttl", ttl_secs);
        self.post("/api/federation/invitations", body.value()).await
    }

    /// The team's invitations (never their tokens): `{"items": [...]}`.
    pub async fn list_invitations(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/invitations").await
    }

    /// Revokes an invitation.
    pub async fn delete_invitation(&self, id: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/federation/invitations/{}", enc(id)))
            .await
    }

    /// Accepts another server's invitation (what this side sends: `scopes`, default what the
    /// invitation offers); answers the new peer.
    pub async fn accept_invitation(
        &self,
        invitation: &str,
        scopes: &[String],
        max_hops: Option<u32>,
    ) -> Result<Reply, ClientError> {
        let body = Body::default()
            .set("invitation", invitation)
            .opt("scopes", (!scopes.is_empty()).then(|| scopes.to_vec()))
            .opt("max_hops", max_hops);
        self.post("/api/federation/invitations/accept", body.value())
            .await
    }
}

impl ApiClient {
    /// Gives a peer a grant (`permissions`: `send`, `backfill`) for `scopes` (empty: the
    /// API's default `*`), for `ttl_secs` (None: the API's 30 days) or until `expires_at`.
    pub async fn create_grant(
        &self,
        peer: &str,
        permissions: &[String],
        scopes: &[String],
        ttl_secs: Option<u64>,
        expires_at: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let body = Body::default()
            .set("permissions", permissions.to_vec())
            .opt("scopes", (!scopes.is_empty()).then(|| scopes.to_vec()))
            .opt("ttl", ttl_secs)
            .opt("expires_at", expires_at);
        self.post(
            &format!("/api/federation/peers/{}/grants", enc(peer)),
            body.value(),
        )
        .await
    }

    /// A peer's grants: `{"items": [...]}`.
    pub async fn list_grants(&self, peer: &str) -> Result<Reply, ClientError> {
        self.get(&format!("/api/federation/peers/{}/grants", enc(peer)))
            .await
    }

    /// Deletes a grant of a peer.
    pub async fn delete_grant(&self, peer: &str, grant: &str) -> Result<Reply, ClientError> {
        self.delete(&format!(
            "/api/federation/peers/{}/grants/{}",
            enc(peer),
            enc(grant)
        ))
        .await
    }

    /// Pulls a peer's history: `since` an RFC 3339 time or the peer's cursor, at most
    /// `limit` events, of `types` (empty: every type granted). Answers `{"fetched",
    /// "stored", "duplicates", "rejected", "pages"}`.
    pub async fn backfill(
        &self,
        peer: &str,
        since: Option<&str>,
        limit: Option<u32>,
        types: &[String],
    ) -> Result<Reply, ClientError> {
        let since = since.map(|s| match s.parse::<i64>() {
            Ok(cursor) => Value::from(cursor),
            Err(_) => Value::from(s),
        });
        let body = Body::default()
            .opt("since", since)
            .opt("limit", limit)
            .opt("types", (!types.is_empty()).then(|| types.to_vec()));
        self.post(
            &format!("/api/federation/peers/{}/backfill", enc(peer)),
            body.value(),
        )
        .await
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
    let inv = inviter
        .create_invitation(&scopes, Some(max_hops), None)
        .await?;
    let text = inv["invitation"].as_str().unwrap_or_default().to_string();
    let on_accepter = accepter
        .accept_invitation(&text, &scopes, Some(max_hops))
        .await?;
    let accepter_name = accepter.identity().await?["server_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let on_inviter = inviter
        .list_peers()
        .await?
        .items()
        .into_iter()
        .find(|p| p["server_name"] == accepter_name.as_str())
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((
        on_inviter,
        on_accepter["id"].as_str().unwrap_or_default().to_string(),
    ))
}
