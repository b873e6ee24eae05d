//! A handshake peer's grants (`/api/federation/peers/{id}/grants`) and pulling its history
//! (`POST /api/federation/peers/{id}/backfill`).

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use kite_store::grants::NewGrant;
use kite_store::types::GrantPermission;
use kite_wire::event::{build_event, Hook, FEDERATION_SOURCE};
use kite_wire::peering::BackfillRequest;
use kite_wire::Code;

use super::*;
use crate::hooks::{admit, Admissible, Admitted};

/// How long a grant lives unless told: 30 days.
const DEFAULT_GRANT_TTL_SECS: i64 = 30 * 24 * 3600;
/// The most events one backfill call pulls.
const MAX_BACKFILL: i64 = 100_000;
/// The most pages one backfill call asks for.
const MAX_PAGES: u32 = 10_000;

/// `POST /api/federation/peers/{id}/grants`: `permissions` (`send`, `backfill`), `scopes`
/// (default `["*"]`), and `expires_at` (RFC 3339) or `ttl` in seconds (default 30 days).
#[derive(Debug)]
pub(crate) struct GrantRequest(NewGrant);

/// The body of `POST /api/federation/peers/{id}/grants`, as documented (read by
/// [`GrantRequest`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct GrantBody {
    /// What the grant allows (`send`, `backfill`); at least one.
    #[schema(min_items = 1)]
    permissions: Vec<GrantPermission>,
    /// Event types it covers (globs).
    #[schema(required = false, default = json!(["*"]))]
    scopes: Vec<String>,
    /// When it stops working (RFC 3339); not with `ttl`.
    expires_at: Option<DateTime<Utc>>,
    /// Seconds it lives (default 30 days); not with `expires_at`.
    #[schema(minimum = 1, maximum = 315360000)]
    ttl: Option<i64>,
}

impl FromBody for GrantRequest {
    const FIELDS: &'static [&'static str] = &["permissions", "scopes", "expires_at", "ttl"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let bad = || {
            ApiErr(ApiError::validation(
                "permissions",
                format!(
                    "permissions must be a non-empty array of {}",
                    one_of(GrantPermission::ALL)
                ),
            ))
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
                return Err(ApiErr(ApiError::validation(
                    "expires_at",
                    "give expires_at or ttl, not both",
                )))
            }
            (Some(t), None) => DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiErr(ApiError::validation(
                        "expires_at",
                        "expires_at must be an RFC 3339 time",
                    ))
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

#[utoipa::path(post, path = "/api/federation/peers/{id}/grants", tag = "peers",
    summary = "Grant a handshake peer sending or backfilling event types, until a time", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body = GrantBody,
    responses((status = 201, description = "The grant", body = kite_store::grants::Grant)))]
pub(super) async fn create_grant(
    State(st): St,
    Key(g, _): Key<act::CreateGrant>,
    Path(id): Path<String>,
    Valid(GrantRequest(new)): Valid<GrantRequest>,
) -> Result<Response, ApiErr> {
    let grant = st
        .store
        .create_grant(&g.team_id, parse_id(&id)?, &new)
        .await?;
    st.fed.invalidate().await;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

#[utoipa::path(get, path = "/api/federation/peers/{id}/grants", tag = "peers",
    summary = "A peer's grants", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    responses((status = 200, description = "The grants", body = Items<kite_store::grants::Grant>)))]
pub(super) async fn list_grants(
    State(st): St,
    Key(g, _): Key<act::ListGrants>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    st.store.get_peer(&g.team_id, id).await?;
    let items = st.store.list_grants(&g.team_id, id).await?;
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(delete, path = "/api/federation/peers/{id}/grants/{grant}", tag = "peers",
    summary = "Revoke a grant",
    params(("id" = String, Path, description = "The peer's id"), ("grant" = String, Path, description = "The grant's id")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_grant(
    State(st): St,
    Key(g, _): Key<act::DeleteGrant>,
    Path((id, grant)): Path<(String, String)>,
) -> Result<Response, ApiErr> {
    st.store
        .delete_grant(&g.team_id, parse_id(&id)?, parse_id(&grant)?)
        .await?;
    st.fed.invalidate().await;
    Ok(Deleted::answer(None))
}

/// `POST /api/federation/peers/{id}/backfill`: `since` (an RFC 3339 time, inclusive, or the
/// peer's cursor), `limit` (default 1,000), `types` (globs; default every type granted).
/// The body of `POST /api/federation/peers/{id}/backfill`, as documented (read by
/// [`Backfill`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct BackfillBody {
    /// Where to start: an RFC 3339 time (inclusive) or the peer's cursor (an integer).
    #[schema(value_type = Option<serde_json::Value>)]
    since: Option<String>,
    /// The most events to pull.
    #[schema(required = false, default = 1000, minimum = 1, maximum = 100000)]
    limit: i64,
    /// Only these event types (globs); default every type granted.
    types: Option<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Backfill {
    since: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: i64,
    types: Option<Vec<String>>,
}

impl FromBody for Backfill {
    const FIELDS: &'static [&'static str] = &["since", "limit", "types"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let bad_since = || {
            ApiErr(ApiError::validation(
                "since",
                "since must be an RFC 3339 time or a cursor (a non-negative integer)",
            ))
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
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct Backfilled {
    /// Events the peer sent.
    fetched: u64,
    /// Stored here (new).
    stored: u64,
    /// Held here already.
    duplicates: u64,
    /// Refused: not proven by its origin, of a type not asked for or not granted, or not an
    /// event.
    rejected: u64,
    /// Pages asked for.
    pages: u32,
}

#[utoipa::path(post, path = "/api/federation/peers/{id}/backfill", tag = "peers", operation_id = "pull_backfill",
    summary = "Pull the history a handshake peer holds, every event's origin signature verified", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body(content = BackfillBody, description = "Optional"),
    responses((status = 200, description = "What was fetched and stored", body = Backfilled)))]
pub(super) async fn backfill(
    State(st): St,
    Key(g, _): Key<act::Backfill>,
    Path(id): Path<String>,
    Valid(b): Valid<Backfill>,
) -> Result<Response, ApiErr> {
    let peer = st.store.get_peer(&g.team_id, parse_id(&id)?).await?;
    if peer.server_name.is_none() {
        return Err(ApiErr(ApiError::new(
            Code::NotAHandshakePeer,
            "only a peer made by invitation (kite peer invite / accept) can be backfilled from",
        )));
    }
    let wanted = b
        .types
        .as_ref()
        .map(|t| ScopeSet::compile(t))
        .transpose()
        .map_err(|e| ApiErr(ApiError::validation("types", e.to_string())))?;
    let mut done = Backfilled::default();
    let mut after = b.after;
    let mut left = b.limit;
    while left > 0 && done.pages < MAX_PAGES {
        let page = st
            .fed
            .backfill_page(
                &peer,
                &BackfillRequest {
                    since: b.since,
                    after,
                    limit: u32::try_from(left).unwrap_or(u32::MAX),
                    types: b.types.clone(),
                },
            )
            .await
            .map_err(ApiErr::from)?;
        done.pages += 1;
        for raw in page
            .events
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            done.fetched += 1;
            left -= 1;
            match store_one(
                &st,
                &g.team_id,
                &peer,
                wanted.as_ref(),
                raw.get().as_bytes(),
            )
            .await
            {
                Ok(Admitted::Stored { .. }) => done.stored += 1,
                Ok(Admitted::Duplicate | Admitted::Loop) => done.duplicates += 1,
                Err(e) => {
                    tracing::info!(peer = %peer.name, code = %e.0.code, error = %e.0.message, "backfilled event refused");
                    done.rejected += 1;
                }
            }
        }
        match page.next_cursor {
            Some(c) if after.is_none_or(|a| c > a) => after = Some(c),
            _ => break,
        }
    }
    Ok(Json(done).into_response())
}

/// One backfilled event: read like a federated event from `peer`, held to what was asked
/// (`wanted` types) and to what the peer may send here (its `send` grants), its provenance
/// proven as any event a peer sends (`Federation::verify_event`), stored unless held already.
async fn store_one(
    st: &AppState,
    team: &str,
    peer: &kite_store::peers::Peer,
    wanted: Option<&ScopeSet>,
    body: &[u8],
) -> Result<Admitted, ApiErr> {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    let hook = Hook {
        team,
        source: FEDERATION_SOURCE,
        scheme: None,
        instance_id: &st.cfg.instance_id,
    };
    let incoming = build_event(hook, &headers, body, Utc::now())?;
    if wanted.is_some_and(|w| !w.matches(&incoming.ty)) {
        return Err(ApiErr(ApiError::new(
            Code::NotRequested,
            format!(
                "the page holds an event of type {:?}, not asked for",
                incoming.ty
            ),
        )));
    }
    let peers = st.peers.get().await?;
    st.fed
        .check_send(
            team,
            &peers,
            &kite_federation::provenance::Sender::Peer(Box::new(peer.clone())),
            &incoming.ty,
        )
        .await?;
    let verified = st
        .fed
        .verify_event(team, &peers, peer, incoming, body)
        .await?;
    admit(
        st,
        team.to_string(),
        FEDERATION_SOURCE.to_string(),
        Admissible::Peer(verified),
    )
    .await
}
