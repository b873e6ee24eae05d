//! The admin API under `/api/federation/...` (and `/api/events`), authenticated by the
//! team's API key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kite_bus::Message;
use kite_protocol::scope::{ScopeError, ScopeSet};
use kite_protocol::ssrf::Destination;
use kite_protocol::{token, ApiError};
use kite_store::keys::KeyGrant;
use kite_store::outbox::OutboxQuery;
use kite_store::peers::{NewPeer, PeerPatch};
use kite_store::types::{OutboxState, PeerStatus, Permission};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::hooks::{bearer, body_or_413};
use crate::{ApiErr, AppState};

/// Largest admin request body.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

type St = State<Arc<AppState>>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/federation/tokens",
            post(create_token).get(list_tokens),
        )
        .route("/api/federation/peers", post(create_peer).get(list_peers))
        .route(
            "/api/federation/peers/{id}",
            get(get_peer).patch(patch_peer).delete(delete_peer),
        )
        .route("/api/federation/peers/{id}/replay-dead", post(replay_dead))
        .route(
            "/api/federation/trusted-senders",
            post(create_sender).get(list_senders),
        )
        .route(
            "/api/federation/trusted-senders/{id}",
            axum::routing::delete(delete_sender).patch(patch_sender),
        )
        .route("/api/sources", post(create_source).get(list_sources))
        .route("/api/sources/{name}", axum::routing::delete(delete_source))
        .route("/api/sources/{name}/rotate", post(rotate_source))
        .route("/api/keys", post(create_key).get(list_keys))
        .route("/api/keys/{id}", axum::routing::delete(revoke_key))
        .route("/api/federation/outbox", get(list_outbox))
        .route("/api/events", get(list_events))
}

/// Authenticates the request's API key and checks it grants at least `need`.
pub(crate) async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    need: Permission,
) -> Result<KeyGrant, ApiErr> {
    let key = bearer(headers).ok_or_else(|| {
        ApiErr(ApiError::unauthorized(
            "an API key is required (Authorization: Bearer ...)",
        ))
    })?;
    let grant = st
        .store
        .authenticate_key(key)
        .await?
        .ok_or_else(|| ApiErr(ApiError::unauthorized("unknown or revoked API key")))?;
    if !grant.permission.allows(need) {
        return Err(ApiErr(ApiError::new(
            403,
            "forbidden",
            format!("this endpoint needs the {need} permission"),
        )));
    }
    Ok(grant)
}

fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiErr> {
    let body = body_or_413(body, MAX_ADMIN_BODY)?;
    if body.len() > MAX_ADMIN_BODY {
        return Err(ApiErr(ApiError::payload_too_large(MAX_ADMIN_BODY)));
    }
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiErr(ApiError::bad_request(
            "invalid_json",
            "body must be a JSON object",
        ))),
        Err(e) => Err(ApiErr(ApiError::bad_request(
            "invalid_json",
            format!("malformed JSON: {e}"),
        ))),
    }
}

fn opt_str(m: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, ApiErr> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= max => Ok(Some(s.clone())),
        Some(_) => Err(ApiErr(ApiError::validation(
            field,
            format!("{field} must be a non-empty string of at most {max} bytes"),
        ))),
    }
}

fn req_str(m: &Map<String, Value>, field: &str, max: usize) -> Result<String, ApiErr> {
    opt_str(m, field, max)?
        .ok_or_else(|| ApiErr(ApiError::validation(field, format!("{field} is required"))))
}

fn opt_int(m: &Map<String, Value>, field: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiErr> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(ApiErr(ApiError::validation(
                field,
                format!("{field} must be an integer within {lo}..={hi}"),
            ))),
        },
    }
}

fn opt_bool(m: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiErr> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiErr(ApiError::validation(
            field,
            format!("{field} must be true or false"),
        ))),
    }
}

/// Refuses peer URLs that point at loopback, private, link-local (metadata) or multicast
/// addresses, unless private peers are allowed. Delivery checks again at connect time.
async fn check_destination(st: &AppState, url: &str) -> Result<(), ApiErr> {
    if st.cfg.allow_private_peers {
        return Ok(());
    }
    let forbidden = || {
        ApiErr(
            ApiError::new(
                400,
                "forbidden_destination",
                "peer_hook_url resolves to a loopback, private, link-local or multicast address",
            )
            .with("field", json!("peer_hook_url")),
        )
    };
    let dest = Destination::parse(url)
        .ok_or_else(|| ApiErr(ApiError::validation("peer_hook_url", "invalid URL")))?;
    if dest.ip().is_some() {
        return if dest.literal_forbidden() {
            Err(forbidden())
        } else {
            Ok(())
        };
    }
    let (host, port) = (dest.host.as_str(), dest.port);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| {
            ApiErr(ApiError::validation(
                "peer_hook_url",
                format!("the host {host:?} does not resolve"),
            ))
        })?
        .collect();
    if addrs.is_empty()
        || addrs
            .iter()
            .any(|a| kite_protocol::ssrf::is_forbidden(a.ip()))
    {
        return Err(forbidden());
    }
    Ok(())
}

fn opt_url(m: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiErr> {
    let Some(u) = opt_str(m, field, 2048)? else {
        return Ok(None);
    };
    let bad = || {
        ApiErr(ApiError::validation(
            field,
            format!("{field} must be an absolute http(s) URL"),
        ))
    };
    let uri: axum::http::Uri = u.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(Some(u))
}

/// The wire forms of an enum's values, comma-separated (for error messages).
fn one_of(all: &[impl std::fmt::Display]) -> String {
    all.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt_status(m: &Map<String, Value>) -> Result<Option<PeerStatus>, ApiErr> {
    opt_str(m, "status", 32)?
        .map(|s| {
            PeerStatus::parse(&s).ok_or_else(|| {
                ApiErr(ApiError::validation(
                    "status",
                    format!("status must be one of {}", one_of(PeerStatus::ALL)),
                ))
            })
        })
        .transpose()
}

fn opt_scopes(m: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiErr> {
    let not_list = || {
        ApiErr(ApiError::validation(
            "scopes",
            "scopes must be an array of glob strings",
        ))
    };
    let items = match m.get("scopes") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(not_list()),
    };
    let scopes: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(not_list))
        .collect::<Result<_, _>>()?;
    ScopeSet::compile(&scopes).map_err(|e| {
        let mut err = ApiError::validation("scopes", e.to_string());
        if let ScopeError::Invalid { pattern, .. } = e {
            err = err.with("pattern", json!(pattern));
        }
        ApiErr(err)
    })?;
    Ok(Some(scopes))
}

fn parse_id(id: &str) -> Result<Uuid, ApiErr> {
    id.parse()
        .map_err(|_| ApiErr(ApiError::not_found("no such resource")))
}

async fn create_token(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let label = opt_str(&m, "label", 200)?.unwrap_or_default();
    let secret = token::mint_federation_token();
    let info = st.store.create_token(&g.team_id, &label, &secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": info.id, "label": info.label, "token": secret, "created_at": info.created_at})),
    )
        .into_response())
}

async fn list_tokens(State(st): St, headers: HeaderMap) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let items = st.store.list_tokens(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn create_peer(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let new = NewPeer {
        name: req_str(&m, "name", 128)?,
        peer_hook_url: opt_url(&m, "peer_hook_url")?.ok_or_else(|| {
            ApiErr(ApiError::validation(
                "peer_hook_url",
                "peer_hook_url is required",
            ))
        })?,
        outbound_token: req_str(&m, "outbound_token", 512)?,
        scopes: opt_scopes(&m)?.unwrap_or_else(|| vec!["*".to_string()]),
        max_hops: opt_int(&m, "max_hops", 1, 16)?.unwrap_or(3) as i32,
        status: opt_status(&m)?.unwrap_or(PeerStatus::Active),
        key_id: opt_str(&m, "key_id", 128)?,
    };
    check_destination(&st, &new.peer_hook_url).await?;
    let peer = st.store.create_peer(&g.team_id, &new).await?;
    if let Err(e) = st.bus.declare_peer(peer.id).await {
        tracing::warn!(peer = %peer.id, error = %e, "peer queue not declared yet; the router will");
    }
    Ok((StatusCode::CREATED, Json(json!(peer))).into_response())
}

/// A peer as the API shows it: the stored fields plus its pending and dead backlog.
fn peer_view(p: &kite_store::peers::Peer, backlog: Option<&(i64, i64)>) -> Value {
    let mut v = json!(p);
    let (pending, dead) = backlog.copied().unwrap_or((0, 0));
    v["pending"] = json!(pending);
    v["dead"] = json!(dead);
    v
}

async fn list_peers(State(st): St, headers: HeaderMap) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let peers = st.store.list_peers(&g.team_id).await?;
    let backlogs = st.store.peer_backlogs(&g.team_id).await?;
    let items: Vec<Value> = peers
        .iter()
        .map(|p| peer_view(p, backlogs.get(&p.id)))
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

async fn get_peer(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let peer = st.store.get_peer(&g.team_id, parse_id(&id)?).await?;
    let backlogs = st.store.peer_backlogs(&g.team_id).await?;
    Ok(Json(peer_view(&peer, backlogs.get(&peer.id))).into_response())
}

async fn patch_peer(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let id = parse_id(&id)?;
    let m = json_object(body)?;
    let patch = PeerPatch {
        name: opt_str(&m, "name", 128)?,
        peer_hook_url: opt_url(&m, "peer_hook_url")?,
        outbound_token: opt_str(&m, "outbound_token", 512)?,
        scopes: opt_scopes(&m)?,
        max_hops: opt_int(&m, "max_hops", 1, 16)?.map(|n| n as i32),
        status: opt_status(&m)?,
        key_id: opt_str(&m, "key_id", 128)?,
    };
    if let Some(u) = &patch.peer_hook_url {
        check_destination(&st, u).await?;
    }
    let peer = st
        .store
        .update_peer(&g.team_id, id, &patch, st.cfg.secret_overlap)
        .await?;
    Ok(Json(json!(peer)).into_response())
}

async fn delete_peer(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let id = parse_id(&id)?;
    let cancelled = st.store.delete_peer(&g.team_id, id).await?;
    if let Err(e) = st.bus.delete_peer_queue(id).await {
        tracing::warn!(peer = %id, error = %e, "could not delete the peer's queue");
    }
    Ok(Json(json!({"deleted": true, "cancelled": cancelled})).into_response())
}

async fn replay_dead(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let id = parse_id(&id)?;
    let m = json_object(body)?;
    let limit = opt_int(&m, "limit", 1, 100_000)?.unwrap_or(1000);
    // 404 for a peer of another team or none.
    st.store.get_peer(&g.team_id, id).await?;
    let ids = st.store.replay_dead(&g.team_id, id, limit).await?;
    if !ids.is_empty() {
        let publish = async {
            st.bus.declare_peer(id).await?;
            st.bus
                .send(&[Message::Deliver {
                    peer: id,
                    ids: ids.clone(),
                }])
                .await
        };
        if let Err(e) = publish.await {
            tracing::warn!(peer = %id, error = %e, "replayed rows not published; the sweeper will");
        }
    }
    Ok(Json(json!({"replayed": ids.len()})).into_response())
}

async fn create_sender(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let name = req_str(&m, "name", 128)?;
    let token = req_str(&m, "inbound_token", 512)?;
    let key_id = opt_str(&m, "key_id", 128)?;
    let legacy = opt_bool(&m, "legacy_signature")?.unwrap_or(false);
    let s = st
        .store
        .create_sender(&g.team_id, &name, &token, key_id.as_deref(), legacy)
        .await?;
    st.senders.invalidate().await;
    Ok((StatusCode::CREATED, Json(json!(s))).into_response())
}

async fn list_senders(State(st): St, headers: HeaderMap) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let items = st.store.list_senders(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn delete_sender(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    st.store.delete_sender(&g.team_id, parse_id(&id)?).await?;
    st.senders.invalidate().await;
    Ok(Json(json!({"deleted": true})).into_response())
}

#[derive(Debug, Deserialize)]
struct OutboxParams {
    peer_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn query_int(field: &str, v: Option<&str>, lo: i64, hi: i64) -> Result<Option<i64>, ApiErr> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(ApiErr(ApiError::validation(
                field,
                format!("{field} must be an integer within {lo}..={hi}"),
            ))),
        },
    }
}

async fn list_outbox(
    State(st): St,
    headers: HeaderMap,
    q: Result<Query<OutboxParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let Query(q) =
        q.map_err(|e| ApiErr(ApiError::bad_request("validation_error", e.body_text())))?;
    let peer_id = match q.peer_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map_err(|_| ApiErr(ApiError::validation("peer_id", "peer_id must be a UUID")))?,
        ),
    };
    let status = match q.status {
        Some(s) if !s.is_empty() => Some(OutboxState::parse(&s).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "status",
                format!("status must be one of {}", one_of(OutboxState::ALL)),
            ))
        })?),
        _ => None,
    };
    let query = OutboxQuery {
        peer_id,
        status,
        limit: query_int("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(100),
        cursor: query_int("cursor", q.cursor.as_deref(), 0, i64::MAX)?,
    };
    let (items, next) = st.store.list_outbox(&g.team_id, &query).await?;
    Ok(Json(json!({"items": items, "next_cursor": next})).into_response())
}

#[derive(Debug, Deserialize)]
struct EventParams {
    after: Option<String>,
    limit: Option<String>,
}

async fn list_events(
    State(st): St,
    headers: HeaderMap,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Read).await?;
    let Query(q) =
        q.map_err(|e| ApiErr(ApiError::bad_request("validation_error", e.body_text())))?;
    let after = query_int("after", q.after.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let limit = query_int("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(100);
    let events = st.store.events_after(&g.team_id, after, limit).await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    // The stored text goes out as it is, never parsed; a row that cannot be read is logged
    // and left out of the page.
    let items: Vec<EventItem> = events
        .into_iter()
        .filter_map(|e| {
            let raw = e
                .event
                .and_then(|t| RawValue::from_string(t).map_err(|err| err.to_string()));
            match raw {
                Ok(event) => Some(EventItem {
                    seq: e.seq,
                    source: e.hook_source,
                    received_at: e.received_at,
                    event,
                }),
                Err(why) => {
                    tracing::warn!(seq = e.seq, error = %why, "event listing skips an event it cannot read");
                    None
                }
            }
        })
        .collect();
    Ok(Json(EventPage {
        items,
        next_cursor: next,
    })
    .into_response())
}

/// One event of `GET /api/events`.
#[derive(Debug, Serialize)]
struct EventItem {
    seq: i64,
    source: String,
    received_at: chrono::DateTime<chrono::Utc>,
    event: Box<RawValue>,
}

/// A page of `GET /api/events`.
#[derive(Debug, Serialize)]
struct EventPage {
    items: Vec<EventItem>,
    next_cursor: Option<i64>,
}

async fn patch_sender(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let id = parse_id(&id)?;
    let m = json_object(body)?;
    let patch = kite_store::senders::SenderPatch {
        name: opt_str(&m, "name", 128)?,
        inbound_token: opt_str(&m, "inbound_token", 512)?,
        legacy_signature: opt_bool(&m, "legacy_signature")?,
    };
    let s = st
        .store
        .update_sender(&g.team_id, id, &patch, st.cfg.secret_overlap)
        .await?;
    st.senders.invalidate().await;
    Ok(Json(json!(s)).into_response())
}

async fn create_source(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let name = req_str(&m, "name", 64)?;
    kite_protocol::event::validate_source_name(&name).map_err(|_| {
        ApiErr(ApiError::validation(
            "name",
            "name must be 1-64 characters of a-z, 0-9, '_' or '-'",
        ))
    })?;
    if name == kite_protocol::event::FEDERATION_SOURCE {
        return Err(ApiErr(ApiError::validation(
            "name",
            "kite is the federation source; trust senders with /api/federation/trusted-senders",
        )));
    }
    let scheme = req_str(&m, "scheme", 32)?;
    if kite_protocol::provider::Scheme::parse(&scheme).is_none() {
        return Err(ApiErr(ApiError::validation(
            "scheme",
            format!(
                "scheme must be one of {}",
                kite_protocol::provider::Scheme::NAMES.join(", ")
            ),
        )));
    }
    let secret = req_str(&m, "secret", 512)?;
    let header = opt_str(&m, "header", 128)?.map(|h| h.to_ascii_lowercase());
    if let Some(h) = &header {
        if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(ApiErr(ApiError::validation(
                "header",
                "not a valid header name",
            )));
        }
    }
    let src = st
        .store
        .create_source(&g.team_id, &name, &scheme, &secret, header.as_deref())
        .await?;
    st.senders.invalidate().await;
    Ok((StatusCode::CREATED, Json(json!(src))).into_response())
}

async fn list_sources(State(st): St, headers: HeaderMap) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let items = st.store.list_sources(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn rotate_source(
    State(st): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let secret = req_str(&m, "secret", 512)?;
    let src = st
        .store
        .rotate_source(&g.team_id, &name, &secret, st.cfg.secret_overlap)
        .await?;
    st.senders.invalidate().await;
    Ok(Json(json!(src)).into_response())
}

async fn delete_source(
    State(st): St,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    st.store.delete_source(&g.team_id, &name).await?;
    st.senders.invalidate().await;
    Ok(Json(json!({"deleted": true})).into_response())
}

async fn create_key(
    State(st): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let m = json_object(body)?;
    let label = opt_str(&m, "label", 200)?.unwrap_or_default();
    let permission = match opt_str(&m, "permission", 16)? {
        None => Permission::Read,
        Some(p) => Permission::parse(&p).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "permission",
                format!("permission must be one of {}", one_of(Permission::ALL)),
            ))
        })?,
    };
    let (info, key) = st
        .store
        .create_api_key(&g.team_id, permission, &label)
        .await?;
    let mut v = json!(info);
    v["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_keys(State(st): St, headers: HeaderMap) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let items = st.store.list_api_keys(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn revoke_key(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let g = authorize(&st, &headers, Permission::Admin).await?;
    let info = st.store.revoke_api_key(&g.team_id, parse_id(&id)?).await?;
    Ok(Json(json!(info)).into_response())
}
