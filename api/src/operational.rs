//! A team's operational endpoint: where kite POSTs its own CloudEvents about the team's
//! peers, deliveries and identity (`kite.peer.degraded`, `kite.delivery.dead`, ...), signed
//! with Standard Webhooks.

use serde::{Deserialize, Serialize};

use crate::request::*;
use kite_wire::ApiError;

/// A team's operational endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationalEndpoint {
    /// Where the events are POSTed.
    pub url: String,
    /// When it was set first.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When its URL last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Its deliveries waiting or retrying.
    pub pending: i64,
    /// Its deliveries made.
    pub delivered: i64,
    /// Its deliveries given up after the last attempt.
    pub dead: i64,
    /// The last failure, if its last attempt failed.
    pub last_error: Option<String>,
}

/// The answer to a `PUT`: the endpoint and, when the `PUT` made it (201), its signing
/// secret, shown this once (a `PUT` that changes the URL keeps the secret: 200, no secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationalEndpointSet {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: OperationalEndpoint,
    /// The Standard Webhooks secret (`whsec_...`) its requests are signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `PUT /api/operational-endpoint`: `{"url": ...}` (http or https).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PutOperationalEndpoint {
    /// Where the events are POSTed.
    pub url: String,
}

impl Request for PutOperationalEndpoint {
    const FIELDS: &'static [&'static str] = &["url"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let url =
            opt_url(m, "url")?.ok_or_else(|| ApiError::validation("url", "url is required"))?;
        Ok(Self { url })
    }
}
