//! The peering wire formats: the server descriptor (`GET /.well-known/kite/server`), the
//! invitation string, the accept call, the heartbeat, key queries and backfill pages. Every
//! server-to-server call is signed with the sender's identity key ([`crate::identity`]).
//!
//! What another server sends is read with [`read`], which bounds and checks it as a whole
//! (server names, keys, scopes, hop limits) before anything acts on it: a peer's body that
//! reads is one that can be used.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::{valid_key_id, valid_server_name, PublicKey};
use crate::ids::TeamId;
use crate::scope::ScopeSet;

mod invitation;
#[cfg(test)]
mod tests;

pub use invitation::{AcceptRequest, AcceptResponse, BadInvitation, Invitation};

/// Where a server publishes its descriptor.
pub const DESCRIPTOR_PATH: &str = "/.well-known/kite/server";
/// The federation protocol versions this build speaks (2: requests signed for their
/// destination, method and path).
pub const PROTOCOL_VERSIONS: &[&str] = &["kite-federation/2"];
/// The newest protocol version both this build and a server speaking `theirs` speak (None:
/// no version in common, and they cannot federate: 422 `unsupported_protocol`).
pub fn agree(theirs: &[String]) -> Option<&'static str> {
    PROTOCOL_VERSIONS
        .iter()
        .rev()
        .find(|v| theirs.iter().any(|t| t == *v))
        .copied()
}

/// Most keys a descriptor, a heartbeat or a key query answer may publish: the current key
/// and the few still inside their overlap.
pub const MAX_KEYS: usize = 8;
/// Largest answer read from another server's descriptor, accept or key query endpoint; a
/// longer one is refused unread.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Largest backfill page a server sends: events are added until the next would pass it.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest backfill page read from a peer (a page and its envelope).
pub const MAX_PAGE_READ_BYTES: usize = MAX_PAGE_BYTES + 64 * 1024;
/// Longest invitation token.
const MAX_TOKEN_LEN: usize = 256;
/// Longest URL a descriptor may give.
const MAX_URL_LEN: usize = 2048;
/// What an invitation string starts with.
pub const INVITATION_PREFIX: &str = "kiteinv_";

/// Whether a team named by another server can stand in this server's URLs for it: 1 to 64
/// visible ASCII characters, none of which ends or escapes a path segment (`/`, `?`, `#`,
/// `%`, `\`).
pub fn plausible_team(team: &str) -> bool {
    (1..=64).contains(&team.len())
        && team
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%' | b'\\'))
}

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

impl PublishedKey {
    /// Checks a key another server publishes: its id, an Ed25519 public key, a validity that
    /// ends after it starts.
    pub fn check(&self) -> Result<PublicKey, PeeringError> {
        if !valid_key_id(&self.key_id) {
            return Err(PeeringError::Keys(
                "a key id is 1 to 128 visible characters".into(),
            ));
        }
        let key = PublicKey::from_base64(&self.public_key).ok_or_else(|| {
            PeeringError::Keys(format!(
                "key {:?} is not an Ed25519 public key",
                self.key_id
            ))
        })?;
        if self.valid_until.is_some_and(|u| u <= self.valid_from) {
            return Err(PeeringError::Keys(format!(
                "key {:?} ends before it starts",
                self.key_id
            )));
        }
        Ok(key)
    }
}

/// Checks a list of published keys: at most [`MAX_KEYS`], each well formed, no id twice.
pub fn check_keys(keys: &[PublishedKey]) -> Result<(), PeeringError> {
    if keys.len() > MAX_KEYS {
        return Err(PeeringError::Keys(format!(
            "at most {MAX_KEYS} keys are published at once, not {}",
            keys.len()
        )));
    }
    for (i, k) in keys.iter().enumerate() {
        k.check()?;
        if keys[..i].iter().any(|o| o.key_id == k.key_id) {
            return Err(PeeringError::Keys(format!(
                "key {:?} is listed twice",
                k.key_id
            )));
        }
    }
    Ok(())
}

/// What one side of a peering sends the other: event types (globs) and a hop limit. The
/// accepting side's terms are its own admin's; the other side's answer may narrow them,
/// never widen them ([`Terms::within`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Terms {
    /// Event types sent (globs).
    pub scopes: Vec<String>,
    /// Hop limit of what is sent.
    pub max_hops: i32,
}

impl Terms {
    /// Checks terms: scopes that compile (at most [`crate::scope::MAX_SCOPES`]), a hop limit
    /// within `1..=16`.
    pub fn check(&self) -> Result<(), PeeringError> {
        ScopeSet::compile(&self.scopes).map_err(|e| PeeringError::Terms(e.to_string()))?;
        check_hops(self.max_hops)
    }

    /// Whether these terms ask for no more than `bound`: every scope is one of `bound`'s
    /// and the hop limit is no higher.
    pub fn within(&self, bound: &Terms) -> bool {
        self.max_hops <= bound.max_hops && self.scopes.iter().all(|s| bound.scopes.contains(s))
    }
}

/// Refuses a hop limit outside `1..=16`.
fn check_hops(max_hops: i32) -> Result<(), PeeringError> {
    crate::fed::hop_limit::check(i64::from(max_hops))
        .map(|_| ())
        .map_err(PeeringError::Terms)
}

/// Refuses a name that is not a server name.
fn check_name(name: &str) -> Result<(), PeeringError> {
    if valid_server_name(name) {
        Ok(())
    } else {
        Err(PeeringError::ServerName(name.chars().take(64).collect()))
    }
}

/// Why a body another server sent (or an invitation) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeeringError {
    /// Not JSON of the expected shape, or over its size.
    #[error("not {what}: {reason}")]
    Malformed {
        /// What was expected.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A server name that is not DNS-name-like (shown cut to 64 characters).
    #[error("{0:?} is not a server name (a DNS-like name of at most 253 bytes: letters, digits, '-' and '.')")]
    ServerName(String),
    /// Published keys that cannot be used.
    #[error("{0}")]
    Keys(String),
    /// Scopes or a hop limit that cannot be used.
    #[error("{0}")]
    Terms(String),
}

impl PeeringError {
    /// The stable error code of this refusal.
    pub fn code(&self) -> crate::Code {
        use crate::Code;
        match self {
            PeeringError::Malformed { .. } => Code::InvalidBody,
            PeeringError::ServerName(_) => Code::InvalidServerName,
            PeeringError::Keys(_) => Code::InvalidKeys,
            PeeringError::Terms(_) => Code::InvalidTerms,
        }
    }

    /// As an API error (400 with its code).
    pub fn to_api(&self) -> crate::ApiError {
        crate::ApiError::new(self.code(), self.to_string())
    }
}

/// A server-to-server body: what it is called in a refusal, and the checks that make it
/// usable.
pub trait Message: DeserializeOwned {
    /// What it is, for a refusal ("an accept request").
    const WHAT: &'static str;
    /// Checks what serde cannot.
    fn check(&self) -> Result<(), PeeringError>;
}

/// Reads a server-to-server body of at most `max` bytes as `T`, checked whole.
pub fn read<T: Message>(bytes: &[u8], max: usize) -> Result<T, PeeringError> {
    if bytes.len() > max {
        return Err(PeeringError::Malformed {
            what: T::WHAT,
            reason: format!("{} bytes, over the {max} taken", bytes.len()),
        });
    }
    let t: T = serde_json::from_slice(bytes).map_err(|e| PeeringError::Malformed {
        what: T::WHAT,
        reason: e.to_string(),
    })?;
    t.check()?;
    Ok(t)
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

impl Message for ServerDescriptor {
    const WHAT: &'static str = "a kite server descriptor";
    fn check(&self) -> Result<(), PeeringError> {
        check_name(&self.server_name)?;
        if self.keys.is_empty() {
            return Err(PeeringError::Keys(
                "a descriptor publishes at least one key".into(),
            ));
        }
        check_keys(&self.keys)?;
        let url = &self.endpoints.base_url;
        if url.is_empty() || url.len() > MAX_URL_LEN {
            return Err(PeeringError::Malformed {
                what: Self::WHAT,
                reason: format!("its base_url is 1 to {MAX_URL_LEN} bytes"),
            });
        }
        Ok(())
    }
}

/// `POST {heartbeat}`: a signed "still here", carrying the sender's current keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// The sender's server name.
    pub server_name: String,
    /// The sending team.
    pub team: TeamId,
    /// The sender's published keys.
    pub keys: Vec<PublishedKey>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// The federation protocol versions the sender speaks.
    pub protocol_versions: Vec<String>,
}

impl Message for Heartbeat {
    const WHAT: &'static str = "a heartbeat";
    fn check(&self) -> Result<(), PeeringError> {
        check_name(&self.server_name)?;
        check_keys(&self.keys)
    }
}

/// The answer to a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// Always `ok`.
    pub status: String,
    /// The answering server's name.
    pub server_name: String,
}

/// `POST {keys/query}`: the key `key_id` of `server_name`, as far as the asked peer knows it
/// (its own, or one it pinned for its peer). The key id comes from an origin signature the
/// asked peer forwarded, so an answer tells nothing the asker did not hold already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyQuery {
    /// The server whose key is asked for.
    pub server_name: String,
    /// The key asked for.
    pub key_id: String,
}

impl Message for KeyQuery {
    const WHAT: &'static str = "a key query";
    fn check(&self) -> Result<(), PeeringError> {
        check_name(&self.server_name)?;
        if valid_key_id(&self.key_id) {
            Ok(())
        } else {
            Err(PeeringError::Keys(
                "a key id is 1 to 128 visible characters".into(),
            ))
        }
    }
}

/// The answer to a [`KeyQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyQueryResponse {
    /// The server the keys are of.
    pub server_name: String,
    /// Its keys.
    pub keys: Vec<PublishedKey>,
}

impl Message for KeyQueryResponse {
    const WHAT: &'static str = "a key query answer";
    fn check(&self) -> Result<(), PeeringError> {
        check_name(&self.server_name)?;
        check_keys(&self.keys)
    }
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

impl Message for BackfillRequest {
    const WHAT: &'static str = "a backfill request";
    fn check(&self) -> Result<(), PeeringError> {
        if let Some(types) = &self.types {
            ScopeSet::compile(types).map_err(|e| PeeringError::Terms(e.to_string()))?;
        }
        Ok(())
    }
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

impl Message for BackfillPage {
    const WHAT: &'static str = "a backfill page";
    fn check(&self) -> Result<(), PeeringError> {
        Ok(())
    }
}
