//! Acting on deliveries: resend one row now, cancel a pending one, replay dead rows by
//! filter. Each is recorded in the row's story (`GET /api/events/{id}`), with the key that
//! did it.

use super::*;
use kite_api::outbox::{OutboxEntry, ReplayFilter};
use kite_api::peers::Replayed;
use kite_store::outbox::{Acted, ReplayQuery};
use kite_wire::ids::Delivery;

/// How long after a row's last attempt a resend goes out: a second later at least, so the
/// resend's signature carries another timestamp (a peer refuses a signed request it took
/// already: same sender, `webhook-id` and timestamp).
const RESEND_GAP: std::time::Duration = std::time::Duration::from_millis(1100);

/// Publishes rows put (back) in line; a row not published now is found by the sweeper.
pub(super) async fn publish(st: &AppState, rows: Vec<Delivery>) {
    if rows.is_empty() {
        return;
    }
    if let Err(e) = st.bus.send_deliveries(rows).await {
        tracing::warn!(error = %e, "rows put back in line not published; the sweeper will");
    }
}

/// The row's id from the path (404 if it is not a number).
fn row_id(id: &str) -> Result<i64, ApiErr> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiErr(ApiError::not_found(format!("no outbox row {id:?}"))))
}

/// The answer to an action on row `id`: the row as it is now, or why not. A row put back in
/// line is published after `publish_after`.
async fn acted(
    st: &Arc<AppState>,
    team_id: &str,
    id: i64,
    outcome: Acted,
    refused: impl FnOnce(OutboxState) -> ApiError,
    publish_after: Option<std::time::Duration>,
) -> Result<Response, ApiErr> {
    match outcome {
        Acted::Done(peer) => {
            if let Some(wait) = publish_after {
                let row = Delivery {
                    id: kite_wire::ids::OutboxId(id),
                    peer,
                };
                let st = st.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    publish(&st, vec![row]).await;
                });
            }
            Ok(Json(st.store.outbox_entry(team_id, id).await?).into_response())
        }
        Acted::Missing => Err(ApiErr(ApiError::not_found(format!("no outbox row {id}")))),
        Acted::Refused(state) => Err(ApiErr(refused(state))),
    }
}

#[utoipa::path(post, path = "/api/federation/outbox/{id}/resend", tag = "events",
    summary = "Send one delivery again now (admin key)",
    description = "A delivered or dead row goes back to pending, due now, with its retry count \
        reset, and is sent a second after its last attempt at the earliest (a peer refuses a \
        signed request it took already); the peer answers `duplicate_ignored` if it has the \
        event. Any other row is refused, 409 `not_resendable`: a pending one is in line \
        already, a cancelled one may still have its message queued, a skipped one (`loop`, \
        `max_hops`) is never sent. The row's story records the resend.",
    params(("id" = i64, Path, description = "The outbox row's id")),
    responses((status = 200, description = "The row, pending", body = OutboxEntry)))]
pub(super) async fn resend(
    State(st): St,
    Key(g, _): Key<act::Resend>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let id = row_id(&id)?;
    let by = g.key_id.to_string();
    let last = st
        .store
        .outbox_entry(&g.team_id, id)
        .await
        .map_err(|e| match e {
            kite_store::StoreError::NotFound => {
                ApiErr(ApiError::not_found(format!("no outbox row {id}")))
            }
            e => ApiErr::from(e),
        })?
        .updated_at;
    let since = (chrono::Utc::now() - last).to_std().unwrap_or_default();
    let wait = RESEND_GAP.saturating_sub(since);
    let outcome = st.store.resend(&g.team_id, id, Some(&by)).await?;
    acted(
        &st,
        &g.team_id,
        id,
        outcome,
        |state| {
            let why = match state {
                OutboxState::Pending => "it is in line already (cancel it first to send it anew)",
                OutboxState::Skipped => "routing skipped it, so it is never sent",
                _ => "its queued message may still come; only a delivered or dead row is resent",
            };
            ApiError::new(Code::NotResendable, format!("row {id} is {state}: {why}"))
        },
        Some(wait),
    )
    .await
}

#[utoipa::path(post, path = "/api/federation/outbox/{id}/cancel", tag = "events",
    summary = "Cancel one pending or dead delivery (admin key)",
    description = "The row becomes `cancelled`: its queued message is dropped when it comes. \
        An attempt already under way is not stopped: if it delivers, the row says `delivered`. \
        A dead row of an ordered peer that blocks its key (`on_dead: block`) is cancelled so \
        that the key moves on. A row that is neither pending nor dead is refused: 409 \
        `not_pending`. The row's story records the cancel.",
    params(("id" = i64, Path, description = "The outbox row's id")),
    responses((status = 200, description = "The row, cancelled", body = OutboxEntry)))]
pub(super) async fn cancel(
    State(st): St,
    Key(g, _): Key<act::Cancel>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let id = row_id(&id)?;
    let by = g.key_id.to_string();
    let outcome = st.store.cancel(&g.team_id, id, Some(&by)).await?;
    acted(
        &st,
        &g.team_id,
        id,
        outcome,
        |state| {
            ApiError::new(
                Code::NotPending,
                format!("row {id} is {state}: only a pending or dead delivery can be cancelled"),
            )
        },
        None,
    )
    .await
}

#[utoipa::path(post, path = "/api/federation/outbox/replay", tag = "events",
    summary = "Replay dead deliveries by filter: peer, type, time range (admin key)",
    description = "Dead rows that match every filter given go back to pending with their retry \
        count reset, oldest first, up to `limit` (1,000 by default); each row's story records \
        the replay.",
    request_body(content = ReplayFilter, description = "Optional; an empty body replays up to 1,000 dead rows of the team"),
    responses((status = 200, description = "How many were replayed", body = Replayed)))]
pub(super) async fn replay(
    State(st): St,
    Key(g, _): Key<act::ReplayMatching>,
    Valid(f): Valid<ReplayFilter>,
) -> Result<Response, ApiErr> {
    let peer_id = match &f.peer {
        Some(name) => Some(super::listings::peer_named(&st, &g.team_id, name).await?),
        None => None,
    };
    let q = ReplayQuery {
        peer_id,
        event_type: f.event_type,
        since: f.since,
        until: f.until,
        limit: f.limit.unwrap_or(ReplayFilter::DEFAULT_LIMIT),
    };
    let by = g.key_id.to_string();
    let rows = st.store.replay_matching(&g.team_id, &q, Some(&by)).await?;
    let replayed = rows.len();
    if replayed > 0 {
        let peers = st.store.list_peers(&g.team_id).await?;
        for p in peers {
            let n = rows.iter().filter(|r| r.peer == p.id).count();
            if n > 0 {
                metrics::counter!(kite_wire::metrics::REPLAYED, "team" => g.team_id.to_string(), "peer" => p.name)
                    .increment(n as u64);
            }
        }
    }
    publish(&st, rows).await;
    Ok(Json(Replayed { replayed }).into_response())
}
