//! A team's operational endpoint (`/api/operational-endpoint`): where kite POSTs its own
//! events about the team's peers, deliveries and identity, signed with Standard Webhooks.

use super::*;
use kite_api::common::Deleted;
use kite_api::operational::{OperationalEndpoint, OperationalEndpointSet, PutOperationalEndpoint};

fn none_set() -> ApiErr {
    ApiErr(ApiError::not_found(
        "this team has no operational endpoint (PUT /api/operational-endpoint sets one)",
    ))
}

#[utoipa::path(put, path = "/api/operational-endpoint", tag = "operational",
    summary = "Set where the team's operational events are POSTed; the signing secret is answered once, when the endpoint is made",
    request_body = PutOperationalEndpoint,
    responses(
        (status = 201, description = "Made: the endpoint and its secret, shown this once", body = OperationalEndpointSet),
        (status = 200, description = "Its URL changed; the secret is kept (not shown)", body = OperationalEndpointSet)))]
pub(super) async fn put_operational(
    State(st): St,
    Key(g, _): Key<act::SetOperational>,
    Valid(req): Valid<PutOperationalEndpoint>,
) -> Result<Response, ApiErr> {
    // The same guard as a peer's URL: no loopback or private destination unless allowed.
    check_destination(&st, &req.url).await?;
    let (endpoint, secret) = st
        .store
        .put_operational_endpoint(&g.team_id, &req.url)
        .await?;
    tracing::info!(team = %g.team_id, "operational endpoint set");
    let status = if secret.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(OperationalEndpointSet { endpoint, secret })).into_response())
}

#[utoipa::path(get, path = "/api/operational-endpoint", tag = "operational",
    summary = "The team's operational endpoint and its deliveries (never its secret)",
    responses((status = 200, description = "The endpoint (404 `not_found` when none is set)", body = OperationalEndpoint)))]
pub(super) async fn get_operational(
    State(st): St,
    Key(g, _): Key<act::ShowOperational>,
) -> Result<Response, ApiErr> {
    match st.store.operational_endpoint(&g.team_id).await? {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(none_set()),
    }
}

#[utoipa::path(delete, path = "/api/operational-endpoint", tag = "operational",
    summary = "Stop sending operational events (they stay on the team's stream)",
    responses((status = 200, description = "Removed (404 `not_found` when none was set)", body = Deleted)))]
pub(super) async fn delete_operational(
    State(st): St,
    Key(g, _): Key<act::DeleteOperational>,
) -> Result<Response, ApiErr> {
    if st.store.delete_operational_endpoint(&g.team_id).await? {
        Ok(Json(Deleted {
            deleted: true,
            cancelled: None,
        })
        .into_response())
    } else {
        Err(none_set())
    }
}
