//! The peering wire formats: the server descriptor (`GET /.well-known/kite/server`), the
//! invitation string, the accept call and the heartbeat. Every server-to-server call is
//! signed with the sender's identity key ([`crate::identity`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Where a server publishes its descriptor.
pub const DESCRIPTOR_PATH: &str = "/.well-known/kite/server";
/// The federation protocol versions this build speaks.
pub const PROTOCOL_VERSIONS: &[&str] = &["kite-federation/1"];
/// What an invitation string starts with.
pub const INVITATION_PREFIX: &str = "kiteinv_";

/// The accept endpoint of a team: `{base}/federation/v1/teams/{team}/accept`.
pub fn accept_url(base: &str, team: &str) -> String {
    format!(
        "{}/federation/v1/teams/{team}/accept",
        base.trim_end_matches('/')
    )
}

/// The heartbeat endpoint of a team.
pub fn heartbeat_url(base: &str, team: &str) -> String {
    format!(
        "{}/federation/v1/teams/{team}/heartbeat",
        base.trim_end_matches('/')
    )
}

/// The key query endpoint of a team (a peer vouches for the keys it holds).
pub fn keys_query_url(base: &str, team: &str) -> String {
    format!(
        "{}/federation/v1/teams/{team}/keys/query",
        base.trim_end_matches('/')
    )
}

/// The backfill endpoint of a team.
pub fn backfill_url(base: &str, team: &str) -> String {
    format!(
        "{}/federation/v1/teams/{team}/backfill",
        base.trim_end_matches('/')
    )
}

/// The hook a team receives federated events on.
pub fn hook_url(base: &str, team: &str) -> String {
    format!("{}/hooks/{team}/kite", base.trim_end_matches('/'))
}

/// The descriptor URL of a server.
pub fn descriptor_url(base: &str) -> String {
    format!("{}{DESCRIPTOR_PATH}", base.trim_end_matches('/'))
}

/// One published verification key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedKey {
    /// Its id, named by `X-Kite-Key-Id`.
    pub key_id: String,
    /// base64url (no padding) of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// From when it signs.
    pub valid_from: DateTime<Utc>,
    /// Until when it is accepted (None: the current key).
    pub valid_until: Option<DateTime<Utc>>,
}

/// The federation endpoints a server publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoints {
    /// The server's base URL.
    pub base_url: String,
    /// The accept endpoint, with `{team}` for the team.
    pub accept: String,
    /// The heartbeat endpoint, with `{team}` for the team.
    pub heartbeat: String,
    /// The hook federated events are POSTed to, with `{team}` for the team.
    pub hooks: String,
}

impl Endpoints {
    /// The endpoints of a server at `base`.
    pub fn at(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            base_url: base.to_string(),
            accept: accept_url(base, "{team}"),
            heartbeat: heartbeat_url(base, "{team}"),
            hooks: hook_url(base, "{team}"),
        }
    }
}

/// `GET /.well-known/kite/server`: who a server is and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerDescriptor {
    /// The server's name (its instance id).
    pub server_name: String,
    /// Its current key and any still inside their overlap.
    pub keys: Vec<PublishedKey>,
    /// The federation protocol versions it speaks.
    pub protocol_versions: Vec<String>,
    /// Its federation endpoints.
    pub endpoints: Endpoints,
}

/// What an invitation string carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invitation {
    /// The inviting server's base URL.
    pub url: String,
    /// Its team.
    pub team: String,
    /// Its server name.
    pub server_name: String,
    /// The single-use token.
    pub token: String,
}

/// Why an invitation string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a kite invitation (it starts with {INVITATION_PREFIX} and was printed by `kite peer invite`)")]
pub struct BadInvitation;

impl Invitation {
    /// A new single-use token: 32 random bytes, base64url.
    pub fn mint_token() -> String {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The one-line form printed by `kite peer invite`.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{INVITATION_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads the one-line form.
    pub fn decode(s: &str) -> Result<Self, BadInvitation> {
        let b64 = s
            .trim()
            .strip_prefix(INVITATION_PREFIX)
            .ok_or(BadInvitation)?;
        let json = URL_SAFE_NO_PAD.decode(b64).map_err(|_| BadInvitation)?;
        let inv: Self = serde_json::from_slice(&json).map_err(|_| BadInvitation)?;
        if inv.url.is_empty() || inv.team.is_empty() || inv.token.is_empty() {
            return Err(BadInvitation);
        }
        Ok(inv)
    }
}

/// `POST {accept}`: the accepting server answers an invitation (signed with its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptRequest {
    /// The invitation's token.
    pub token: String,
    /// The accepting server's descriptor (its keys are pinned by the inviter).
    pub server: ServerDescriptor,
    /// The accepting team.
    pub team: String,
    /// Event types the accepting side will send to the inviter (None: the invitation's).
    pub scopes: Option<Vec<String>>,
    /// Hop limit for what the accepting side sends.
    pub max_hops: i32,
}

/// The inviter's answer to an accepted invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptResponse {
    /// The inviter's server name.
    pub server_name: String,
    /// The inviting team.
    pub team: String,
    /// Event types the inviter will send to the accepting side.
    pub scopes: Vec<String>,
    /// Hop limit for what the inviter sends.
    pub max_hops: i32,
    /// Event types the accepting side sends, as agreed.
    pub your_scopes: Vec<String>,
    /// Hop limit for what the accepting side sends.
    pub your_max_hops: i32,
}

/// `POST {heartbeat}`: a signed "still here", carrying the sender's current keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// The sender's server name.
    pub server_name: String,
    /// The sending team.
    pub team: String,
    /// The sender's published keys.
    pub keys: Vec<PublishedKey>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// The answer to a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// Always `ok`.
    pub status: String,
    /// The answering server's name.
    pub server_name: String,
}

/// `POST {keys/query}`: which keys does `server_name` publish, as far as the asked peer knows
/// (its own, or those it pinned for its peer)?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyQuery {
    /// The server whose keys are asked for.
    pub server_name: String,
}

/// The answer to a [`KeyQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyQueryResponse {
    /// The server the keys are of.
    pub server_name: String,
    /// Its keys.
    pub keys: Vec<PublishedKey>,
}

/// `POST {backfill}`: a page of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillRequest {
    /// Events received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events after this cursor (the serving side's sequence number).
    pub after: Option<i64>,
    /// The most events wanted in this page (the server caps it by its policy).
    pub limit: u32,
    /// Only these event types (globs); None: every type granted.
    pub types: Option<Vec<String>>,
}

/// A page of backfilled events: each the structured CloudEvent as it would have been
/// forwarded, with its origin signature.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillPage {
    /// The events, each as its JSON text.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Box<serde_json::value::RawValue>>,
    /// Where the next page starts (None: this was the last).
    pub next_cursor: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_round_trip_and_refuse_junk() {
        let inv = Invitation {
            url: "http://127.0.0.1:7700".into(),
            team: "default".into(),
            server_name: "a".into(),
            token: Invitation::mint_token(),
        };
        let s = inv.encode();
        assert!(s.starts_with(INVITATION_PREFIX) && !s.contains(char::is_whitespace));
        assert_eq!(Invitation::decode(&format!(" {s}\n")), Ok(inv));
        assert_eq!(Invitation::decode("kiteinv_!!"), Err(BadInvitation));
        assert_eq!(Invitation::decode("hello"), Err(BadInvitation));
        assert_eq!(
            Invitation::decode(&format!(
                "{INVITATION_PREFIX}{}",
                URL_SAFE_NO_PAD.encode("{}")
            )),
            Err(BadInvitation)
        );
    }

    #[test]
    fn endpoints_name_the_team() {
        let e = Endpoints::at("https://kite.example/");
        assert_eq!(
            e.accept,
            "https://kite.example/federation/v1/teams/{team}/accept"
        );
        assert_eq!(
            hook_url("https://kite.example", "t"),
            "https://kite.example/hooks/t/kite"
        );
    }
}
