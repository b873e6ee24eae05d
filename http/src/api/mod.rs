//! The admin API under `/api/federation/...`, `/api/sources`, `/api/keys` and
//! `/api/events`, authenticated by the team's API key. One module a resource; this one holds
//! the routes, the extractors every handler uses ([`Key`] naming its action in the one
//! permission table, [`crate::access`], and [`Valid`]). Each resource module holds its
//! handlers; their request and answer types are `kite_api`'s.

mod grants;
pub(crate) mod keys;
mod listings;
mod operational;
mod outbox;
mod peers;
mod senders;
pub(crate) mod sources;
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
use kite_store::types::{OutboxState, PeerStatus};
use kite_wire::scope::ScopeSet;
use kite_wire::ssrf::Destination;
use kite_wire::{token, ApiError};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub(crate) use crate::access::{act, Key};
use crate::hooks::{bearer, body_or_413};
use crate::{ApiErr, AppState};
pub(crate) use kite_api::common::{Deleted, Items, Page};
use kite_api::request::one_of;

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
        .routes(routes!(peers::peer_stats))
        .routes(routes!(outbox::resend))
        .routes(routes!(outbox::cancel))
        .routes(routes!(outbox::replay))
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
        .routes(routes!(
            operational::put_operational,
            operational::get_operational,
            operational::delete_operational
        ))
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

/// A validated admin request body: a JSON object of at most [`MAX_ADMIN_BODY`] bytes (an
/// empty body is an empty object), then read as `kite_api::request::Request`; else 413 or
/// 400 `invalid_json`.
pub(crate) struct Valid<T>(pub(crate) T);

impl<S: Send + Sync, T: kite_api::request::Request> FromRequest<S> for Valid<T> {
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
        kite_api::request::read::<T>(&m).map(Valid).map_err(ApiErr)
    }
}

fn deleted(cancelled: Option<u64>) -> Response {
    Json(Deleted {
        deleted: true,
        cancelled,
    })
    .into_response()
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

    fn code(r: Result<impl std::fmt::Debug, ApiErr>) -> (u16, String, Option<Value>) {
        let e = r.expect_err("refused").0;
        let field = e.body()["error"].get("field").cloned();
        (e.status, e.code.to_string(), field)
    }

    /// One admin request body through the real extractor, in-process (no services needed).
    async fn through<T: kite_api::request::Request + std::fmt::Debug + Send + 'static>(
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
        let (s, v) = through::<kite_api::keys::NewKey>(br#"{"permission":"root"}"#).await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("permission")));
        let (s, v) = through::<kite_api::sources::NewSource>(
            br#"{"name":"kite","scheme":"stripe","secret":"x"}"#,
        )
        .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("name")));
        let (s, v) = through::<kite_api::sources::NewSource>(
            br#"{"name":"shop","scheme":"md5","secret":"x"}"#,
        )
        .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("scheme")));
        let (s, v) = through::<kite_api::senders::NewSender>(
            br#"{"name":"a","inbound_token":"t","legacy_signature":"yes"}"#,
        )
        .await;
        assert_eq!((s, &v["error"]["field"]), (400, &json!("legacy_signature")));
        let (s, v) = through::<kite_api::peers::ReplayDead>(br#"[1]"#).await;
        assert_eq!((s, &v["error"]["code"]), (400, &json!("invalid_json")));
        let (s, _) = through::<kite_api::tokens::NewToken>(b"").await;
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
}
