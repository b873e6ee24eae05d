//! The outbox: one row an event and a peer, as the admin API lists it.

use chrono::{DateTime, Utc};
use kite_wire::ids::PeerId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::request::{opt_int, opt_str, opt_time, Body, Request};
use crate::types::{OutboxState, PeerAnswer, SkipReason};
use kite_wire::ApiError;

/// An outbox row as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    /// Outbox id (also the listing cursor).
    pub id: i64,
    /// Event sequence number on this instance.
    pub event_seq: i64,
    /// CloudEvent id.
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// Target peer.
    pub peer_id: PeerId,
    /// Where it stands.
    pub status: OutboxState,
    /// Why it was skipped.
    pub reason: Option<SkipReason>,
    /// Attempts made, the delivering one included: as many as the event's story lists.
    pub attempts: i32,
    /// Failed attempts that count against the retry budget (`KITE_RETRY_MAX_ATTEMPTS`):
    /// an attempt while the peer is parked or paused (410) spends none, and a resend or a
    /// replay starts the count again.
    pub failures: i32,
    /// What the peer did with the event once it took it (`accepted`, `duplicate_ignored`,
    /// `loop_ignored`); None until delivered.
    pub peer_answer: Option<PeerAnswer>,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Last error.
    pub last_error: Option<String>,
    /// Last status code.
    pub last_status_code: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Delivery time.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The filters of `GET /api/federation/outbox`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    /// Rows of the peer of this name (or server name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Rows of the peer of this id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<Uuid>,
    /// Rows in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<OutboxState>,
    /// The same as `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<OutboxState>,
    /// Rows of events of this type.
    pub r#type: Option<String>,
    /// Rows of events that came in on this source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Rows made at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Rows made before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    #[param(minimum = 0)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// The most rows in the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// `POST /api/federation/outbox/replay`: the dead rows to put back in line, by filter; every
/// field is optional (an empty body replays up to 1,000 dead rows of the team).
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayFilter {
    /// Rows of the peer of this name (or server name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Rows of events whose type matches this glob.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Rows made at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Rows made before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The most rows to replay.
    #[schema(required = false, default = 1000, minimum = 1, maximum = 100000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

impl ReplayFilter {
    /// How many an empty body replays.
    pub const DEFAULT_LIMIT: i64 = 1000;
}

impl Request for ReplayFilter {
    const FIELDS: &'static [&'static str] = &["peer", "type", "since", "until", "limit"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let event_type = opt_str(m, "type", 256)?;
        if let Some(t) = &event_type {
            kite_wire::scope::ScopeSet::compile(std::slice::from_ref(t))
                .map_err(|e| ApiError::validation("type", format!("type must be a glob: {e}")))?;
        }
        Ok(ReplayFilter {
            peer: opt_str(m, "peer", 256)?,
            event_type,
            since: opt_time(m, "since")?,
            until: opt_time(m, "until")?,
            limit: opt_int(m, "limit", 1, 100_000)?,
        })
    }
}
