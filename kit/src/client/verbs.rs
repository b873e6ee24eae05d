//! One method a verb of the admin API: keys, tokens, trusted senders, peers, sources, the
//! outbox and event listings, and teams. Each sends the request type of `kite_api` and
//! answers its answer type, with the text the instance wrote.

use kite_api::common::{Deleted, Items, Page};
use kite_api::events::{EventItem, EventParams};
use kite_api::keys::{ApiKeyInfo, CreatedKey, NewKey};
use kite_api::outbox::{OutboxEntry, OutboxParams, ReplayFilter};
use kite_api::peers::{NewPeer, Peer, PeerPatch, PeerStats, PeerView, ReplayDead, Replayed};
use kite_api::senders::{NewSender, Sender, SenderPatch};
use kite_api::sources::{NewSource, Rotation, Source, SourceList};
use kite_api::teams::{CreatedTeam, NewTeam, Team};
use kite_api::tokens::{CreatedToken, NewToken, TokenInfo};
use kite_api::types::{PeerStatus, Permission};
use reqwest::Method;

use super::specs::enc;
use super::{Answered, ApiClient, ClientError};

impl ApiClient {
    // API keys.

    /// Mints an API key with `permission` and an optional label; the answer carries the key
    /// itself (`key`, shown once).
    pub async fn create_key(
        &self,
        permission: Permission,
        label: &str,
    ) -> Result<Answered<CreatedKey>, ClientError> {
        let body = NewKey {
            label: label.to_owned(),
            permission,
        };
        self.send(Method::POST, "/api/keys", Some(&body)).await
    }

    /// The team's API keys (prefixes only).
    pub async fn list_keys(&self) -> Result<Answered<Items<ApiKeyInfo>>, ClientError> {
        self.typed(Method::GET, "/api/keys").await
    }

    /// Revokes an API key by id.
    pub async fn revoke_key(&self, id: &str) -> Result<Answered<ApiKeyInfo>, ClientError> {
        self.typed(Method::DELETE, &format!("/api/keys/{}", enc(id)))
            .await
    }

    // Federation tokens.

    /// Mints a federation token with an optional label; the answer carries the secret
    /// (`token`, shown once).
    pub async fn create_token(&self, label: &str) -> Result<Answered<CreatedToken>, ClientError> {
        let body = NewToken {
            label: label.to_owned(),
        };
        self.send(Method::POST, "/api/federation/tokens", Some(&body))
            .await
    }

    /// Mints a federation token on this instance; answers the secret (shown once).
    pub async fn mint_token(&self, label: &str) -> Result<String, ClientError> {
        Ok(self.create_token(label).await?.value.token)
    }

    /// The team's federation tokens (labels only).
    pub async fn list_tokens(&self) -> Result<Answered<Items<TokenInfo>>, ClientError> {
        self.typed(Method::GET, "/api/federation/tokens").await
    }

    // Trusted senders.

    /// Trusts a sender; answers the sender.
    pub async fn create_sender(&self, s: &NewSender) -> Result<Answered<Sender>, ClientError> {
        self.send(Method::POST, "/api/federation/trusted-senders", Some(s))
            .await
    }

    /// Trusts a sender named `name` holding `token`; answers the sender.
    pub async fn trust_sender(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Answered<Sender>, ClientError> {
        self.create_sender(&NewSender {
            name: name.to_owned(),
            inbound_token: token.to_owned(),
            key_id: None,
            legacy_signature: false,
        })
        .await
    }

    /// The team's trusted senders.
    pub async fn list_senders(&self) -> Result<Answered<Items<Sender>>, ClientError> {
        self.typed(Method::GET, "/api/federation/trusted-senders")
            .await
    }

    /// Changes a trusted sender; answers it.
    pub async fn update_sender(
        &self,
        id: &str,
        c: &SenderPatch,
    ) -> Result<Answered<Sender>, ClientError> {
        let path = format!("/api/federation/trusted-senders/{}", enc(id));
        self.send(Method::PATCH, &path, Some(c)).await
    }

    /// Deletes a trusted sender.
    pub async fn delete_sender(&self, id: &str) -> Result<Answered<Deleted>, ClientError> {
        let path = format!("/api/federation/trusted-senders/{}", enc(id));
        self.typed(Method::DELETE, &path).await
    }

    // Peers.

    /// Creates a peer; answers it.
    pub async fn add_peer(&self, p: &NewPeer) -> Result<Answered<Peer>, ClientError> {
        self.send(Method::POST, "/api/federation/peers", Some(p))
            .await
    }

    /// Creates an active peer; answers its id.
    pub async fn create_peer(
        &self,
        name: &str,
        url: &str,
        token: &str,
        scopes: &[&str],
        max_hops: u32,
    ) -> Result<String, ClientError> {
        let peer = self
            .add_peer(&NewPeer {
                ordering_key: None,
                on_dead: Default::default(),
                delivery: Default::default(),
                content_mode: Default::default(),
                name: name.to_owned(),
                peer_hook_url: url.to_owned(),
                outbound_token: token.to_owned(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                filters: Vec::new(),
                max_hops: i32::try_from(max_hops).unwrap_or(i32::MAX),
                status: PeerStatus::Active,
                key_id: None,
                inbound_token: None,
            })
            .await?;
        Ok(peer.id.to_string())
    }

    /// The team's peers with their health and backlog.
    pub async fn list_peers(&self) -> Result<Answered<Items<PeerView>>, ClientError> {
        self.typed(Method::GET, "/api/federation/peers").await
    }

    /// One peer with its health and backlog.
    pub async fn get_peer(&self, id: &str) -> Result<Answered<PeerView>, ClientError> {
        self.typed(Method::GET, &format!("/api/federation/peers/{}", enc(id)))
            .await
    }

    /// Changes a peer; answers it.
    pub async fn update_peer(
        &self,
        id: &str,
        c: &PeerPatch,
    ) -> Result<Answered<Peer>, ClientError> {
        let path = format!("/api/federation/peers/{}", enc(id));
        self.send(Method::PATCH, &path, Some(c)).await
    }

    /// Pauses a peer: its deliveries wait in its queue.
    pub async fn pause_peer(&self, id: &str) -> Result<Answered<Peer>, ClientError> {
        self.set_peer_status(id, PeerStatus::Paused).await
    }

    /// Resumes a paused peer: its deliveries flow again.
    pub async fn resume_peer(&self, id: &str) -> Result<Answered<Peer>, ClientError> {
        self.set_peer_status(id, PeerStatus::Active).await
    }

    /// Refreshes a handshake peer: its descriptor fetched again and its keys pinned anew
    /// (under the rules of key validity); answers the peer with its keys.
    pub async fn refresh_peer(&self, id: &str) -> Result<Answered<PeerView>, ClientError> {
        let path = format!("/api/federation/peers/{}/refresh", enc(id));
        self.send(Method::POST, &path, Some(&serde_json::json!({})))
            .await
    }

    /// Revokes a peer: nothing is routed to it and its requests are refused.
    pub async fn revoke_peer(&self, id: &str) -> Result<Answered<Peer>, ClientError> {
        self.set_peer_status(id, PeerStatus::Revoked).await
    }

    async fn set_peer_status(
        &self,
        id: &str,
        status: PeerStatus,
    ) -> Result<Answered<Peer>, ClientError> {
        let changes = PeerPatch {
            status: Some(status),
            ..PeerPatch::default()
        };
        self.update_peer(id, &changes).await
    }

    /// Deletes a peer (its pending rows are cancelled).
    pub async fn delete_peer(&self, id: &str) -> Result<Answered<Deleted>, ClientError> {
        self.typed(
            Method::DELETE,
            &format!("/api/federation/peers/{}", enc(id)),
        )
        .await
    }

    /// Puts up to `limit` (API default 1,000) of a peer's dead rows back in line.
    pub async fn replay_dead(
        &self,
        id: &str,
        limit: Option<u32>,
    ) -> Result<Answered<Replayed>, ClientError> {
        let body = ReplayDead {
            limit: limit.map_or(ReplayDead::DEFAULT_LIMIT, i64::from),
        };
        let path = format!("/api/federation/peers/{}/replay-dead", enc(id));
        self.send(Method::POST, &path, Some(&body)).await
    }

    // Signed sources.

    /// Configures a signed provider source; answers it.
    pub async fn create_source(&self, s: &NewSource) -> Result<Answered<Source>, ClientError> {
        self.send(Method::POST, "/api/sources", Some(s)).await
    }

    /// The team's signed sources, and the hook sources that took unsigned posts.
    pub async fn list_sources(&self) -> Result<Answered<SourceList>, ClientError> {
        self.typed(Method::GET, "/api/sources").await
    }

    /// Gives a source a new secret (the old one stays valid for the overlap); answers it.
    pub async fn rotate_source(
        &self,
        name: &str,
        secret: &str,
    ) -> Result<Answered<Source>, ClientError> {
        let body = Rotation {
            secret: secret.to_owned(),
        };
        let path = format!("/api/sources/{}/rotate", enc(name));
        self.send(Method::POST, &path, Some(&body)).await
    }

    /// Removes a source's signature configuration.
    pub async fn delete_source(&self, name: &str) -> Result<Answered<Deleted>, ClientError> {
        self.typed(Method::DELETE, &format!("/api/sources/{}", enc(name)))
            .await
    }

    // Listings.

    /// One page of the outbox.
    pub async fn list_outbox(
        &self,
        f: &OutboxParams,
    ) -> Result<Answered<Page<OutboxEntry>>, ClientError> {
        self.query("/api/federation/outbox", f).await
    }

    /// One page of stored events with a seq above `after`.
    pub async fn list_events(
        &self,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Answered<Page<EventItem>>, ClientError> {
        let params = EventParams {
            after,
            limit: limit.map(i64::from),
            ..EventParams::default()
        };
        self.find_events(&params).await
    }

    /// One page of stored events that pass the listing's filters.
    pub async fn find_events(
        &self,
        f: &EventParams,
    ) -> Result<Answered<Page<EventItem>>, ClientError> {
        self.query("/api/events", f).await
    }

    /// An event's story (`GET /api/events/{id}`): the event and, for every peer, what
    /// happened to it, with every attempt and action. Read as JSON (the event is raw).
    pub async fn event_story(
        &self,
        id: &str,
        source: Option<&str>,
    ) -> Result<Answered<serde_json::Value>, ClientError> {
        let path = format!("/api/events/{}", enc(id));
        match source {
            Some(s) => {
                self.query(
                    &path,
                    &kite_api::events::StoryParams {
                        source: Some(s.to_owned()),
                    },
                )
                .await
            }
            None => self.typed(Method::GET, &path).await,
        }
    }

    // Acting on deliveries.

    /// Sends outbox row `id` again now; answers the row.
    pub async fn resend(&self, id: i64) -> Result<Answered<OutboxEntry>, ClientError> {
        let path = format!("/api/federation/outbox/{id}/resend");
        self.typed(Method::POST, &path).await
    }

    /// Cancels pending outbox row `id`; answers the row.
    pub async fn cancel(&self, id: i64) -> Result<Answered<OutboxEntry>, ClientError> {
        let path = format!("/api/federation/outbox/{id}/cancel");
        self.typed(Method::POST, &path).await
    }

    /// Replays the team's dead rows that match `f`.
    pub async fn replay_matching(
        &self,
        f: &ReplayFilter,
    ) -> Result<Answered<Replayed>, ClientError> {
        self.send(Method::POST, "/api/federation/outbox/replay", Some(f))
            .await
    }

    /// A peer's delivered, failed and latency over the last hour (`day`: the last day).
    pub async fn peer_stats(
        &self,
        id: &str,
        day: bool,
    ) -> Result<Answered<PeerStats>, ClientError> {
        let window = if day { "day" } else { "hour" };
        let path = format!("/api/federation/peers/{}/stats?window={window}", enc(id));
        self.typed(Method::GET, &path).await
    }

    /// The stored event with sequence number `seq`, if there is one.
    pub async fn event_by_seq(&self, seq: i64) -> Result<Option<EventItem>, ClientError> {
        if seq < 1 {
            return Ok(None);
        }
        let page = self.list_events(Some(seq - 1), Some(1)).await?;
        Ok(page.value.items.into_iter().find(|e| e.seq == seq))
    }

    /// Every stored event whose CloudEvent id is `id` (and, when given, whose hook source is
    /// `source`), in seq order. Reads the whole listing, a page of 1,000 at a time.
    pub async fn events_with_id(
        &self,
        id: &str,
        source: Option<&str>,
    ) -> Result<Vec<EventItem>, ClientError> {
        let mut found = Vec::new();
        let mut after = 0;
        loop {
            let page = self.list_events(Some(after), Some(1000)).await?.value;
            found.extend(page.items.into_iter().filter(|e| {
                e.cloud_event_id().as_deref() == Some(id) && source.is_none_or(|s| e.source == s)
            }));
            match page.next_cursor {
                Some(next) if next > after => after = next,
                _ => return Ok(found),
            }
        }
    }

    // Teams (with the operator key).

    /// Creates a team; the answer carries its first admin key (`admin_key`, shown once).
    pub async fn create_team(&self, id: &str) -> Result<Answered<CreatedTeam>, ClientError> {
        let body = NewTeam { id: id.to_owned() };
        self.send(Method::POST, "/api/teams", Some(&body)).await
    }

    /// The instance's teams.
    pub async fn list_teams(&self) -> Result<Answered<Items<Team>>, ClientError> {
        self.typed(Method::GET, "/api/teams").await
    }

    /// Deletes a team.
    pub async fn delete_team(&self, id: &str) -> Result<Answered<Deleted>, ClientError> {
        self.typed(Method::DELETE, &format!("/api/teams/{}", enc(id)))
            .await
    }
}
