//! What other servers call: the descriptor (`GET /.well-known/kite/server`), the accept
//! endpoint of an invitation and heartbeats (`/federation/v1/teams/{team}/...`), every call
//! signed with the caller's identity key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use kite_federation::{FedError, FedRefusal};
use kite_protocol::identity::{self, PublicKey};
use kite_protocol::peering::{
    AcceptRequest, AcceptResponse, BackfillPage, BackfillRequest, Heartbeat, HeartbeatAck,
    KeyQuery, KeyQueryResponse,
};
use kite_protocol::scope::ScopeSet;
use kite_protocol::ApiError;
use kite_store::federation::{InvitationRefusal, NewHandshakePeer};
use kite_store::types::{FederationMode, PeerStatus};
use kite_store::StoreError;

use crate::hooks::body_or_413;
use crate::{ApiErr, AppState};

/// Largest server-to-server request body (descriptors and heartbeats are small).
const MAX_FEDERATION_BODY: usize = 64 * 1024;

impl From<FedRefusal> for ApiErr {
    fn from(e: FedRefusal) -> Self {
        match e {
            FedRefusal::Api(e) => ApiErr(e),
            FedRefusal::Store(e) => e.into(),
        }
    }
}

/// A failure talking to another server, as this server's answer: the other side's own
/// refusal keeps its status and code; not reaching it is 502.
pub(crate) fn fed_error(e: FedError) -> ApiErr {
    match e {
        FedError::Store(e) => e.into(),
        FedError::Refused {
            status,
            code,
            message,
            ..
        } => ApiErr(ApiError::new(
            status,
            peer_code(&code),
            format!("the other server refused ({code}): {message}"),
        )),
        FedError::NoPublicUrl => ApiErr(ApiError::new(503, "no_public_url", e.to_string())),
        e @ (FedError::Unreachable { .. } | FedError::BadAnswer(_)) => {
            ApiErr(ApiError::new(502, "peer_unreachable", e.to_string()))
        }
    }
}

/// The stable codes another kite server answers the handshake with; others are `peer_refused`.
fn peer_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_invitation",
        "invitation_used",
        "invitation_expired",
        "federation_closed",
        "peer_not_allowed",
        "already_peered",
        "peer_revoked",
        "invalid_signature",
        "stale_timestamp",
        "forbidden_destination",
        "team_not_found",
        "not_granted",
        "invalid_origin_signature",
        "unknown_sender",
        "not_found",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("peer_refused")
}

async fn known_team(st: &AppState, team: &str) -> Result<(), ApiErr> {
    if st.team_known(team).await? {
        Ok(())
    } else {
        Err(ApiErr(ApiError::new(
            404,
            "team_not_found",
            format!("no team {team:?}"),
        )))
    }
}

/// A server-to-server call from a handshake peer of `team`: its bounded body, checked
/// against the keys pinned for the peer and read as `T` (`what` names it in a refusal).
struct PeerCall<T> {
    peer: kite_store::peers::Peer,
    peers: Arc<kite_store::cache::PeerSnapshot>,
    req: T,
}

async fn peer_call<T: serde::de::DeserializeOwned>(
    st: &AppState,
    team: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<PeerCall<T>, ApiErr> {
    let body = body_or_413(body, MAX_FEDERATION_BODY)?;
    known_team(st, team).await?;
    let peers = st.peers.get().await?;
    let peer = st.fed.verify_peer(team, &peers, headers, &body).await?;
    let req = serde_json::from_slice(&body).map_err(|e| {
        ApiErr(ApiError::bad_request(
            "invalid_body",
            format!("not {what}: {e}"),
        ))
    })?;
    Ok(PeerCall { peer, peers, req })
}

/// `GET /.well-known/kite/server`.
#[utoipa::path(get, path = "/.well-known/kite/server", tag = "server-to-server", security(()),
    summary = "This server's descriptor: its name, keys and endpoints",
    responses((status = 200, description = "The descriptor", body = kite_protocol::peering::ServerDescriptor)))]
pub(crate) async fn descriptor(State(st): State<Arc<AppState>>) -> Result<Response, ApiErr> {
    let d = st.fed.descriptor().await.map_err(fed_error)?;
    Ok(Json(d).into_response())
}

/// `POST /federation/v1/teams/{team}/accept`: another server uses an invitation of this
/// team. The request is signed with a key of the descriptor it carries; the token works
/// once; the policy decides who may.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/accept", tag = "server-to-server",
    security(()), summary = "Another server uses an invitation of this team", description = "Signed by the calling server (Standard Webhooks `v1a` with `X-Kite-Key-Id` \
        and `X-Kite-Server`), checked against the keys pinned for it.",
    params(("team" = String, Path, description = "The team called")),
    request_body = AcceptRequest,
    responses((status = 200, description = "Peered", body = AcceptResponse)))]
pub(crate) async fn accept(
    State(st): State<Arc<AppState>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body_or_413(body, MAX_FEDERATION_BODY)?;
    known_team(&st, &team).await?;
    st.fed.check_open(&team).await?;
    let req: AcceptRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiErr(ApiError::bad_request(
            "invalid_body",
            format!("not an accept request: {e}"),
        ))
    })?;
    let server = &req.server.server_name;
    if let Err(mode) = st.fed.policy(&team).await?.admits(server) {
        return Err(ApiErr(match mode {
            FederationMode::Closed => ApiError::new(
                403,
                "federation_closed",
                "this team's federation policy is closed",
            ),
            _ => ApiError::new(
                403,
                "peer_not_allowed",
                format!("this team federates by invitation with allowed peers only, and {server:?} is not one"),
            ),
        }));
    }
    // Proof of possession: signed by a key the accepting server publishes.
    let invalid = |m: &str| ApiErr(ApiError::new(401, "invalid_signature", m.to_string()));
    let claimed =
        identity::claimed(&headers).ok_or_else(|| invalid("the request is not signed"))?;
    if &claimed.server_name != server {
        return Err(invalid(
            "X-Kite-Server is not the server the request describes",
        ));
    }
    let key = req
        .server
        .keys
        .iter()
        .find(|k| k.key_id == claimed.key_id && k.valid_until.is_none_or(|t| t > Utc::now()))
        .and_then(|k| PublicKey::from_base64(&k.public_key))
        .ok_or_else(|| invalid("X-Kite-Key-Id names none of the described keys"))?;
    identity::verify_request(&key, &headers, &body, Utc::now().timestamp())
        .map_err(|_| invalid("signature missing, invalid or stale"))?;
    if server == &st.cfg.instance_id {
        return Err(ApiErr(ApiError::bad_request(
            "self_peering",
            "a server cannot peer with itself",
        )));
    }
    let base = req
        .server
        .endpoints
        .base_url
        .trim_end_matches('/')
        .to_string();
    let hook = kite_protocol::peering::hook_url(&base, &req.team);
    crate::admin::check_destination(&st, &hook).await?;
    if let Some(scopes) = &req.scopes {
        ScopeSet::compile(scopes)
            .map_err(|e| ApiErr(ApiError::validation("scopes", e.to_string())))?;
    }
    let accepter = NewHandshakePeer {
        server_name: server.clone(),
        base_url: base,
        team: req.team.clone(),
        scopes: Vec::new(),
        max_hops: 3,
        keys: req.server.keys.clone(),
        status: PeerStatus::Accepted,
    };
    let (inv, peer) = match st
        .store
        .accept_invitation(&team, &req.token, &accepter, req.scopes.as_deref())
        .await
    {
        Ok(Ok(done)) => done,
        Ok(Err(refusal)) => {
            let (code, message) = match refusal {
                InvitationRefusal::Unknown => {
                    ("invalid_invitation", "no invitation has this token")
                }
                InvitationRefusal::Used => ("invitation_used", "this invitation was used already"),
                InvitationRefusal::Expired => ("invitation_expired", "this invitation expired"),
            };
            return Err(ApiErr(ApiError::new(401, code, message)));
        }
        Err(StoreError::Conflict) => {
            return Err(ApiErr(ApiError::new(
                409,
                "already_peered",
                format!("this team already peers with {server:?} (or has a peer of that name)"),
            )))
        }
        Err(e) => return Err(e.into()),
    };
    st.fed.invalidate().await;
    if let Err(e) = st.bus.declare_peer(peer.id).await {
        tracing::warn!(peer = %peer.id, error = %e, "peer queue not declared yet; the router will");
    }
    tracing::info!(team = %team, peer = %server, "invitation accepted");
    Ok(Json(AcceptResponse {
        server_name: st.cfg.instance_id.clone(),
        team,
        scopes: inv.scopes.clone(),
        max_hops: inv.max_hops,
        your_scopes: req.scopes.unwrap_or(inv.scopes),
        your_max_hops: req.max_hops.clamp(1, 16),
    })
    .into_response())
}

/// `POST /federation/v1/teams/{team}/heartbeat`: a handshake peer is still there; its
/// current keys are pinned.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/heartbeat", tag = "server-to-server",
    security(()), summary = "A handshake peer is still there, with its current keys", description = "Signed by the calling server (Standard Webhooks `v1a` with `X-Kite-Key-Id` \
        and `X-Kite-Server`), checked against the keys pinned for it.",
    params(("team" = String, Path, description = "The team called")),
    request_body = Heartbeat,
    responses((status = 200, description = "Taken", body = HeartbeatAck)))]
pub(crate) async fn heartbeat(
    State(st): State<Arc<AppState>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let PeerCall { peer, req: hb, .. } =
        peer_call::<Heartbeat>(&st, &team, &headers, body, "a heartbeat").await?;
    if !hb.keys.is_empty() {
        st.fed.pin(peer.id, &hb.keys).await?;
    }
    let cfg = st.fed.config();
    st.store
        .record_heartbeat_received(peer.id, cfg.heartbeat_interval, cfg.heartbeat_misses)
        .await?;
    Ok((
        StatusCode::OK,
        Json(HeartbeatAck {
            status: "ok".to_string(),
            server_name: st.cfg.instance_id.clone(),
        }),
    )
        .into_response())
}

/// `POST /federation/v1/teams/{team}/keys/query`: a handshake peer asks which keys a server
/// publishes, as far as this one knows (its own, or those it pinned for its peer).
#[utoipa::path(post, path = "/federation/v1/teams/{team}/keys/query", tag = "server-to-server",
    security(()), summary = "Which keys a server publishes, as far as this one knows", description = "Signed by the calling server (Standard Webhooks `v1a` with `X-Kite-Key-Id` \
        and `X-Kite-Server`), checked against the keys pinned for it.",
    params(("team" = String, Path, description = "The team called")),
    request_body = KeyQuery,
    responses((status = 200, description = "Its keys", body = KeyQueryResponse)))]
pub(crate) async fn keys_query(
    State(st): State<Arc<AppState>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let PeerCall { peers, req: q, .. } =
        peer_call::<KeyQuery>(&st, &team, &headers, body, "a key query").await?;
    let keys = st
        .fed
        .vouch(&team, &peers, &q.server_name)
        .await?
        .ok_or_else(|| {
            ApiErr(ApiError::not_found(format!(
                "this server knows no server {:?}",
                q.server_name
            )))
        })?;
    Ok(Json(KeyQueryResponse {
        server_name: q.server_name,
        keys,
    })
    .into_response())
}

/// `POST /federation/v1/teams/{team}/backfill`: a handshake peer pulls a page of history:
/// only event types it holds a live `backfill` grant for, at most the policy's
/// `max_backfill_events_per_request`, each as it would have been forwarded to it, origin
/// signature included.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/backfill", tag = "server-to-server",
    security(()), summary = "A page of history, for a peer holding a backfill grant", description = "Signed by the calling server (Standard Webhooks `v1a` with `X-Kite-Key-Id` \
        and `X-Kite-Server`), checked against the keys pinned for it.",
    params(("team" = String, Path, description = "The team called")),
    request_body = BackfillRequest,
    responses((status = 200, description = "A page of events", body = BackfillPage)))]
pub(crate) async fn backfill(
    State(st): State<Arc<AppState>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let PeerCall { peer, req, .. } =
        peer_call::<BackfillRequest>(&st, &team, &headers, body, "a backfill request").await?;
    let granted = st.fed.backfill_scopes(peer.id).await?.ok_or_else(|| {
        ApiErr(ApiError::new(
            403,
            "not_granted",
            "no live backfill grant here for this server",
        ))
    })?;
    let wanted = req
        .types
        .as_ref()
        .map(|t| ScopeSet::compile(t))
        .transpose()
        .map_err(|e| ApiErr(ApiError::validation("types", e.to_string())))?;
    let max = st
        .fed
        .policy(&team)
        .await?
        .max_backfill_events_per_request
        .max(1);
    let limit = i64::from(req.limit.max(1)).min(i64::from(max));
    let rows = st
        .store
        .history(&team, req.after.unwrap_or(0), req.since, limit)
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|e| e.seq))
        .flatten();
    let server = peer.server_name.as_deref().unwrap_or_default();
    let mut events = Vec::new();
    for e in rows {
        let covered =
            granted.matches(&e.ce_type) && wanted.as_ref().is_none_or(|w| w.matches(&e.ce_type));
        // What the peer forwarded (or made) it holds already.
        if !covered || e.fed.visited(server) {
            continue;
        }
        let Ok(rest) = &e.rest else { continue };
        match st
            .fed
            .forward_signed(rest, &e.fed, e.origin_sig.as_ref())
            .await
        {
            Ok(text) => match serde_json::value::RawValue::from_string(text) {
                Ok(raw) => events.push(raw),
                Err(err) => tracing::warn!(seq = e.seq, error = %err, "stored event not served"),
            },
            Err(err) => tracing::warn!(seq = e.seq, error = %err, "stored event not served"),
        }
    }
    Ok(Json(BackfillPage {
        events,
        next_cursor,
    })
    .into_response())
}
