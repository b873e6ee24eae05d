//! Teams, for the operator: `POST`, `GET /api/teams` and `DELETE /api/teams/{id}`,
//! authenticated by the operator key (`KITE_OPERATOR_KEY`), never by a team's key.

use super::*;
use kite_api::teams::{CreatedTeam, NewTeam};

/// A request authenticated by the operator key (else 401; 401 too when the instance has
/// none, so the teams API is closed by default).
pub(crate) struct OperatorKey;

impl FromRequestParts<Arc<AppState>> for OperatorKey {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiErr> {
        let given = bearer(&parts.headers);
        match (&st.cfg.operator_key, given) {
            (Some(key), Some(given)) if token::secret_eq(key, given) => Ok(OperatorKey),
            (None, _) => Err(ApiErr(ApiError::unauthorized(
                "the teams API needs the operator key, and this instance has none (KITE_OPERATOR_KEY)",
            ))),
            _ => Err(ApiErr(ApiError::unauthorized(
                "the teams API needs the operator key (Authorization: Bearer ...)",
            ))),
        }
    }
}

#[utoipa::path(post, path = "/api/teams", tag = "teams",
    summary = "Make a team and its first admin key (operator key)",
    security(("operator_key" = [])),
    request_body = NewTeam,
    responses((status = 201, description = "The team and its admin key", body = CreatedTeam)))]
pub(super) async fn create_team(
    State(st): St,
    _: OperatorKey,
    Valid(new): Valid<NewTeam>,
) -> Result<Response, ApiErr> {
    let (team, admin_key_info, admin_key) = st.store.create_team(&new.id).await?;
    tracing::info!(team = %team.id, "team created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTeam {
            team,
            admin_key,
            admin_key_info,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/teams", tag = "teams",
    summary = "Every team (operator key)",
    security(("operator_key" = [])),
    responses((status = 200, description = "The teams", body = Items<kite_store::teams::Team>)))]
pub(super) async fn list_teams(State(st): St, _: OperatorKey) -> Result<Response, ApiErr> {
    let items = st.store.list_teams().await?;
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(delete, path = "/api/teams/{id}", tag = "teams",
    summary = "Delete a team and everything it holds (operator key)",
    security(("operator_key" = [])),
    params(("id" = String, Path, description = "The team's id")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_team(
    State(st): St,
    _: OperatorKey,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let peers = st.store.delete_team(&id).await?;
    st.teams.write().await.remove(&id);
    st.senders.invalidate().await;
    for peer in peers {
        if let Err(e) = st.bus.delete_peer_queue(kite_wire::ids::PeerId(peer)).await {
            tracing::warn!(peer = %peer, error = %e, "could not delete a removed team's peer queue");
        }
    }
    tracing::info!(team = %id, "team deleted");
    Ok(deleted(None))
}
