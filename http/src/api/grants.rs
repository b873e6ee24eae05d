//! A handshake peer's grants (`/api/federation/peers/{id}/grants`) and pulling its history
//! (`POST /api/federation/peers/{id}/backfill`).

use axum::http::HeaderValue;
use chrono::Utc;
use kite_wire::event::{build_event, Hook, FEDERATION_SOURCE};
use kite_wire::peering::BackfillRequest;
use kite_wire::Code;

use super::*;
use crate::hooks::{admit, Admissible, Admitted};
use kite_api::grants::{Backfill, Backfilled, NewGrant, Since};

/// The most pages one backfill call asks for.
const MAX_PAGES: u32 = 10_000;

#[utoipa::path(post, path = "/api/federation/peers/{id}/grants", tag = "peers",
    summary = "Grant a handshake peer sending or backfilling event types, until a time", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body = NewGrant,
    responses((status = 201, description = "The grant", body = kite_store::grants::Grant)))]
pub(super) async fn create_grant(
    State(st): St,
    Key(g, _): Key<act::CreateGrant>,
    Path(id): Path<String>,
    Valid(new): Valid<NewGrant>,
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
    Ok(deleted(None))
}

#[utoipa::path(post, path = "/api/federation/peers/{id}/backfill", tag = "peers", operation_id = "pull_backfill",
    summary = "Pull the history a handshake peer holds, every event's origin signature verified", params(("id" = String, Path, description = "The peer's id (a UUID)")),
    request_body(content = Backfill, description = "Optional"),
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
    let (since, mut after) = match b.since {
        None => (None, None),
        Some(Since::Time(t)) => (Some(t), None),
        Some(Since::Cursor(c)) => (None, Some(c)),
    };
    let mut done = Backfilled::default();
    let mut left = b.limit;
    while left > 0 && done.pages < MAX_PAGES {
        let page = st
            .fed
            .backfill_page(
                &peer,
                &BackfillRequest {
                    since,
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
