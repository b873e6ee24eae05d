//! Grants: scoped, expiring permissions a team gives a handshake peer (`send`, `backfill`).

use chrono::{DateTime, Utc};
use kite_wire::ids::PeerId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::GrantPermission;

/// A grant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// Its id.
    pub id: Uuid,
    /// The peer it is given to.
    pub peer_id: PeerId,
    /// What it allows.
    pub permissions: Vec<GrantPermission>,
    /// The event types it covers (globs).
    pub scopes: Vec<String>,
    /// When it stops working (None: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl Grant {
    /// Whether it works at `now` and allows `permission`.
    pub fn allows(&self, permission: GrantPermission, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now) && self.permissions.contains(&permission)
    }
}

/// A grant to make.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// What it allows.
    pub permissions: Vec<GrantPermission>,
    /// The event types it covers.
    pub scopes: Vec<String>,
    /// When it stops working (None: never).
    pub expires_at: Option<DateTime<Utc>>,
}

use crate::request::*;
use kite_wire::ApiError;
use serde_json::Value;

/// How long a grant lives unless told: 30 days.
const DEFAULT_GRANT_TTL_SECS: i64 = 30 * 24 * 3600;

/// The most events one backfill call pulls.
const MAX_BACKFILL: i64 = 100_000;

/// `POST /api/federation/peers/{id}/grants`: `permissions` (`send`, `backfill`), `scopes`
/// (default `["*"]`), and `expires_at` (RFC 3339) or `ttl` in seconds (default 30 days).
#[derive(Debug)]
pub struct GrantRequest(pub NewGrant);

/// The body of `POST /api/federation/peers/{id}/grants`, as documented (read by
/// [`GrantRequest`]).
#[derive(utoipa::ToSchema)]
pub struct GrantBody {
    /// What the grant allows (`send`, `backfill`); at least one.
    #[schema(min_items = 1)]
    pub permissions: Vec<GrantPermission>,
    /// Event types it covers (globs).
    #[schema(required = false, default = json!(["*"]))]
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339); not with `ttl`.
    pub expires_at: Option<DateTime<Utc>>,
    /// Seconds it lives (default 30 days); not with `expires_at`.
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl: Option<i64>,
}

impl Request for GrantRequest {
    const FIELDS: &'static [&'static str] = &["permissions", "scopes", "expires_at", "ttl"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::validation(
                "permissions",
                format!(
                    "permissions must be a non-empty array of {}",
                    one_of(GrantPermission::ALL)
                ),
            )
        };
        let permissions = match m.get("permissions") {
            Some(Value::Array(v)) if !v.is_empty() => v
                .iter()
                .map(|p| p.as_str().and_then(GrantPermission::parse).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad()),
        };
        let expires_at = match (
            opt_str(m, "expires_at", 64)?,
            opt_int(m, "ttl", 1, 10 * 365 * 24 * 3600)?,
        ) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "expires_at",
                    "give expires_at or ttl, not both",
                ))
            }
            (Some(t), None) => DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::validation("expires_at", "expires_at must be an RFC 3339 time")
                })?,
            (None, ttl) => {
                Utc::now() + chrono::Duration::seconds(ttl.unwrap_or(DEFAULT_GRANT_TTL_SECS))
            }
        };
        Ok(GrantRequest(NewGrant {
            permissions,
            scopes: opt_scopes(m)?.unwrap_or_else(|| vec!["*".to_string()]),
            expires_at: Some(expires_at),
        }))
    }
}

/// `POST /api/federation/peers/{id}/backfill`: `since` (an RFC 3339 time, inclusive, or the
/// peer's cursor), `limit` (default 1,000), `types` (globs; default every type granted).
/// The body of `POST /api/federation/peers/{id}/backfill`, as documented (read by
/// [`Backfill`]).
#[derive(utoipa::ToSchema)]
pub struct BackfillBody {
    /// Where to start: an RFC 3339 time (inclusive) or the peer's cursor (an integer).
    #[schema(value_type = Option<serde_json::Value>)]
    pub since: Option<String>,
    /// The most events to pull.
    #[schema(required = false, default = 1000, minimum = 1, maximum = 100000)]
    pub limit: i64,
    /// Only these event types (globs); default every type granted.
    pub types: Option<Vec<String>>,
}

#[derive(Debug)]
/// A backfill as read from [`BackfillBody`].
pub struct Backfill {
    /// Events from this time on (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Events after this cursor of the peer.
    pub after: Option<i64>,
    /// The most events to pull.
    pub limit: i64,
    /// Only these event types (globs).
    pub types: Option<Vec<String>>,
}

impl Request for Backfill {
    const FIELDS: &'static [&'static str] = &["since", "limit", "types"];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let bad_since = || {
            ApiError::validation(
                "since",
                "since must be an RFC 3339 time or a cursor (a non-negative integer)",
            )
        };
        let (since, after) = match m.get("since") {
            None | Some(Value::Null) => (None, None),
            Some(Value::String(t)) => (
                Some(
                    DateTime::parse_from_rfc3339(t)
                        .map_err(|_| bad_since())?
                        .with_timezone(&Utc),
                ),
                None,
            ),
            Some(v) => (
                None,
                Some(v.as_i64().filter(|n| *n >= 0).ok_or_else(bad_since)?),
            ),
        };
        Ok(Backfill {
            since,
            after,
            limit: opt_int(m, "limit", 1, MAX_BACKFILL)?.unwrap_or(1000),
            types: opt_scopes_named(m, "types")?,
        })
    }
}

/// What a backfill did.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backfilled {
    /// Events the peer sent.
    pub fetched: u64,
    /// Stored here (new).
    pub stored: u64,
    /// Held here already.
    pub duplicates: u64,
    /// Refused: not proven by its origin, of a type not asked for or not granted, or not an
    /// event.
    pub rejected: u64,
    /// Pages asked for.
    pub pages: u32,
}
