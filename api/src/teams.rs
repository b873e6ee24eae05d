//! Teams: made and removed by the operator; everything else belongs to one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A team as listed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Team {
    /// The team id (`/hooks/{team}/...`).
    pub id: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

use crate::request::*;
use kite_wire::ApiError;

/// `POST /api/teams`: the new team's id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewTeam {
    /// The team id (`/hooks/{team}/...`).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub id: String,
}

impl Request for NewTeam {
    const FIELDS: &'static [&'static str] = &["id"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let id = req_str(m, "id", 64)?;
        kite_wire::event::validate_source_name(&id).map_err(|_| {
            ApiError::validation("id", "id must be 1-64 characters of a-z, 0-9, '_' or '-'")
        })?;
        Ok(NewTeam { id })
    }
}

/// A new team as answered once: the team and its first admin key.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedTeam {
    #[serde(flatten)]
    /// The team.
    pub team: crate::teams::Team,
    /// The first admin key; shown only in this answer.
    pub admin_key: String,
    /// Its listing.
    pub admin_key_info: crate::keys::ApiKeyInfo,
}
