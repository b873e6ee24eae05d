//! The outbox: one row an event and a peer, as the admin API lists it.

use chrono::{DateTime, Utc};
use kite_wire::ids::PeerId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{OutboxState, SkipReason};

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
    /// Failed attempts.
    pub attempts: i32,
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
