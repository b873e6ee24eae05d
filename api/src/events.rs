//! Events: the listing, an event's story and the attempts made to deliver it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{AttemptOutcome, OutboxAction, PeerAnswer};

/// One recorded attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptEntry {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The peer's HTTP status, when it answered.
    pub status_code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i32,
    /// What the peer did with the event, when it took it (`accepted`, `duplicate_ignored`,
    /// `loop_ignored`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_answer: Option<PeerAnswer>,
}

/// Something an operator did to a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// `resend`, `cancel` or `replay`.
    pub action: OutboxAction,
    /// The id of the API key that did it (the key may have been revoked since).
    pub by: Option<String>,
}

use crate::types::SkipReason;
use kite_wire::ids::PeerId;
use serde_json::value::RawValue;
use serde_json::Value;

/// The filters of `GET /api/events`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events after this sequence number.
    #[param(minimum = 0)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// The `next_cursor` of the previous page (the same as `after`).
    #[param(minimum = 0)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// The most events in the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Events of this type.
    pub r#type: Option<String>,
    /// Events that came in on this source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Events received at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Events received before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// One event of `GET /api/events`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventItem {
    /// Its sequence number on this instance (the listing's cursor).
    pub seq: i64,
    /// The source it came in on (`kite` for peers).
    pub source: String,
    /// When it was stored.
    pub received_at: DateTime<Utc>,
    /// The structured CloudEvent, its `data` byte for byte as received.
    #[schema(value_type = Object)]
    pub event: Box<RawValue>,
}

impl EventItem {
    /// One attribute of the CloudEvent (`id`, `type`, `kitefedorigin`...), when it has it.
    pub fn attribute(&self, name: &str) -> Option<Value> {
        let mut event: serde_json::Map<String, Value> =
            serde_json::from_str(self.event.get()).ok()?;
        event.remove(name)
    }

    /// The CloudEvent's `id`.
    pub fn cloud_event_id(&self) -> Option<String> {
        match self.attribute("id")? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// `GET /api/events/{id}`: the event and, for every peer of its team, what happened to it.
/// (Written only: its event is a raw value, which a flattened field cannot read back.)
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Story {
    /// The event.
    #[serde(flatten)]
    pub event: EventItem,
    /// One entry a peer (and one for each row of a peer deleted since).
    pub deliveries: Vec<PeerStory>,
}

/// What happened to an event for one peer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerStory {
    /// The peer's id.
    pub peer_id: PeerId,
    /// The delivery's outbox row, when the event was routed to the peer (what
    /// `/api/federation/outbox/{id}/resend` and `/cancel` take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<i64>,
    /// The peer's name (None: it was deleted since).
    pub peer: Option<String>,
    /// What became of the event for this peer.
    pub outcome: StoryOutcome,
    /// Why: `max_hops` or `loop` (skipped), `paused` or `parked` (waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StoryReason>,
    /// The peer's scopes (`no_match`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The first of the peer's filters the event does not match (`no_match`, reason
    /// `filters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::filters::Filter>,
    /// Why that filter, an expression, could not answer for this event (a field the event
    /// lacks, a type it cannot compare): an expression that errors does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_error: Option<String>,
    /// When it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// What the peer did with the event once it took it (`accepted`,
    /// `duplicate_ignored`: it had it already, `loop_ignored`: it had sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_answer: Option<PeerAnswer>,
    /// Every attempt: time, outcome (`delivered`, `failed`, `refused`, `error`, `gone`,
    /// `revoked`), status code, error, duration.
    pub attempts: Vec<AttemptEntry>,
    /// What operators did to the delivery (resend, cancel, replay), oldest first.
    #[serde(default)]
    pub actions: Vec<ActionEntry>,
}

/// What became of an event for one peer, as its story tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoryOutcome {
    /// The peer's scopes do not cover the event's type.
    NoMatch,
    /// The peer was added after the event, or is not taking events.
    NotRouted,
    /// Routing skipped the peer (see the reason).
    Skipped,
    /// Its row waits for the peer (paused or parked).
    Waiting,
    /// Its row waits for (another) attempt.
    Pending,
    /// The peer took it.
    Delivered,
    /// Every attempt failed.
    Dead,
    /// Its peer was deleted or revoked before it went out.
    Cancelled,
}

/// Why an event's story for a peer is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoryReason {
    /// Skipped: the event had made the peer's `max_hops` hops.
    MaxHops,
    /// Skipped: the peer already forwarded the event.
    Loop,
    /// Not matched: the event's type is in the peer's scopes, but a filter does not match.
    Filters,
    /// Waiting: the peer is paused.
    Paused,
    /// Waiting: the peer is unreachable and its deliveries are parked.
    Parked,
}

impl From<SkipReason> for StoryReason {
    fn from(r: SkipReason) -> Self {
        match r {
            SkipReason::MaxHops => StoryReason::MaxHops,
            SkipReason::Loop => StoryReason::Loop,
        }
    }
}

/// The filter of `GET /api/events/{id}`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StoryParams {
    /// With a CloudEvent id: the source it came in on (ids are unique per source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
