//! Federation tokens: the secrets a token peer signs with, listed by label.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A federation token as listed (the secret itself is never stored).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Token id.
    pub id: Uuid,
    /// Label given at creation.
    pub label: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

use crate::request::*;
use kite_wire::ApiError;

/// `POST /api/federation/tokens`: an optional label.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    /// A label to recognise it by.
    #[schema(required = false, max_length = 200, default = "")]
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
}

impl Request for NewToken {
    const FIELDS: &'static [&'static str] = &["label"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(NewToken {
            label: opt_str(m, "label", 200)?.unwrap_or_default(),
        })
    }
}

/// A new federation token as answered once: its listing plus the secret itself.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    /// Its listing.
    pub info: crate::tokens::TokenInfo,
    /// The token; shown only in this answer.
    pub token: String,
}
