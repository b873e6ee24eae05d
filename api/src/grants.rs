//! Grants: scoped, expiring permissions a team gives a handshake peer (`send`, `backfill`).

use chrono::{DateTime, Utc};
use kite_wire::ids::PeerId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::request::*;
use crate::types::GrantPermission;
use kite_wire::ApiError;
use serde_json::Value;

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

/// `POST /api/federation/peers/{id}/grants`: `permissions` (`send`, `backfill`), `scopes`
/// (default `["*"]`), and `expires_at` (RFC 3339) or `ttl` in seconds (default 30 days).
/// Read, its `ttl` is resolved into `expires_at`: what the store keeps.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewGrant {
    /// What the grant allows (`send`, `backfill`); at least one.
    #[schema(min_items = 1)]
    pub permissions: Vec<GrantPermission>,
    /// Event types it covers (globs).
    #[schema(required = false, default = json!(["*"]))]
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339); not with `ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Seconds it lives (default 30 days); not with `expires_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl: Option<i64>,
}

/// How long a grant lives unless told: 30 days.
const DEFAULT_GRANT_TTL_SECS: i64 = 30 * 24 * 3600;

/// The most events one backfill call pulls.
const MAX_BACKFILL: i64 = 100_000;

impl Request for NewGrant {
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
        Ok(NewGrant {
            permissions,
            scopes: opt_scopes(m)?.unwrap_or_else(every_type),
            expires_at: Some(expires_at),
            ttl: None,
        })
    }
}

/// Where a backfill starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Since {
    /// An RFC 3339 time: events received from then on (inclusive).
    Time(DateTime<Utc>),
    /// The peer's cursor (a non-negative integer): events after it.
    Cursor(i64),
}

impl Since {
    /// An RFC 3339 time.
    pub fn time(t: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| Since::Time(t.with_timezone(&Utc)))
    }
}

impl std::str::FromStr for Since {
    type Err = String;

    /// A cursor (a non-negative integer) or an RFC 3339 time, as a person writes either.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Since::Cursor(n)),
            Ok(_) => Err("a cursor is a non-negative integer".into()),
            Err(_) => {
                Since::time(s.trim()).ok_or_else(|| "neither an RFC 3339 time nor a cursor".into())
            }
        }
    }
}

/// `POST /api/federation/peers/{id}/backfill`: `since` (an RFC 3339 time, inclusive, or the
/// peer's cursor), `limit` (default 1,000), `types` (globs; default every type granted).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Backfill {
    /// Where to start (default: the peer's oldest event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    /// The most events to pull.
    #[schema(required = false, default = 1000, minimum = 1, maximum = 100000)]
    pub limit: i64,
    /// Only these event types (globs); default every type granted.
    #[serde(skip_serializing_if = "Option::is_none")]
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
        let since = match m.get("since") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(Since::time(t).ok_or_else(bad_since)?),
            Some(v) => Some(Since::Cursor(
                v.as_i64().filter(|n| *n >= 0).ok_or_else(bad_since)?,
            )),
        };
        Ok(Backfill {
            since,
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
