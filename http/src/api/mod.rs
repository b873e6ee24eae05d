//! The admin API under `/api/federation/...`, `/api/sources`, `/api/keys` and
//! `/api/events`, authenticated by the team's API key. One module a resource; this one holds
//! the routes, the extractors every handler uses ([`Key`] naming its action in the one
//! permission table, [`crate::access`], and [`Valid`]),
//! the answer shapes they share and the field validators. Each resource module declares its
//! request models ([`FromBody`]) and answer models.

mod grants;
mod keys;
mod listings;
mod peers;
mod senders;
mod sources;
mod teams;
mod tokens;
mod trust;

pub(crate) use peers::check_destination;

use kite_wire::Code;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kite_store::outbox::OutboxQuery;
use kite_store::peers::{NewPeer, PeerPatch};
use kite_store::types::{OutboxState, PeerStatus, Permission};
use kite_wire::fed::hop_limit;
use kite_wire::scope::{ScopeError, ScopeSet};
use kite_wire::ssrf::Destination;
use kite_wire::{token, ApiError};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub(crate) use crate::access::{act, Key};
use crate::hooks::{bearer, body_or_413};
use crate::{ApiErr, AppState};

/// Largest admin request body.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

type St = State<Arc<AppState>>;

/// Every admin route, each registered with its OpenAPI operation (`#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(peers::create_peer, peers::list_peers))
        .routes(routes!(
            peers::get_peer,
            peers::patch_peer,
            peers::delete_peer
        ))
        .routes(routes!(peers::replay_dead))
        .routes(routes!(peers::refresh_peer))
        .routes(routes!(grants::create_grant, grants::list_grants))
        .routes(routes!(grants::delete_grant))
        .routes(routes!(grants::backfill))
        .routes(routes!(senders::create_sender, senders::list_senders))
        .routes(routes!(senders::delete_sender, senders::patch_sender))
        .routes(routes!(sources::create_source, sources::list_sources))
        .routes(routes!(sources::delete_source))
        .routes(routes!(sources::rotate_source))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::session))
        .routes(routes!(teams::create_team, teams::list_teams))
        .routes(routes!(teams::delete_team))
        .routes(routes!(trust::identity))
        .routes(routes!(trust::rotate_identity))
        .routes(routes!(trust::get_policy, trust::put_policy))
        .routes(routes!(trust::create_invitation, trust::list_invitations))
        .routes(routes!(trust::accept_invitation))
        .routes(routes!(trust::delete_invitation))
        .routes(routes!(listings::list_outbox))
        .routes(routes!(listings::list_events))
        .routes(routes!(listings::show_event))
}

/// Refuses a token another sender of the team holds already (a trusted sender's, or a token
/// peer's inbound token): 409 `token_in_use`, so who sent a request is never a matter of
/// which of two holders is found first.
pub(crate) async fn token_unused(st: &AppState, team: &str, token: &str) -> Result<(), ApiErr> {
    let senders = st.senders.get().await?;
    match senders.find(team, token) {
        None => Ok(()),
        Some(s) => Err(ApiErr(
            ApiError::new(
                Code::TokenInUse,
                format!(
                    "{:?} holds this token already: a token names one sender",
                    s.name
                ),
            )
            .with("holder", json!(s.name)),
        )),
    }
}

/// A typed admin request body, read field by field from the JSON object the client sent, so
/// every refusal names its field (400 `validation_failed` with `field`); a field it does not
/// know is refused (400 `unknown_field`), never ignored, so a client never believes kite
/// does what it does not.
pub(crate) trait FromBody: Sized {
    /// The fields it reads.
    const FIELDS: &'static [&'static str];

    /// Validates the object and builds the request.
    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr>;
}

/// Refuses the first field of `m` that `T` does not read.
fn known_fields<T: FromBody>(m: &Map<String, Value>) -> Result<(), ApiErr> {
    match m.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiErr(
            ApiError::new(
                Code::UnknownField,
                format!(
                    "{k:?} is not a field of this request (its fields: {})",
                    T::FIELDS.join(", ")
                ),
            )
            .with("field", json!(k)),
        )),
    }
}

/// A validated admin request body: a JSON object of at most [`MAX_ADMIN_BODY`] bytes (an
/// empty body is an empty object), then [`FromBody`]; else 413 or 400 `invalid_json`.
pub(crate) struct Valid<T>(pub(crate) T);

impl<S: Send + Sync, T: FromBody> FromRequest<S> for Valid<T> {
    type Rejection = ApiErr;

    async fn from_request(req: Request, st: &S) -> Result<Self, ApiErr> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase());
        let body = Bytes::from_request(req, st).await;
        let declared_json = content_type
            .as_deref()
            .map(|c| c == "application/json" || c.ends_with("+json"));
        let not_json = || {
            ApiErr(ApiError::new(
                Code::UnsupportedMediaType,
                "admin request bodies are JSON objects (content-type: application/json)",
            ))
        };
        if let (Some(false), Ok(b)) = (declared_json, &body) {
            if !b.is_empty() {
                return Err(not_json());
            }
        }
        let m = match json_object(body) {
            // Without a content type, a body that is not JSON was not meant as JSON.
            Err(e) if declared_json.is_none() && e.0.message.starts_with("malformed") => {
                return Err(not_json())
            }
            other => other?,
        };
        known_fields::<T>(&m)?;
        T::from_body(&m).map(Valid)
    }
}

/// A list answer: `{"items": [...]}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Items<T> {
    /// The items, in the listing's order.
    pub(crate) items: Vec<T>,
}

/// The answer of a delete.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Deleted {
    /// Always true.
    pub(crate) deleted: bool,
    /// Outbox rows the delete cancelled (peers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cancelled: Option<u64>,
}

/// A page of a listing: `{"items": [...], "next_cursor": N | null}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Page<T> {
    /// The items of this page.
    pub(crate) items: Vec<T>,
    /// The cursor of the next page, or null on the last one.
    pub(crate) next_cursor: Option<i64>,
}

impl Deleted {
    fn answer(cancelled: Option<u64>) -> Response {
        Json(Deleted {
            deleted: true,
            cancelled,
        })
        .into_response()
    }
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
        Ok(_) => Err(ApiErr(ApiError::new(
            Code::InvalidJson,
            "body must be a JSON object",
        ))),
        Err(e) => Err(ApiErr(ApiError::new(
            Code::InvalidJson,
            format!("malformed JSON: {e}"),
        ))),
    }
}

fn opt_str(m: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, ApiErr> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= max && !s.contains('\0') => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiErr(ApiError::validation(
            field,
            format!("{field} must be a non-empty string of at most {max} bytes, without NUL"),
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

/// The optional `max_hops` of a body, within [`hop_limit`]'s bounds.
fn opt_max_hops(m: &Map<String, Value>) -> Result<Option<i32>, ApiErr> {
    let n = opt_int(
        m,
        "max_hops",
        i64::from(hop_limit::MIN),
        i64::from(hop_limit::MAX),
    )?;
    n.map(|n| hop_limit::check(n).map_err(|e| ApiErr(ApiError::validation("max_hops", e))))
        .transpose()
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
            PeerStatus::parse(&s)
                .filter(|s| PeerStatus::SETTABLE.contains(s))
                .ok_or_else(|| {
                    ApiErr(ApiError::validation(
                        "status",
                        format!("status must be one of {}", one_of(PeerStatus::SETTABLE)),
                    ))
                })
        })
        .transpose()
}

fn opt_scopes(m: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiErr> {
    opt_scopes_named(m, "scopes")
}

/// An optional array of event type globs in `field`, each checked to compile.
fn opt_scopes_named(
    m: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, ApiErr> {
    let not_list = || {
        ApiErr(ApiError::validation(
            field,
            format!("{field} must be an array of glob strings"),
        ))
    };
    let items = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(not_list()),
    };
    let scopes: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(not_list))
        .collect::<Result<_, _>>()?;
    ScopeSet::compile(&scopes).map_err(|e| {
        let mut err = ApiError::validation(field, e.to_string());
        if let ScopeError::Invalid { pattern, .. } = e {
            err = err.with("pattern", json!(pattern));
        }
        ApiErr(err)
    })?;
    Ok(Some(scopes))
}

/// A resource's id from its path (an unparsable one names no resource: 404).
fn parse_id<T: From<Uuid>>(id: &str) -> Result<T, ApiErr> {
    id.parse::<Uuid>()
        .map(T::from)
        .map_err(|_| ApiErr(ApiError::not_found("no such resource")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn code(r: Result<impl std::fmt::Debug, ApiErr>) -> (u16, String, Option<Value>) {
        let e = r.expect_err("refused").0;
        let field = e.body()["error"].get("field").cloned();
        (e.status, e.code.to_string(), field)
    }

    /// One admin request body through the real extractor, in-process (no services needed).
    async fn through<T: FromBody + std::fmt::Debug + Send + 'static>(
        body: &'static [u8],
    ) -> (u16, Value) {
        use tower::ServiceExt;
        let app: axum::Router = axum::Router::new().route(
            "/",
            axum::routing::post(|Valid(v): Valid<T>| async move { format!("{v:?}") }),
        );
        let req = axum::http::Request::post("/")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .expect("request");
        let res = app.oneshot(req).await.expect("answer");
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    #[tokio::test]
    async fn request_models_refuse_bad_fields_by_name() {
        let (s, v) = through::<NewPeer>(br#"{"name":"b","outbound_token":"t"}"#).await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("peer_hook_url")));
        let (s, v) = through::<NewPeer>(
            br#"{"name":"b","peer_hook_url":"http://127.0.0.1:1/hooks/default/kite","outbound_token":"t","max_hops":17}"#,
        )
        .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("max_hops")));
        let (s, v) = through::<NewPeer>(
            br#"{"name":"b","peer_hook_url":"http://127.0.0.1:1/x","outbound_token":"t"}"#,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let text = v.as_str().unwrap_or_default();
        assert!(
            text.contains("max_hops: 3") && text.contains(r#"scopes: ["*"]"#),
            "{text}"
        );
        let (s, v) = through::<PeerPatch>(br#"{"status":"asleep"}"#).await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("status")));
        let (s, v) = through::<keys::NewKey>(br#"{"permission":"root"}"#).await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("permission")));
        let (s, v) =
            through::<sources::NewSource>(br#"{"name":"kite","scheme":"stripe","secret":"x"}"#)
                .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("name")));
        let (s, v) =
            through::<sources::NewSource>(br#"{"name":"shop","scheme":"md5","secret":"x"}"#).await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("scheme")));
        let (s, v) = through::<senders::NewSender>(
            br#"{"name":"a","inbound_token":"t","legacy_signature":"yes"}"#,
        )
        .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("legacy_signature")));
        let (s, v) = through::<peers::ReplayDead>(br#"[1]"#).await;
        assert_eq!((s, &v["error"]["code"]), (400, &json!("invalid_json")));
        let (s, _) = through::<tokens::NewToken>(b"").await;
        assert_eq!(s, 200);
    }

    #[test]
    fn bodies_must_be_small_json_objects() {
        assert_eq!(json_object(Ok(Bytes::new())).expect("empty"), Map::new());
        assert_eq!(
            code(json_object(Ok(Bytes::from_static(b"[1]")))).1,
            "invalid_json"
        );
        assert_eq!(
            code(json_object(Ok(Bytes::from_static(b"{nope")))).1,
            "invalid_json"
        );
        let big = Bytes::from(vec![b' '; MAX_ADMIN_BODY + 1]);
        assert_eq!(code(json_object(Ok(big))).0, 413);
    }

    #[test]
    fn fields_are_validated_with_their_name() {
        let m = obj(
            json!({"name": "  ", "n": 99, "flag": "yes", "scopes": ["ok.*", 3],
                           "bad_scopes": ["a["], "status": "sleeping", "url": "ftp://x"}),
        );
        assert_eq!(code(opt_str(&m, "name", 10)).2, Some(json!("name")));
        assert_eq!(code(req_str(&m, "missing", 10)).2, Some(json!("missing")));
        assert_eq!(code(opt_int(&m, "n", 1, 16)).2, Some(json!("n")));
        assert_eq!(code(opt_bool(&m, "flag")).2, Some(json!("flag")));
        assert_eq!(code(opt_scopes(&m)).2, Some(json!("scopes")));
        let bad = obj(json!({"scopes": ["a["]}));
        assert_eq!(code(opt_scopes(&bad)).0, 400);
        assert_eq!(code(opt_status(&m)).2, Some(json!("status")));
        assert_eq!(code(opt_url(&m, "url")).2, Some(json!("url")));
        let ok = obj(json!({"status": "paused", "scopes": ["stripe.*"], "n": 3}));
        assert_eq!(opt_status(&ok).expect("status"), Some(PeerStatus::Paused));
        assert_eq!(opt_int(&ok, "n", 1, 16).expect("n"), Some(3));
        assert_eq!(
            opt_scopes(&ok).expect("scopes"),
            Some(vec!["stripe.*".to_string()])
        );
        assert_eq!(code(parse_id::<Uuid>("not-a-uuid")).0, 404);
        assert_eq!(
            code(query_int("limit", Some("0"), 1, 10)).2,
            Some(json!("limit"))
        );
    }
}
