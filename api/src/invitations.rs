//! Invitations: the first step of the invite / accept handshake.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An invitation as listed (its token is never kept, only its digest).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationInfo {
    /// Its id.
    pub id: Uuid,
    /// Event types the inviter sends to whoever accepts.
    pub scopes: Vec<String>,
    /// Hop limit for what the inviter sends.
    pub max_hops: i32,
    /// Filters on what the inviter sends (none: what the scopes cover).
    #[serde(default)]
    pub filters: Vec<crate::filters::Filter>,
    /// Deliver events with the same value of this attribute in the order they were
    /// accepted (none: unordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead (`skip` or `block`).
    #[serde(default)]
    pub on_dead: crate::types::OnDead,
    /// The peer's own delivery policy (each field left out: the instance's).
    #[serde(default)]
    pub delivery: crate::peers::DeliveryPolicy,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// The server that used it.
    pub used_by: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

use crate::request::*;
use kite_wire::fed::hop_limit;
use kite_wire::peering::Invitation;
use kite_wire::ApiError;

/// The longest an invitation may live: a year.
pub const MAX_TTL_SECS: i64 = 365 * 24 * 3600;

/// How long an invitation lives unless told: 7 days.
pub const DEFAULT_TTL_SECS: i64 = 7 * 24 * 3600;

/// `POST /api/federation/invitations`: `scopes` (what this side sends to whoever accepts;
/// default `["*"]`), `max_hops` (default 3), `ttl` in seconds (default 7 days).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewInvitation {
    /// Event types this side sends to whoever accepts (globs).
    #[schema(required = false, default = json!(["*"]))]
    pub scopes: Vec<String>,
    /// Hop limit of what this side sends.
    #[schema(required = false, default = 3, minimum = 1, maximum = 16)]
    pub max_hops: i32,
    /// Filters on what this side sends to whoever accepts (CloudEvents Subscriptions
    /// dialects; none by default).
    #[schema(required = false)]
    pub filters: Vec<crate::filters::Filter>,
    /// Deliver events with the same value of this attribute in the order they were
    /// accepted (none: unordered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead (`skip` or `block`).
    #[schema(required = false)]
    #[serde(skip_serializing_if = "crate::types::OnDead::is_default")]
    pub on_dead: crate::types::OnDead,
    /// The peer's own delivery policy (each field left out: the instance's).
    #[schema(required = false)]
    #[serde(skip_serializing_if = "crate::peers::DeliveryPolicy::is_default")]
    pub delivery: crate::peers::DeliveryPolicy,
    /// Seconds it stays valid (default 7 days).
    #[schema(required = false, default = 604800, minimum = 1)]
    pub ttl: i64,
}

impl Request for NewInvitation {
    const FIELDS: &'static [&'static str] = &[
        "scopes",
        "max_hops",
        "filters",
        "ordering_key",
        "on_dead",
        "delivery",
        "ttl",
    ];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let c = crate::peers::Conduct::read(m)?;
        Ok(NewInvitation {
            scopes: opt_scopes(m)?.unwrap_or_else(every_type),
            max_hops: opt_max_hops(m)?.unwrap_or(hop_limit::DEFAULT),
            filters: opt_filters(m)?.unwrap_or_default(),
            ordering_key: c.ordering_key,
            on_dead: c.on_dead,
            delivery: c.delivery,
            ttl: opt_int(m, "ttl", 1, MAX_TTL_SECS)?.unwrap_or(DEFAULT_TTL_SECS),
        })
    }
}

impl Default for NewInvitation {
    /// What an empty body asks for: every type, the default hop limit, 7 days.
    fn default() -> Self {
        Self {
            scopes: every_type(),
            max_hops: hop_limit::DEFAULT,
            filters: Vec::new(),
            ordering_key: None,
            on_dead: Default::default(),
            delivery: Default::default(),
            ttl: DEFAULT_TTL_SECS,
        }
    }
}

/// A new invitation as answered once: the string to hand to the other server.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedInvitation {
    /// Its id (to list or revoke it).
    pub id: Uuid,
    /// The invitation string, with its single-use token; shown only in this answer.
    pub invitation: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// What this side sends to whoever accepts.
    pub scopes: Vec<String>,
    /// Hop limit of what this side sends.
    pub max_hops: i32,
    /// Filters on what this side sends.
    pub filters: Vec<crate::filters::Filter>,
    /// Deliver events with the same value of this attribute in the order they were
    /// accepted (none: unordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead (`skip` or `block`).
    #[serde(default)]
    pub on_dead: crate::types::OnDead,
    /// The peer's own delivery policy (each field left out: the instance's).
    #[serde(default)]
    pub delivery: crate::peers::DeliveryPolicy,
}

/// `POST /api/federation/invitations/accept`: `invitation` (the string another server's
/// `kite peer invite` printed), optional `scopes` (what this side sends; default what the
/// invitation offers) and `max_hops` (default 3). The inviter's answer may narrow these
/// terms, never widen them (502 `peering_terms_refused`, nothing kept).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptInvitation {
    /// The string the other server's `kite peer invite` printed (`kiteinv_...`).
    #[schema(value_type = String, max_length = 8192)]
    #[serde(serialize_with = "encoded")]
    pub invitation: Invitation,
    /// Event types this side sends (default: what the invitation offers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Hop limit of what this side sends (default 3).
    #[schema(minimum = 1, maximum = 16)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<i32>,
    /// Filters on what this side sends (CloudEvents Subscriptions dialects; none by default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<crate::filters::Filter>,
    /// Deliver events with the same value of this attribute in the order they were
    /// accepted (none: unordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead (`skip` or `block`).
    #[serde(default, skip_serializing_if = "crate::types::OnDead::is_default")]
    #[schema(required = false)]
    pub on_dead: crate::types::OnDead,
    /// The peer's own delivery policy (each field left out: the instance's).
    #[serde(
        default,
        skip_serializing_if = "crate::peers::DeliveryPolicy::is_default"
    )]
    #[schema(required = false)]
    pub delivery: crate::peers::DeliveryPolicy,
}

/// An invitation as the string `kite peer invite` printed.
fn encoded<S: serde::Serializer>(i: &Invitation, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&i.encode())
}

impl Request for AcceptInvitation {
    const FIELDS: &'static [&'static str] = &[
        "invitation",
        "scopes",
        "max_hops",
        "filters",
        "ordering_key",
        "on_dead",
        "delivery",
    ];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let text = req_str(m, "invitation", 8192)?;
        let invitation = Invitation::decode(&text)
            .map_err(|e| ApiError::validation("invitation", e.to_string()))?;
        let c = crate::peers::Conduct::read(m)?;
        Ok(AcceptInvitation {
            invitation,
            scopes: opt_scopes(m)?,
            max_hops: opt_max_hops(m)?,
            filters: opt_filters(m)?.unwrap_or_default(),
            ordering_key: c.ordering_key,
            on_dead: c.on_dead,
            delivery: c.delivery,
        })
    }
}
