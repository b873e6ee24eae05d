//! Peers: the instances this one forwards to.

use chrono::{DateTime, Utc};
use kite_wire::ids::{PeerId, TeamId};
use serde::{Deserialize, Serialize};

use crate::types::{PeerHealth, PeerStatus};

/// A peer as stored. The outbound token is never serialized.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Peer {
    /// Peer id.
    pub id: PeerId,
    /// Owning team.
    pub team_id: TeamId,
    /// Unique name within the team.
    pub name: String,
    /// Where events are POSTed (`.../hooks/{team}/kite`).
    pub peer_hook_url: String,
    /// Secret for Authorization and signatures (shown never).
    #[serde(skip)]
    pub outbound_token: String,
    /// Glob patterns on event types.
    pub scopes: Vec<String>,
    /// Filters every event it takes must match beside its scopes (CloudEvents Subscriptions
    /// dialects: `exact`, `prefix`, `suffix`, `all`, `any`, `not`).
    #[serde(default)]
    pub filters: Vec<crate::filters::Filter>,
    /// Events with this many hops or more are not forwarded.
    pub max_hops: i32,
    /// What an operator set it to.
    pub status: PeerStatus,
    /// The peer's instance id, learned from its answers.
    pub peer_instance_id: Option<String>,
    /// Last delivery error.
    pub last_error: Option<String>,
    /// Last HTTP status from the peer.
    pub last_status_code: Option<i32>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// When the last delivery succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i32,
    /// What delivery has seen of it.
    pub health: PeerHealth,
    /// Key id sent as `X-Kite-Key-Id` instead of the token as a bearer (None: bearer).
    pub key_id: Option<String>,
    /// The token replaced by the last rotation, still signed with until `previous_until`.
    #[serde(skip)]
    pub previous_outbound_token: Option<String>,
    /// End of the rotation overlap.
    pub previous_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The peer's server name, for a peer made by the invite/accept handshake (its
    /// requests are verified with its pinned identity keys); None for a Kite token peer.
    pub server_name: Option<String>,
    /// A handshake peer's base URL (descriptor, heartbeats).
    pub peer_base_url: Option<String>,
    /// A handshake peer's team.
    pub peer_team: Option<String>,
    /// When its last heartbeat arrived here.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When it last took one of this side's heartbeats.
    pub last_heartbeat_ok_at: Option<DateTime<Utc>>,
    /// This side's heartbeats it failed to take in a row.
    pub heartbeat_failures: i32,
    /// The token a token peer signs its events to this side with (the Kite guide's
    /// `inbound_token`, shown never): events so signed are taken as the peer's.
    #[serde(skip)]
    pub inbound_token: Option<String>,
    /// The federation protocol version agreed with a handshake peer.
    pub protocol_version: Option<String>,
}

impl Peer {
    /// When this side last heard from the peer: a heartbeat or a delivery it took.
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.last_heartbeat_at
            .max(self.last_heartbeat_ok_at)
            .max(self.last_success_at)
    }
}

/// Fields of a new peer (validated by the caller).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewPeer {
    /// Unique name within the team.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Target hook URL (absolute http or https).
    #[schema(format = "uri", max_length = 2048)]
    pub peer_hook_url: String,
    /// Outbound secret, sent as the bearer token and signing key (shown never).
    #[schema(min_length = 1, max_length = 512, write_only)]
    pub outbound_token: String,
    /// Scope globs on event types.
    #[schema(required = false, default = json!(["*"]))]
    pub scopes: Vec<String>,
    /// Filters every event must match beside the scopes, in the CloudEvents Subscriptions
    /// API's dialects (at most 16; none by default).
    #[schema(required = false)]
    pub filters: Vec<crate::filters::Filter>,
    /// Hop limit.
    #[schema(required = false, default = 3, minimum = 1, maximum = 16)]
    pub max_hops: i32,
    /// Initial status (`active` or `paused`).
    #[schema(required = false, default = "active")]
    pub status: PeerStatus,
    /// Key id to name instead of sending the token as a bearer.
    #[schema(max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The token the peer signs its events to this side with (for both directions over one
    /// peer, as the Kite guide has it; shown never).
    #[schema(min_length = 1, max_length = 512, write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_token: Option<String>,
}

/// A partial update of a peer (validated by the caller).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PeerPatch {
    /// New name.
    #[schema(min_length = 1, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New URL.
    #[schema(format = "uri", max_length = 2048)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_hook_url: Option<String>,
    /// New outbound secret.
    #[schema(min_length = 1, max_length = 512, write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_token: Option<String>,
    /// New scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// New filters (`[]` removes them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<crate::filters::Filter>>,
    /// New hop limit.
    #[schema(minimum = 1, maximum = 16)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<i32>,
    /// New status (`active` or `paused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PeerStatus>,
    /// New key id.
    #[schema(max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// New inbound token.
    #[schema(min_length = 1, max_length = 512, write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_token: Option<String>,
}

use crate::request::*;
use kite_wire::fed::hop_limit;
use kite_wire::ApiError;

/// `POST /api/federation/peers`: name, peer_hook_url and outbound_token are required;
/// scopes default to `["*"]`, max_hops to 3, status to `active`; `inbound_token` (optional)
/// is the token the peer signs its events to this side with.
impl Request for NewPeer {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "peer_hook_url",
        "outbound_token",
        "inbound_token",
        "scopes",
        "filters",
        "max_hops",
        "status",
        "key_id",
    ];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(NewPeer {
            name: req_str(m, "name", 128)?,
            peer_hook_url: opt_url(m, "peer_hook_url")?.ok_or_else(|| {
                ApiError::validation("peer_hook_url", "peer_hook_url is required")
            })?,
            outbound_token: req_str(m, "outbound_token", 512)?,
            scopes: opt_scopes(m)?.unwrap_or_else(every_type),
            filters: opt_filters(m)?.unwrap_or_default(),
            max_hops: opt_max_hops(m)?.unwrap_or(hop_limit::DEFAULT),
            status: opt_enum(m, "status", PeerStatus::SETTABLE)?.unwrap_or(PeerStatus::Active),
            key_id: opt_str(m, "key_id", 128)?,
            inbound_token: opt_str(m, "inbound_token", 512)?,
        })
    }
}

/// `PATCH /api/federation/peers/{id}`: any of the fields of [`NewPeer`].
impl Request for PeerPatch {
    const FIELDS: &'static [&'static str] = <NewPeer as Request>::FIELDS;

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(PeerPatch {
            name: opt_str(m, "name", 128)?,
            peer_hook_url: opt_url(m, "peer_hook_url")?,
            outbound_token: opt_str(m, "outbound_token", 512)?,
            scopes: opt_scopes(m)?,
            filters: opt_filters(m)?,
            max_hops: opt_max_hops(m)?,
            status: opt_enum(m, "status", PeerStatus::SETTABLE)?,
            key_id: opt_str(m, "key_id", 128)?,
            inbound_token: opt_str(m, "inbound_token", 512)?,
        })
    }
}

/// `POST /api/federation/peers/{id}/replay-dead`: how many dead rows to replay (default 1,000).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayDead {
    /// The most dead rows to replay.
    #[schema(required = false, default = 1000, minimum = 1, maximum = 100000)]
    pub limit: i64,
}

impl ReplayDead {
    /// How many an empty body replays.
    pub const DEFAULT_LIMIT: i64 = 1000;
}

impl Request for ReplayDead {
    const FIELDS: &'static [&'static str] = &["limit"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(ReplayDead {
            limit: opt_int(m, "limit", 1, 100_000)?.unwrap_or(Self::DEFAULT_LIMIT),
        })
    }
}

/// The answer of a replay.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Dead rows put back in line.
    pub replayed: usize,
}

/// A peer as the API shows it: the stored fields, when it was last heard from, its pending
/// and dead backlog, its traffic in the last 24 hours and, shown alone, the keys pinned for
/// it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerView {
    /// The stored peer.
    #[serde(flatten)]
    pub peer: crate::peers::Peer,
    /// When this side last heard from it (a heartbeat, or a delivery it took).
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// Outbox rows waiting for delivery.
    pub pending: i64,
    /// Outbox rows that gave up.
    pub dead: i64,
    /// Events delivered to it in the last 24 hours.
    pub events_sent_24h: i64,
    /// Events received from it in the last 24 hours.
    pub events_received_24h: i64,
    /// Whether it has an inbound token (the token it signs its events to this side with;
    /// never shown).
    pub has_inbound_token: bool,
    /// When `last_error` stopped holding: the peer was heard from after it and nothing fails
    /// now, neither deliveries nor heartbeats (None while it still holds, or there is
    /// none).
    pub last_error_resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The identity keys pinned for it (a handshake peer, shown alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<kite_wire::peering::PublishedKey>>,
}

/// The window of a peer's charts (`GET /api/federation/peers/{id}/stats?window=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatsWindow {
    /// The last hour, in 12 buckets of 5 minutes.
    #[default]
    Hour,
    /// The last day, in 24 buckets of an hour.
    Day,
}

impl StatsWindow {
    /// How long the window is and how long each of its buckets, in seconds.
    pub fn spans(self) -> (i64, i64) {
        match self {
            StatsWindow::Hour => (3600, 300),
            StatsWindow::Day => (86_400, 3600),
        }
    }

    /// Parses `hour` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(StatsWindow::Hour),
            "day" => Some(StatsWindow::Day),
            _ => None,
        }
    }
}

/// The query of `GET /api/federation/peers/{id}/stats`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// `hour` (default) or `day`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<StatsWindow>,
}

/// One bucket of a peer's charts: the attempts made in it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsBucket {
    /// Where the bucket starts.
    pub start: DateTime<Utc>,
    /// Attempts that delivered.
    pub delivered: i64,
    /// Attempts that did not.
    pub failed: i64,
    /// The median duration of the attempts that delivered, in milliseconds.
    pub p50_ms: Option<i64>,
    /// The 95th percentile of the same.
    pub p95_ms: Option<i64>,
}

/// A peer's delivered, failed and latency over the last hour or day, from the attempts
/// kite logged (its own data: no external service).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerStats {
    /// The window.
    pub window: StatsWindow,
    /// Each bucket's length in seconds.
    pub bucket_secs: i64,
    /// Every bucket of the window, oldest first (empty ones included).
    pub buckets: Vec<StatsBucket>,
}
