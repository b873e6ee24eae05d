//! What other servers call: the descriptor (`GET /.well-known/kite/server`), the accept
//! endpoint of an invitation, heartbeats, key queries and backfill
//! (`/federation/v1/teams/{team}/...`). Every call is signed with the caller's identity key
//! for this server, method and path, taken once, and charged to the caller's rate (to its
//! address' until it proved who it is).

use kite_wire::Code;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use kite_federation::{Inbound, ReplayClaim};
use kite_store::events::StoredEvent;
use kite_store::federation::{InvitationInfo, KeySource, NewHandshakePeer};
use kite_store::peers::Peer;
use kite_store::types::PeerStatus;
use kite_store::StoreError;
use kite_wire::identity::{self, PublicKey, Target};
use kite_wire::peering::{
    self, AcceptRequest, AcceptResponse, BackfillPage, BackfillRequest, Heartbeat, HeartbeatAck,
    KeyQuery, KeyQueryResponse, Message,
};
use kite_wire::scope::ScopeSet;
use kite_wire::ApiError;

use crate::hooks::body_or_413;
use crate::{ApiErr, AppState};

/// Largest server-to-server request body (descriptors and heartbeats are small).
const MAX_FEDERATION_BODY: usize = 64 * 1024;

/// The team, if it exists; else 404 `team_not_found`.
async fn known_team(st: &AppState, team: &str) -> Result<(), ApiErr> {
    if st.team_known(team).await? {
        Ok(())
    } else {
        Err(ApiErr(ApiError::new(
            Code::TeamNotFound,
            format!("no team {team:?}"),
        )))
    }
}

/// A server-to-server call from a handshake peer of `team`: its bounded body, checked
/// against the keys pinned for the peer, charged to its rate and read as `T`; the claim on
/// the request is kept when the handler succeeds ([`PeerCall::done`]).
struct PeerCall<T> {
    peer: kite_store::peers::Peer,
    key: kite_wire::peering::PublishedKey,
    peers: Arc<kite_store::cache::PeerSnapshot>,
    req: T,
    claim: ReplayClaim,
}

impl<T> PeerCall<T> {
    /// The call succeeded: a replay of it is refused from now on.
    fn done(self, r: Response) -> Response {
        self.claim.keep();
        r
    }
}

/// How a server-to-server request arrived: its client address, method and path.
pub(crate) struct Arrived {
    client: SocketAddr,
    method: Method,
    uri: Uri,
}

impl FromRequestParts<Arc<AppState>> for Arrived {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiErr> {
        let ConnectInfo(client) = ConnectInfo::<SocketAddr>::from_request_parts(parts, st)
            .await
            .map_err(|_| ApiErr(ApiError::internal()))?;
        Ok(Self {
            client,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        })
    }
}

impl Arrived {
    /// A refusal before the caller proved who it is, charged to its address' rate.
    fn anonymous(&self, st: &AppState, e: ApiErr) -> ApiErr {
        match st.anon_limit.check(&self.client.ip().to_string()) {
            Ok(()) => e,
            Err(limited) => limited,
        }
    }
}

/// Reads and checks a handshake peer's call to `team` (see [`PeerCall`]).
async fn peer_call<T: Message>(
    st: &AppState,
    team: &str,
    arrived: &Arrived,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PeerCall<T>, ApiErr> {
    let anon = |e: ApiErr| arrived.anonymous(st, e);
    let body = body_or_413(body, MAX_FEDERATION_BODY).map_err(anon)?;
    known_team(st, team).await.map_err(anon)?;
    let peers = st.peers.get().await?;
    let inbound = Inbound {
        method: arrived.method.as_str(),
        path: arrived.uri.path(),
        headers,
    };
    let verified = st
        .fed
        .verify_peer(team, &peers, &inbound, &body)
        .await
        .map_err(|e| anon(e.into()))?;
    st.fed_limit.check(&verified.peer.id.to_string())?;
    let req = peering::read(&body, MAX_FEDERATION_BODY).map_err(|e| ApiErr(e.to_api()))?;
    Ok(PeerCall {
        peer: verified.peer,
        key: verified.key,
        peers,
        req,
        claim: verified.claim,
    })
}

/// `GET /.well-known/kite/server`.
#[utoipa::path(get, path = "/.well-known/kite/server", tag = "server-to-server", security(()),
    summary = "This server's descriptor: its name, keys and endpoints",
    responses((status = 200, description = "The descriptor", body = kite_wire::peering::ServerDescriptor)))]
pub(crate) async fn descriptor(State(st): State<Arc<AppState>>) -> Result<Response, ApiErr> {
    let d = st.fed.descriptor().await.map_err(ApiErr::from)?;
    Ok(Json(d).into_response())
}

/// `POST /federation/v1/teams/{team}/accept`: another server uses an invitation of this
/// team. The request is signed with a key of the descriptor it carries; the token works
/// once; the policy decides who may.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/accept", tag = "server-to-server",
    security(()), summary = "Another server uses an invitation of this team", description = "Signed by the calling server for this server, method and path (`kite1` in \
        `webhook-signature`, with `X-Kite-Key-Id`, `X-Kite-Server` and `X-Kite-Destination`), \
        checked against the keys pinned for it, taken once.",
    params(("team" = String, Path, description = "The team called")),
    request_body = AcceptRequest,
    responses((status = 200, description = "Peered", body = AcceptResponse)))]
pub(crate) async fn accept(
    State(st): State<Arc<AppState>>,
    arrived: Arrived,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    accept_call(&st, &team, &arrived, &headers, body)
        .await
        .map_err(|e| arrived.anonymous(&st, e))
}

/// The accept call, in the order that tells a stranger nothing: the invitation's token is
/// checked before any name is resolved or any server called.
async fn accept_call(
    st: &AppState,
    team: &str,
    arrived: &Arrived,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body_or_413(body, MAX_FEDERATION_BODY)?;
    let req: AcceptRequest =
        peering::read(&body, MAX_FEDERATION_BODY).map_err(|e| ApiErr(e.to_api()))?;
    let version = check_accept_request(st, team, &req).await?;
    let claim = proof_of_possession(st, arrived, headers, &body, &req)?;
    let base = checked_base_url(st, &req).await?;
    let (inv, peer) = store_acceptance(st, team, &req, base, version).await?;
    claim.keep();
    st.fed.invalidate().await;
    st.peers.invalidate().await;
    if let Err(e) = st.bus.declare_peer(peer.id).await {
        tracing::warn!(peer = %peer.id, error = %e, "peer queue not declared yet; the router will");
    }
    let server = &req.server.server_name;
    tracing::info!(team = %team, peer = %server, "invitation accepted");
    Ok(Json(AcceptResponse {
        server_name: st.cfg.instance_id.clone(),
        team: team.into(),
        scopes: inv.scopes.clone(),
        max_hops: inv.max_hops,
        your_scopes: req.scopes.unwrap_or(inv.scopes),
        your_max_hops: req.max_hops,
    })
    .into_response())
}

/// The checks before any signature: the invitation's token first (an unknown team has
/// none: nothing about the team, its policy or the names and URLs given is told to a caller
/// without one), then the team's policy, a protocol version in common (answered) and a
/// server other than this one.
async fn check_accept_request(
    st: &AppState,
    team: &str,
    req: &AcceptRequest,
) -> Result<&'static str, ApiErr> {
    if let Err(refusal) = st.store.check_invitation(team, &req.token).await? {
        return Err(ApiErr::from(refusal));
    }
    st.fed.check_open(team).await?;
    let server = &req.server.server_name;
    let version = agreed_version(&req.server.protocol_versions)?;
    if server == &st.cfg.instance_id {
        return Err(ApiErr(ApiError::new(
            Code::SelfPeering,
            "a server cannot peer with itself",
        )));
    }
    st.fed.check_admitted(team, server).await?;
    Ok(version)
}

/// Proof of possession: the request is signed for this server by a key the accepting
/// server describes; answers the claim on the request (taken once).
fn proof_of_possession(
    st: &AppState,
    arrived: &Arrived,
    headers: &HeaderMap,
    body: &[u8],
    req: &AcceptRequest,
) -> Result<ReplayClaim, ApiErr> {
    let server = &req.server.server_name;
    let invalid = |m: &str| ApiErr(ApiError::new(Code::InvalidSignature, m.to_string()));
    let claimed = identity::claimed(headers).ok_or_else(|| invalid("the request is not signed"))?;
    if &claimed.server_name != server {
        return Err(invalid(
            "X-Kite-Server is not the server the request describes",
        ));
    }
    if claimed.destination.as_deref() != Some(st.cfg.instance_id.as_str()) {
        return Err(ApiErr(ApiError::new(
            Code::WrongDestination,
            "this request is not for this server: a signed request is good only at the server \
             it was made for",
        )));
    }
    let key = req
        .server
        .keys
        .iter()
        .find(|k| k.key_id == claimed.key_id && k.valid_until.is_none_or(|t| t > Utc::now()))
        .and_then(|k| PublicKey::from_base64(&k.public_key))
        .ok_or_else(|| invalid("X-Kite-Key-Id names none of the described keys"))?;
    let target = Target {
        method: arrived.method.as_str(),
        destination: &st.cfg.instance_id,
        path: arrived.uri.path(),
    };
    let now = Utc::now().timestamp();
    identity::verify_request(&key, &target, headers, body, now)
        .map_err(|_| invalid("signature missing, invalid or stale"))?;
    Ok(st.fed.claim(server, headers, now)?)
}

/// The accepting server's base URL, once its hook URL is a destination this instance may
/// send to and the server at it is the one the request describes, with the keys it shows.
async fn checked_base_url(st: &AppState, req: &AcceptRequest) -> Result<String, ApiErr> {
    let server = &req.server.server_name;
    let base = req
        .server
        .endpoints
        .base_url
        .trim_end_matches('/')
        .to_string();
    let hook = kite_wire::peering::hook_url(&base, &req.team);
    crate::api::check_destination(st, &hook).await?;
    // The server at the URL it gives must be the one it says it is, with the keys it shows.
    let published = st.fed.fetch_descriptor(&base).await.map_err(|e| {
        ApiErr(ApiError::new(
            Code::DescriptorMismatch,
            format!("the descriptor at the given base_url cannot be read: {e}"),
        ))
    })?;
    let mismatch = published.server_name != *server
        || !req.server.keys.iter().all(|k| {
            published
                .keys
                .iter()
                .any(|p| p.key_id == k.key_id && p.public_key == k.public_key)
        });
    if mismatch {
        return Err(ApiErr(ApiError::new(
            Code::DescriptorMismatch,
            format!(
                "the server at {base} is {:?} with other keys than this request shows",
                published.server_name
            ),
        )));
    }
    Ok(base)
}

/// Uses the invitation: stores the accepting server as an accepted handshake peer of the
/// team; answers the invitation and the new peer.
async fn store_acceptance(
    st: &AppState,
    team: &str,
    req: &AcceptRequest,
    base: String,
    version: &str,
) -> Result<(InvitationInfo, Peer), ApiErr> {
    let server = &req.server.server_name;
    let accepter = NewHandshakePeer {
        server_name: server.clone(),
        base_url: base,
        team: req.team.clone(),
        scopes: Vec::new(),
        max_hops: 3,
        filters: Vec::new(),
        conduct: Default::default(),
        keys: req.server.keys.clone(),
        status: PeerStatus::Accepted,
        protocol_version: version.to_string(),
    };
    match st
        .store
        .accept_invitation(team, &req.token, &accepter, req.scopes.as_deref())
        .await
    {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(refusal)) => Err(ApiErr::from(refusal)),
        Err(StoreError::Conflict) => Err(ApiErr(ApiError::new(
            Code::AlreadyPeered,
            format!("this team already peers with {server:?} (or has a peer of that name)"),
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The newest protocol version both sides speak, or 422 `unsupported_protocol`.
fn agreed_version(theirs: &[String]) -> Result<&'static str, ApiErr> {
    peering::agree(theirs).ok_or_else(|| {
        ApiErr(
            ApiError::new(
                Code::UnsupportedProtocol,
                format!(
                    "no federation protocol version in common: this server speaks {}",
                    peering::PROTOCOL_VERSIONS.join(", ")
                ),
            )
            .with("supported", serde_json::json!(peering::PROTOCOL_VERSIONS)),
        )
    })
}

/// `POST /federation/v1/teams/{team}/heartbeat`: a handshake peer is still there; its
/// current keys are pinned.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/heartbeat", tag = "server-to-server",
    security(()), summary = "A handshake peer is still there, with its current keys", description = "Signed by the calling server for this server, method and path (`kite1` in \
        `webhook-signature`, with `X-Kite-Key-Id`, `X-Kite-Server` and `X-Kite-Destination`), \
        checked against the keys pinned for it, taken once.",
    params(("team" = String, Path, description = "The team called")),
    request_body = Heartbeat,
    responses((status = 200, description = "Taken", body = HeartbeatAck)))]
pub(crate) async fn heartbeat(
    State(st): State<Arc<AppState>>,
    arrived: Arrived,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let call = peer_call::<Heartbeat>(&st, &team, &arrived, &headers, body).await?;
    let (peer, hb) = (&call.peer, &call.req);
    if peer.server_name.as_deref() != Some(hb.server_name.as_str()) {
        return Err(ApiErr(ApiError::new(
            Code::InvalidBody,
            "a heartbeat speaks for the server that sends it only",
        )));
    }
    let version = agreed_version(&hb.protocol_versions)?;
    if peer.protocol_version.as_deref() != Some(version) {
        st.store.record_protocol_version(peer.id, version).await?;
    }
    if !hb.keys.is_empty() {
        st.fed
            .pin(peer.id, &hb.keys, KeySource::SignedBy(&call.key))
            .await?;
    }
    let cfg = st.fed.config();
    st.store
        .record_heartbeat_received(peer.id, cfg.heartbeat_interval, cfg.heartbeat_misses)
        .await?;
    let r = (
        StatusCode::OK,
        Json(HeartbeatAck {
            status: "ok".to_string(),
            server_name: st.cfg.instance_id.clone(),
        }),
    )
        .into_response();
    Ok(call.done(r))
}

/// `POST /federation/v1/teams/{team}/keys/query`: a handshake peer asks which keys a server
/// publishes, as far as this one knows (its own, or those it pinned for its peer).
#[utoipa::path(post, path = "/federation/v1/teams/{team}/keys/query", tag = "server-to-server",
    security(()), summary = "Which keys a server publishes, as far as this one knows", description = "Signed by the calling server for this server, method and path (`kite1` in \
        `webhook-signature`, with `X-Kite-Key-Id`, `X-Kite-Server` and `X-Kite-Destination`), \
        checked against the keys pinned for it, taken once.",
    params(("team" = String, Path, description = "The team called")),
    request_body = KeyQuery,
    responses((status = 200, description = "Its keys", body = KeyQueryResponse)))]
pub(crate) async fn keys_query(
    State(st): State<Arc<AppState>>,
    arrived: Arrived,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let call = peer_call::<KeyQuery>(&st, &team, &arrived, &headers, body).await?;
    let q = &call.req;
    // The same answer for a server that is no peer and a key id that is not held: a peer
    // learns nothing it did not know.
    let key = st
        .fed
        .vouch(&team, &call.peers, &call.peer, q)
        .await?
        .ok_or_else(|| {
            ApiErr(ApiError::not_found(format!(
                "this server vouches for no key {:?} of {:?}",
                q.key_id, q.server_name
            )))
        })?;
    let r = Json(KeyQueryResponse {
        server_name: q.server_name.clone(),
        keys: vec![key],
    })
    .into_response();
    Ok(call.done(r))
}

/// `POST /federation/v1/teams/{team}/backfill`: a handshake peer pulls a page of history:
/// only event types it holds a live `backfill` grant for, at most the policy's
/// `max_backfill_events_per_request`, each as it would have been forwarded to it, origin
/// signature included.
#[utoipa::path(post, path = "/federation/v1/teams/{team}/backfill", tag = "server-to-server", operation_id = "serve_backfill_page",
    security(()), summary = "A page of history, for a peer holding a backfill grant", description = "Signed by the calling server for this server, method and path (`kite1` in \
        `webhook-signature`, with `X-Kite-Key-Id`, `X-Kite-Server` and `X-Kite-Destination`), \
        checked against the keys pinned for it, taken once.",
    params(("team" = String, Path, description = "The team called")),
    request_body = BackfillRequest,
    responses((status = 200, description = "A page of events", body = BackfillPage)))]
pub(crate) async fn backfill(
    State(st): State<Arc<AppState>>,
    arrived: Arrived,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let call = peer_call::<BackfillRequest>(&st, &team, &arrived, &headers, body).await?;
    let (peer, req) = (&call.peer, &call.req);
    let granted = st.fed.backfill_scopes(peer.id).await?.ok_or_else(|| {
        ApiErr(ApiError::new(
            Code::NotGranted,
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
    let (rows, cut) = st
        .store
        .history(
            &team,
            req.after.unwrap_or(0),
            req.since,
            limit,
            i64::try_from(peering::MAX_PAGE_BYTES).unwrap_or(i64::MAX),
        )
        .await?;
    let more = cut || rows.len() as i64 == limit;
    let server = peer.server_name.as_deref().unwrap_or_default();
    let page = backfill_page(&st, rows, more, server, &granted, wanted.as_ref()).await;
    let r = Json(page).into_response();
    Ok(call.done(r))
}

/// A backfill page of `rows` (a page of history, `more` after it): those of the types the
/// peer holds a grant for and asked for, that did not pass through it, each as it would have
/// been forwarded to it; with the cursor of the next page, if there is one.
async fn backfill_page(
    st: &AppState,
    rows: Vec<StoredEvent>,
    more: bool,
    server: &str,
    granted: &ScopeSet,
    wanted: Option<&ScopeSet>,
) -> BackfillPage {
    let mut next_cursor = more.then(|| rows.last().map(|e| e.seq)).flatten();
    let mut events = Vec::new();
    // A page stays within MAX_PAGE_BYTES: it ends before the event that would pass it, and
    // the next page starts there.
    let mut bytes = 0usize;
    let mut last_done = None;
    for e in rows {
        let covered = granted.matches(&e.ce_type) && wanted.is_none_or(|w| w.matches(&e.ce_type));
        // What the peer forwarded (or made) it holds already.
        if covered && !e.fed.visited(server) {
            if let Ok(rest) = &e.rest {
                match st
                    .fed
                    .forward_signed(rest, &e.fed, e.origin_sig.as_ref())
                    .await
                {
                    Ok(text) if bytes + text.len() + 1 > peering::MAX_PAGE_BYTES => {
                        next_cursor = last_done;
                        break;
                    }
                    Ok(text) => match serde_json::value::RawValue::from_string(text) {
                        Ok(raw) => {
                            bytes += raw.get().len() + 1;
                            events.push(raw);
                        }
                        Err(err) => {
                            tracing::warn!(seq = e.seq, error = %err, "stored event not served")
                        }
                    },
                    Err(err) => {
                        tracing::warn!(seq = e.seq, error = %err, "stored event not served")
                    }
                }
            }
        }
        last_done = Some(e.seq);
    }
    BackfillPage {
        events,
        next_cursor,
    }
}
