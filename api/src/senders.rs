//! Trusted senders: instances allowed to post federated events to this one.

use chrono::{DateTime, Utc};
use kite_wire::ids::TeamId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A trusted sender. Its tokens are never serialized.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sender {
    /// Sender id.
    pub id: Uuid,
    /// Owning team.
    pub team_id: TeamId,
    /// Unique name within the team.
    pub name: String,
    /// The key id the sender names in `X-Kite-Key-Id`.
    pub key_id: String,
    /// Accept the body-only `X-Kite-Signature` (peers running Kite) from this sender.
    pub legacy_signature: bool,
    /// The shared secret (shown never).
    #[serde(skip)]
    pub inbound_token: String,
    /// The secret replaced by the last rotation, accepted until `previous_until`.
    #[serde(skip)]
    pub previous_inbound_token: Option<String>,
    /// End of the rotation overlap.
    pub previous_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Sender {
    /// Every secret currently accepted: the current one, and the previous one during overlap.
    pub fn secrets(&self) -> Vec<&str> {
        crate::accepted(&self.inbound_token, self.previous_inbound_token.as_deref())
    }
}

/// A partial update of a trusted sender.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SenderPatch {
    /// New name.
    #[schema(min_length = 1, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New secret (the old one stays accepted for the overlap).
    #[schema(min_length = 1, max_length = 512, write_only)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_token: Option<String>,
    /// Legacy signature acceptance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_signature: Option<bool>,
}

use crate::request::*;
use kite_wire::ApiError;

/// `POST /api/federation/trusted-senders`: name and inbound_token are required.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewSender {
    /// Unique name within the team.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// The shared secret the sender signs with.
    #[schema(min_length = 1, max_length = 512, write_only)]
    pub inbound_token: String,
    /// The key id the sender names in `X-Kite-Key-Id` (default: made up).
    #[schema(max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Accept the body-only `X-Kite-Signature` (peers running Kite).
    #[schema(required = false, default = false)]
    pub legacy_signature: bool,
}

impl Request for NewSender {
    const FIELDS: &'static [&'static str] =
        &["name", "inbound_token", "key_id", "legacy_signature"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(NewSender {
            name: req_str(m, "name", 128)?,
            inbound_token: req_str(m, "inbound_token", 512)?,
            key_id: opt_str(m, "key_id", 128)?,
            legacy_signature: opt_bool(m, "legacy_signature")?.unwrap_or(false),
        })
    }
}

/// `PATCH /api/federation/trusted-senders/{id}`: any of name, inbound_token, legacy_signature.
impl Request for SenderPatch {
    const FIELDS: &'static [&'static str] = &["name", "inbound_token", "legacy_signature"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(SenderPatch {
            name: opt_str(m, "name", 128)?,
            inbound_token: opt_str(m, "inbound_token", 512)?,
            legacy_signature: opt_bool(m, "legacy_signature")?,
        })
    }
}
