//! Peers: the instances this one forwards to.

use chrono::{DateTime, Utc};
use kite_wire::ids::{PeerId, TeamId};
use serde::{Deserialize, Serialize};

use crate::types::{ContentMode, OnDead, PeerHealth, PeerStatus};

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
    /// Events with the same value of this attribute (`subject`, `source` or an extension's
    /// name) reach the peer in the order they were accepted (None: unordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead: `skip` or `block`.
    #[serde(default)]
    pub on_dead: OnDead,
    /// The peer's own delivery policy; what it leaves out is the instance's.
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    /// `structured` (a CloudEvent, what a kite takes) or `binary` (`ce-*` headers and the
    /// provider's body, what an ordinary webhook endpoint takes).
    #[serde(default)]
    pub content_mode: ContentMode,
}

/// How a handshake peer's deliveries go, as an invitation or an acceptance sets it on the
/// peer it makes: its order and its own delivery policy (a kite server always takes
/// structured events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conduct {
    /// The ordering attribute (None: unordered).
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead.
    pub on_dead: OnDead,
    /// The peer's own delivery policy.
    pub delivery: DeliveryPolicy,
}

impl Conduct {
    /// Reads `ordering_key`, `on_dead` and `delivery` of a request body that makes a peer
    /// (`on_dead: block` only with an `ordering_key`: it says what an ordered key does).
    pub fn read(m: &crate::request::Body) -> Result<Self, kite_wire::ApiError> {
        use crate::request::{opt_delivery, opt_enum, opt_ordering_key};
        let ordering_key = opt_ordering_key(m)?.flatten();
        let on_dead = opt_enum(m, "on_dead", OnDead::ALL)?;
        if on_dead == Some(OnDead::Block) && ordering_key.is_none() {
            return Err(kite_wire::ApiError::validation(
                "on_dead",
                "on_dead says what an ordered key does: block needs an ordering_key",
            ));
        }
        Ok(Conduct {
            ordering_key,
            on_dead: on_dead.unwrap_or_default(),
            delivery: opt_delivery(m)?.unwrap_or_default(),
        })
    }
}

/// A peer's own delivery policy: each field it leaves out is the instance's setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryPolicy {
    /// The first retry's delay, doubling from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 3_600_000)]
    pub retry_base_ms: Option<u32>,
    /// The longest delay between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 86_400_000)]
    pub retry_max_delay_ms: Option<u32>,
    /// Failed attempts after which a delivery is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// How long one request may take, its answer included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 120_000)]
    pub timeout_ms: Option<u32>,
    /// The most requests to the peer at once (from one delivery process); unset, the
    /// instance's `KITE_PEER_MAX_IN_FLIGHT` (256 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1024)]
    pub max_in_flight: Option<u32>,
    /// The most events a second sent to the peer (from one delivery process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01, maximum = 100_000)]
    pub rate_per_sec: Option<f64>,
    /// How many events may go at once above the rate after a quiet time (default 1: the
    /// events go evenly spaced); only with `rate_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub rate_burst: Option<u32>,
}

impl DeliveryPolicy {
    /// The fields and their bounds, as requests read them.
    pub const FIELDS: &'static [(&'static str, f64, f64)] = &[
        ("retry_base_ms", 10.0, 3_600_000.0),
        ("retry_max_delay_ms", 10.0, 86_400_000.0),
        ("max_attempts", 1.0, 100.0),
        ("timeout_ms", 100.0, 120_000.0),
        ("max_in_flight", 1.0, 1024.0),
        ("rate_per_sec", 0.01, 100_000.0),
        ("rate_burst", 1.0, 100_000.0),
    ];

    /// Whether nothing is set (the instance's policy throughout).
    pub fn is_default(&self) -> bool {
        *self == DeliveryPolicy::default()
    }
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
    /// Deliver events with the same value of this attribute (`subject`, `source` or an
    /// extension's name) in the order they were accepted (none: unordered).
    #[schema(max_length = 20)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead.
    #[schema(required = false, default = "skip")]
    #[serde(skip_serializing_if = "OnDead::is_default")]
    pub on_dead: OnDead,
    /// The peer's own delivery policy (each field left out: the instance's).
    #[schema(required = false)]
    #[serde(skip_serializing_if = "DeliveryPolicy::is_default")]
    pub delivery: DeliveryPolicy,
    /// `structured` or `binary`.
    #[schema(required = false, default = "structured")]
    #[serde(skip_serializing_if = "ContentMode::is_default")]
    pub content_mode: ContentMode,
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
    /// New ordering key (`null` removes it: unordered).
    #[schema(max_length = 20, nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<Option<String>>,
    /// New dead-event rule of an ordered key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_dead: Option<OnDead>,
    /// New delivery policy, in place of the old one (`{}`: the instance's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryPolicy>,
    /// New content mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_mode: Option<ContentMode>,
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
        "ordering_key",
        "on_dead",
        "delivery",
        "content_mode",
    ];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let conduct = Conduct::read(m)?;
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
            ordering_key: conduct.ordering_key,
            on_dead: conduct.on_dead,
            delivery: conduct.delivery,
            content_mode: opt_enum(m, "content_mode", ContentMode::ALL)?.unwrap_or_default(),
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
            ordering_key: opt_ordering_key(m)?,
            on_dead: opt_enum(m, "on_dead", OnDead::ALL)?,
            delivery: opt_delivery(m)?,
            content_mode: opt_enum(m, "content_mode", ContentMode::ALL)?,
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
