//! One method a verb of the admin API: keys, tokens, trusted senders, peers, sources, the
//! outbox and event listings, and teams.

use serde_json::{json, Value};

use super::specs::{enc, query, Body};
use super::{
    ApiClient, ClientError, OutboxFilter, PeerChanges, PeerSpec, Reply, SenderChanges, SenderSpec,
    SourceSpec,
};

impl ApiClient {
    // API keys.

    /// Mints an API key with `permission` (`read` by default) and an optional label; the
    /// answer carries the key itself (`key`, shown once).
    pub async fn create_key(
        &self,
        permission: Option<&str>,
        label: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let body = Body::default()
            .opt("permission", permission)
            .opt("label", label.filter(|l| !l.is_empty()));
        self.post("/api/keys", body.value()).await
    }

    /// The team's API keys (prefixes only): `{"items": [...]}`.
    pub async fn list_keys(&self) -> Result<Reply, ClientError> {
        self.get("/api/keys").await
    }

    /// Revokes an API key by id.
    pub async fn revoke_key(&self, id: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/keys/{}", enc(id))).await
    }

    // Federation tokens.

    /// Mints a federation token with an optional label; the answer carries the secret
    /// (`token`, shown once).
    pub async fn create_token(&self, label: Option<&str>) -> Result<Reply, ClientError> {
        let body = Body::default().opt("label", label.filter(|l| !l.is_empty()));
        self.post("/api/federation/tokens", body.value()).await
    }

    /// Mints a federation token on this instance; answers the secret (shown once).
    pub async fn mint_token(&self, label: &str) -> Result<String, ClientError> {
        let v = self.create_token(Some(label)).await?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    }

    /// The team's federation tokens (labels only): `{"items": [...]}`.
    pub async fn list_tokens(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/tokens").await
    }

    // Trusted senders.

    /// Trusts a sender; answers the sender.
    pub async fn create_sender(&self, s: &SenderSpec) -> Result<Reply, ClientError> {
        let body = Body::default()
            .set("name", s.name.as_str())
            .set("inbound_token", s.token.as_str())
            .opt("key_id", s.key_id.as_deref())
            .opt("legacy_signature", s.legacy_signature.then_some(true));
        self.post("/api/federation/trusted-senders", body.value())
            .await
    }

    /// Trusts a sender named `name` holding `token`; answers the sender.
    pub async fn trust_sender(&self, name: &str, token: &str) -> Result<Reply, ClientError> {
        self.create_sender(&SenderSpec {
            name: name.to_string(),
            token: token.to_string(),
            ..SenderSpec::default()
        })
        .await
    }

    /// The team's trusted senders: `{"items": [...]}`.
    pub async fn list_senders(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/trusted-senders").await
    }

    /// Changes a trusted sender; answers it.
    pub async fn update_sender(&self, id: &str, c: &SenderChanges) -> Result<Reply, ClientError> {
        let body = Body::default()
            .opt("name", c.name.as_deref())
            .opt("inbound_token", c.token.as_deref())
            .opt("legacy_signature", c.legacy_signature);
        self.patch(
            &format!("/api/federation/trusted-senders/{}", enc(id)),
            body.value(),
        )
        .await
    }

    /// Deletes a trusted sender.
    pub async fn delete_sender(&self, id: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/federation/trusted-senders/{}", enc(id)))
            .await
    }

    // Peers.

    /// Creates a peer; answers it.
    pub async fn add_peer(&self, p: &PeerSpec) -> Result<Reply, ClientError> {
        let body = Body::default()
            .set("name", p.name.as_str())
            .set("peer_hook_url", p.url.as_str())
            .set("outbound_token", p.token.as_str())
            .opt("scopes", (!p.scopes.is_empty()).then(|| p.scopes.clone()))
            .opt("max_hops", p.max_hops)
            .opt("key_id", p.key_id.as_deref())
            .opt("status", p.status.as_deref())
            .opt("inbound_token", p.inbound_token.as_deref());
        self.post("/api/federation/peers", body.value()).await
    }

    /// Creates a peer; answers its id.
    pub async fn create_peer(
        &self,
        name: &str,
        url: &str,
        token: &str,
        scopes: &[&str],
        max_hops: u32,
    ) -> Result<String, ClientError> {
        let v = self
            .add_peer(&PeerSpec {
                name: name.to_string(),
                url: url.to_string(),
                token: token.to_string(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                max_hops: Some(max_hops),
                ..PeerSpec::default()
            })
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// The team's peers with their health and backlog: `{"items": [...]}`.
    pub async fn list_peers(&self) -> Result<Reply, ClientError> {
        self.get("/api/federation/peers").await
    }

    /// One peer with its health and backlog.
    pub async fn get_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.get(&format!("/api/federation/peers/{}", enc(id)))
            .await
    }

    /// Changes a peer; answers it.
    pub async fn update_peer(&self, id: &str, c: &PeerChanges) -> Result<Reply, ClientError> {
        self.patch(&format!("/api/federation/peers/{}", enc(id)), c.body())
            .await
    }

    /// Pauses a peer: its deliveries wait in its queue.
    pub async fn pause_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.set_peer_status(id, "paused").await
    }

    /// Resumes a paused peer: its deliveries flow again.
    pub async fn resume_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.set_peer_status(id, "active").await
    }

    /// Refreshes a handshake peer: its descriptor fetched again and its keys pinned anew
    /// (under the rules of key validity); answers the peer with its keys.
    pub async fn refresh_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.post(
            &format!("/api/federation/peers/{}/refresh", enc(id)),
            Value::Object(Default::default()),
        )
        .await
    }

    /// Revokes a peer: nothing is routed to it and its requests are refused.
    pub async fn revoke_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.set_peer_status(id, "revoked").await
    }

    async fn set_peer_status(&self, id: &str, status: &str) -> Result<Reply, ClientError> {
        let changes = PeerChanges {
            status: Some(status.to_string()),
            ..PeerChanges::default()
        };
        self.update_peer(id, &changes).await
    }

    /// Deletes a peer (its pending rows are cancelled): `{"deleted", "cancelled"}`.
    pub async fn delete_peer(&self, id: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/federation/peers/{}", enc(id)))
            .await
    }

    /// Puts up to `limit` (API default 1,000) of a peer's dead rows back in line:
    /// `{"replayed": N}`.
    pub async fn replay_dead(&self, id: &str, limit: Option<u32>) -> Result<Reply, ClientError> {
        let body = Body::default().opt("limit", limit);
        self.post(
            &format!("/api/federation/peers/{}/replay-dead", enc(id)),
            body.value(),
        )
        .await
    }

    // Signed sources.

    /// Configures a signed provider source; answers it.
    pub async fn create_source(&self, s: &SourceSpec) -> Result<Reply, ClientError> {
        let body = Body::default()
            .set("name", s.name.as_str())
            .set("scheme", s.scheme.as_str())
            .set("secret", s.secret.as_str())
            .opt("header", s.header.as_deref());
        self.post("/api/sources", body.value()).await
    }

    /// The team's signed sources: `{"items": [...]}`.
    pub async fn list_sources(&self) -> Result<Reply, ClientError> {
        self.get("/api/sources").await
    }

    /// Gives a source a new secret (the old one stays valid for the overlap); answers it.
    pub async fn rotate_source(&self, name: &str, secret: &str) -> Result<Reply, ClientError> {
        self.post(
            &format!("/api/sources/{}/rotate", enc(name)),
            json!({ "secret": secret }),
        )
        .await
    }

    /// Removes a source's signature configuration.
    pub async fn delete_source(&self, name: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/sources/{}", enc(name))).await
    }

    // Listings.

    /// One page of the outbox: `{"items": [...], "next_cursor": N | null}`.
    pub async fn list_outbox(&self, f: &OutboxFilter) -> Result<Reply, ClientError> {
        let query = query(&[
            ("peer_id", f.peer_id.clone()),
            ("status", f.status.clone()),
            ("limit", f.limit.map(|n| n.to_string())),
            ("cursor", f.cursor.map(|n| n.to_string())),
        ]);
        self.get(&format!("/api/federation/outbox{query}")).await
    }

    /// One page of stored events with a seq above `after`:
    /// `{"items": [{"seq", "source", "received_at", "event"}], "next_cursor": N | null}`.
    pub async fn list_events(
        &self,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Reply, ClientError> {
        let query = query(&[
            ("after", after.map(|n| n.to_string())),
            ("limit", limit.map(|n| n.to_string())),
        ]);
        self.get(&format!("/api/events{query}")).await
    }

    /// The stored event with sequence number `seq`, if there is one.
    pub async fn event_by_seq(&self, seq: i64) -> Result<Option<Reply>, ClientError> {
        if seq < 1 {
            return Ok(None);
        }
        let page = self.list_events(Some(seq - 1), Some(1)).await?;
        Ok(page.items().into_iter().find(|e| e["seq"] == seq))
    }

    /// Every stored event whose CloudEvent id is `id` (and, when given, whose hook source is
    /// `source`), in seq order. Reads the whole listing, a page of 1,000 at a time.
    pub async fn events_with_id(
        &self,
        id: &str,
        source: Option<&str>,
    ) -> Result<Vec<Reply>, ClientError> {
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let page = self.list_events(Some(after), Some(1000)).await?;
            found.extend(
                page.items()
                    .into_iter()
                    .filter(|e| e["event"]["id"] == id && source.is_none_or(|s| e["source"] == s)),
            );
            match page["next_cursor"].as_i64() {
                Some(next) if next > after => after = next,
                _ => return Ok(found),
            }
        }
    }

    // Teams (with the operator key).

    /// Creates a team; the answer carries its first admin key (`admin_key`, shown once).
    pub async fn create_team(&self, id: &str) -> Result<Reply, ClientError> {
        self.post("/api/teams", json!({ "id": id })).await
    }

    /// The instance's teams: `{"items": [{"id", "created_at"}]}`.
    pub async fn list_teams(&self) -> Result<Reply, ClientError> {
        self.get("/api/teams").await
    }

    /// Deletes a team.
    pub async fn delete_team(&self, id: &str) -> Result<Reply, ClientError> {
        self.delete(&format!("/api/teams/{}", enc(id))).await
    }
}
