//! API keys: the team's admin credentials (listed by prefix, never the key).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::Permission;

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: Uuid,
    /// Public prefix (`kite_<8 hex>`), to recognise a key.
    pub prefix: String,
    /// `read`, `write` or `admin`.
    pub permission: Permission,
    /// Label.
    pub label: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

use crate::request::*;
use kite_wire::ApiError;

/// `POST /api/keys`: an optional label and permission (default `read`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// A label to recognise it by.
    #[schema(required = false, max_length = 200, default = "")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// What it may do.
    #[schema(required = false, default = "read")]
    pub permission: Permission,
}

impl Request for NewKey {
    const FIELDS: &'static [&'static str] = &["permission", "label"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(NewKey {
            label: opt_str(m, "label", 200)?.unwrap_or_default(),
            permission: opt_enum(m, "permission", Permission::ALL)?.unwrap_or(Permission::Read),
        })
    }
}

/// A new key as answered once: its listing plus the secret itself.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    /// Its listing.
    pub info: crate::keys::ApiKeyInfo,
    /// The key; shown only in this answer.
    pub key: String,
}

/// Who a key is: `GET /api/session`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    /// The key's team.
    pub team_id: kite_wire::ids::TeamId,
    /// What the key may do.
    pub permission: Permission,
    /// The key's id.
    pub key_id: Uuid,
}
