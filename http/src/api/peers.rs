//! Peers: create, list, show, update, delete, replay dead rows; the SSRF check of their URLs.

use super::*;
use kite_api::peers::{PeerStats, PeerView, ReplayDead, Replayed, StatsParams, StatsWindow};
use kite_wire::Code;

/// Refuses peer URLs that point at loopback, private, link-local (metadata) or multicast
/// addresses, unless private peers are allowed. Delivery checks again at connect time.
pub(crate) async fn check_destination(st: &AppState, url: &str) -> Result<(), ApiErr> {
    if st.cfg.allow_private_peers {
        return Ok(());
    }
    let forbidden = || {
        ApiErr(
            ApiError::new(
                Code::ForbiddenDestination,
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
    if addrs.is_empty() || addrs.iter().any(|a| kite_wire::ssrf::is_forbidden(a.ip())) {
        return Err(forbidden());
    }
    Ok(())
}

fn peer_view(
    peer: kite_store::peers::Peer,
    backlog: Option<&(i64, i64)>,
    traffic: Option<&kite_store::federation::Traffic>,
) -> PeerView {
    let (pending, dead) = backlog.copied().unwrap_or((0, 0));
    let t = traffic.copied().unwrap_or_default();
    let last_seen = peer.last_seen();
    PeerView {
        last_error_resolved_at: last_seen.filter(|seen| {
            peer.last_error_at.is_some_and(|e| *seen > e)
                && peer.consecutive_failures == 0
                && peer.heartbeat_failures == 0
        }),
        last_seen,
        has_inbound_token: peer.inbound_token.is_some(),
        peer,
        pending,
        dead,
        events_sent_24h: t.sent,
        events_received_24h: t.received,
        keys: None,
    }
}

/// One peer, with its pinned keys.
pub(crate) async fn describe_peer(
    st: &AppState,
    team: &str,
    peer: &kite_store::peers::Peer,
) -> Result<PeerView, ApiErr> {
    let backlogs = st.store.peer_backlogs(team).await?;
    let traffic = st.store.peer_traffic(team).await?;
    let mut v = peer_view(peer.clone(), backlogs.get(&peer.id), traffic.get(&peer.id));
    if peer.server_name.is_some() {
        v.keys = Some(st.store.peer_keys(peer.id).await?);
    }
    Ok(v)
}

#[utoipa::path(post, path = "/api/federation/peers", tag = "peers",
    summary = "Add a peer by URL and shared token (the Kite token flow)",
    request_body = NewPeer,
    responses((status = 201, description = "The peer", body = kite_store::peers::Peer)))]
pub(super) async fn create_peer(
    State(st): St,
    Key(g, _): Key<act::CreatePeer>,
    Valid(new): Valid<NewPeer>,
) -> Result<Response, ApiErr> {
    st.fed.check_tokens_allowed(&g.team_id).await?;
    if let Some(t) = &new.inbound_token {
        token_unused(&st, &g.team_id, t).await?;
    }
    check_destination(&st, &new.peer_hook_url).await?;
    let peer = st.store.create_peer(&g.team_id, &new).await?;
    st.peers.invalidate().await;
    st.senders.invalidate().await;
    if let Err(e) = st.bus.declare_peer(peer.id).await {
        tracing::warn!(peer = %peer.id, error = %e, "peer queue not declared yet; the router will");
    }
    Ok((StatusCode::CREATED, Json(peer)).into_response())
}

#[utoipa::path(get, path = "/api/federation/peers", tag = "peers",
    summary = "Every peer of the team, with its health and backlog (read key)",
    responses((status = 200, description = "The peers", body = Items<PeerView>)))]
pub(super) async fn list_peers(
    State(st): St,
    Key(g, _): Key<act::ListPeers>,
) -> Result<Response, ApiErr> {
    let peers = st.store.list_peers(&g.team_id).await?;
    let backlogs = st.store.peer_backlogs(&g.team_id).await?;
    let traffic = st.store.peer_traffic(&g.team_id).await?;
    let items = peers
        .into_iter()
        .map(|p| {
            let (b, t) = (backlogs.get(&p.id), traffic.get(&p.id));
            peer_view(p, b, t)
        })
        .collect();
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(get, path = "/api/federation/peers/{id}", tag = "peers",
    summary = "One peer, with its health, backlog and pinned keys (read key)", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    responses((status = 200, description = "The peer", body = PeerView)))]
pub(super) async fn get_peer(
    State(st): St,
    Key(g, _): Key<act::ShowPeer>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let peer = st.store.get_peer(&g.team_id, parse_id(&id)?).await?;
    Ok(Json(describe_peer(&st, &g.team_id, &peer).await?).into_response())
}

#[utoipa::path(patch, path = "/api/federation/peers/{id}", tag = "peers",
    summary = "Change a peer: pause or resume it, its scopes, filters, URL, token, hop limit, order, delivery policy or content mode", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body = PeerPatch,
    responses((status = 200, description = "The peer", body = kite_store::peers::Peer)))]
pub(super) async fn patch_peer(
    State(st): St,
    Key(g, _): Key<act::UpdatePeer>,
    Path(id): Path<String>,
    Valid(patch): Valid<PeerPatch>,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    if let Some(u) = &patch.peer_hook_url {
        check_destination(&st, u).await?;
    }
    // What only a token peer takes: refused for a peer made by invitation.
    let binary = patch.content_mode == Some(kite_api::types::ContentMode::Binary);
    if patch.inbound_token.is_some() || binary {
        let by_invitation = st
            .store
            .get_peer(&g.team_id, id)
            .await?
            .server_name
            .is_some();
        if by_invitation && patch.inbound_token.is_some() {
            return Err(ApiErr(ApiError::validation(
                "inbound_token",
                "a peer made by invitation signs with its identity key: inbound_token is \
                 for token peers",
            )));
        }
        if by_invitation && binary {
            return Err(ApiErr(ApiError::validation(
                "content_mode",
                "a peer made by invitation is a kite server: it takes structured events",
            )));
        }
    }
    if let Some(t) = &patch.inbound_token {
        token_unused(&st, &g.team_id, t).await?;
    }
    let peer = st
        .store
        .update_peer(&g.team_id, id, &patch, st.cfg.secret_overlap)
        .await?;
    // This process applies the change (a revocation above all) before it answers; the
    // others on the change notice, within the caches' MAX_AGE at the latest.
    st.peers.invalidate().await;
    st.senders.invalidate().await;
    Ok(Json(peer).into_response())
}

#[utoipa::path(delete, path = "/api/federation/peers/{id}", tag = "peers",
    summary = "Remove a peer; its waiting rows are cancelled", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_peer(
    State(st): St,
    Key(g, _): Key<act::DeletePeer>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    let cancelled = st.store.delete_peer(&g.team_id, id).await?;
    st.peers.invalidate().await;
    st.senders.invalidate().await;
    if let Err(e) = st.bus.delete_peer_queue(id).await {
        tracing::warn!(peer = %id, error = %e, "could not delete the peer's queue");
    }
    Ok(deleted(Some(cancelled)))
}

#[utoipa::path(post, path = "/api/federation/peers/{id}/refresh", tag = "peers",
    summary = "Fetch a handshake peer's descriptor again and pin the keys it publishes now",
    description = "What a peer whose keys changed needs. The keys are pinned by the rules of \
        key validity: an end only comes earlier and an ended key never comes back.",
    params(("id" = String, Path, description = "The peer's id (a UUID)")),
    responses((status = 200, description = "The peer, with its keys", body = PeerView)))]
pub(super) async fn refresh_peer(
    State(st): St,
    Key(g, _): Key<act::RefreshPeer>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let peer = st.store.get_peer(&g.team_id, parse_id(&id)?).await?;
    if peer.server_name.is_none() {
        return Err(ApiErr(ApiError::new(
            Code::NotAHandshakePeer,
            "only a peer made by invitation (kite peer invite / accept) has a descriptor",
        )));
    }
    st.fed
        .refresh_keys(&peer)
        .await
        .map_err(crate::ApiErr::from)?;
    Ok(Json(describe_peer(&st, &g.team_id, &peer).await?).into_response())
}

#[utoipa::path(post, path = "/api/federation/peers/{id}/replay-dead", tag = "peers",
    summary = "Put a peer's dead rows back in line", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body(content = ReplayDead, description = "Optional; an empty body replays up to 1,000"),
    responses((status = 200, description = "How many were replayed", body = Replayed)))]
pub(super) async fn replay_dead(
    State(st): St,
    Key(g, _): Key<act::ReplayDead>,
    Path(id): Path<String>,
    Valid(ReplayDead { limit }): Valid<ReplayDead>,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    // 404 for a peer of another team or none.
    let peer = st.store.get_peer(&g.team_id, id).await?;
    let by = g.key_id.to_string();
    let q = kite_store::outbox::ReplayQuery {
        peer_id: Some(id),
        limit,
        ..Default::default()
    };
    let rows = st.store.replay_matching(&g.team_id, &q, Some(&by)).await?;
    let replayed = rows.len();
    metrics::counter!(kite_wire::metrics::REPLAYED, "team" => g.team_id.to_string(), "peer" => peer.name)
        .increment(replayed as u64);
    super::outbox::publish(&st, rows).await;
    Ok(Json(Replayed { replayed }).into_response())
}

#[utoipa::path(get, path = "/api/federation/peers/{id}/stats", tag = "peers",
    summary = "A peer's delivered, failed and latency over the last hour or day (read key)",
    description = "From the attempts kite logged: every bucket of the window, oldest first \
        (an hour in 12 buckets of 5 minutes, a day in 24 of an hour).",
    params(("id" = String, Path, description = "The peer's id (a UUID)"), StatsParams),
    responses((status = 200, description = "The peer's charts", body = PeerStats)))]
pub(super) async fn peer_stats(
    State(st): St,
    Key(g, _): Key<act::ShowPeerStats>,
    Path(id): Path<String>,
    q: Result<
        Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiErr> {
    let f = super::listings::Filters::read::<StatsParams>(q)?;
    let window = match f.text("window") {
        None => StatsWindow::default(),
        Some(w) => StatsWindow::parse(&w).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "window",
                "window must be one of hour, day",
            ))
        })?,
    };
    let id = parse_id(&id)?;
    // 404 for a peer of another team or none.
    st.store.get_peer(&g.team_id, id).await?;
    let (span, bucket) = window.spans();
    let buckets = st.store.peer_stats(&g.team_id, id, span, bucket).await?;
    Ok(Json(PeerStats {
        window,
        bucket_secs: bucket,
        buckets,
    })
    .into_response())
}
