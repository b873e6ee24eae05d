//! Signed sources: `/hooks/{team}/{source}` with a provider's signature scheme and secret.

use chrono::{DateTime, Utc};
use kite_wire::ids::TeamId;
use kite_wire::provider::Scheme;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A configured hook source. Its secrets are never serialized.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    /// Source id.
    pub id: Uuid,
    /// Owning team.
    pub team_id: TeamId,
    /// The `{source}` of `/hooks/{team}/{source}`.
    pub name: String,
    /// Signature scheme (`stripe`, `github`, `slack`, `standard-webhooks`, `hmac-sha256`).
    pub scheme: Scheme,
    /// Header of the `hmac-sha256` scheme.
    pub header: Option<String>,
    /// The signing secret (shown never).
    #[serde(skip)]
    pub secret: String,
    /// The secret replaced by the last rotation, accepted until `previous_until`.
    #[serde(skip)]
    pub previous_secret: Option<String>,
    /// End of the rotation overlap.
    pub previous_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Source {
    /// Every secret currently accepted.
    pub fn secrets(&self) -> Vec<&str> {
        crate::accepted(&self.secret, self.previous_secret.as_deref())
    }
}

use crate::request::*;
use kite_wire::ApiError;

/// `POST /api/sources`: a source name, its signature scheme and secret, and for the
/// `hmac-sha256` scheme an optional header.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewSource {
    /// The `{source}` of `/hooks/{team}/{source}` (not `kite`).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub name: String,
    /// The provider's signature scheme.
    #[schema(example = "stripe")]
    pub scheme: Scheme,
    /// The signing secret the provider gave you.
    #[schema(min_length = 1, max_length = 512, write_only)]
    pub secret: String,
    /// The signature header of the `hmac-sha256` scheme.
    #[schema(max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl Request for NewSource {
    const FIELDS: &'static [&'static str] = &["name", "scheme", "secret", "header"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let name = req_str(m, "name", 64)?;
        kite_wire::event::validate_source_name(&name).map_err(|_| {
            ApiError::validation(
                "name",
                "name must be 1-64 characters of a-z, 0-9, '_' or '-'",
            )
        })?;
        if name == kite_wire::event::FEDERATION_SOURCE {
            return Err(ApiError::validation(
                "name",
                "kite is the federation source; trust senders with /api/federation/trusted-senders",
            ));
        }
        let scheme = Scheme::parse(&req_str(m, "scheme", 32)?).ok_or_else(|| {
            ApiError::validation(
                "scheme",
                format!("scheme must be one of {}", Scheme::NAMES.join(", ")),
            )
        })?;
        let secret = req_str(m, "secret", 512)?;
        let header = opt_str(m, "header", 128)?.map(|h| h.to_ascii_lowercase());
        if let Some(h) = &header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ApiError::validation("header", "not a valid header name"));
            }
        }
        Ok(NewSource {
            name,
            scheme,
            secret,
            header,
        })
    }
}

/// `POST /api/sources/{name}/rotate`: the new secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// The new signing secret.
    #[schema(min_length = 1, max_length = 512, write_only)]
    pub secret: String,
}

impl Request for Rotation {
    const FIELDS: &'static [&'static str] = &["secret"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        Ok(Rotation {
            secret: req_str(m, "secret", 512)?,
        })
    }
}

/// A hook source that took unsigned posts: no signature is configured for it, so it accepts
/// anyone's (`POST /api/sources` gives it one).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnsignedSource {
    /// The `{source}` of `/hooks/{team}/{source}`.
    pub name: String,
    /// Its first unsigned post.
    pub first_seen: DateTime<Utc>,
    /// Its last unsigned post (noted once a process sees it first).
    pub last_seen: DateTime<Utc>,
}

/// `GET /api/sources`: the signed sources, and the hook sources that took unsigned posts.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceList {
    /// The sources with a signature configured.
    pub items: Vec<Source>,
    /// Hook sources that took unsigned posts and have no signature configured: they accept
    /// anyone's posts.
    pub unsigned: Vec<UnsignedSource>,
}
