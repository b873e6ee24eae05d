//! Signed provider sources: create, list, rotate, delete.

use super::*;
use kite_api::sources::{NewSource, Rotation, Source};

#[utoipa::path(post, path = "/api/sources", tag = "sources",
    summary = "Add a signed provider source (`/hooks/{team}/{name}`)",
    request_body = NewSource,
    responses((status = 201, description = "The source", body = kite_store::sources::Source)))]
pub(super) async fn create_source(
    State(st): St,
    Key(g, _): Key<act::CreateSource>,
    Valid(new): Valid<NewSource>,
) -> Result<Response, ApiErr> {
    let src = create(&st, &g.team_id, &new).await?;
    Ok((StatusCode::CREATED, Json(src)).into_response())
}

/// Makes a signed source and applies it at once: the one way, for `POST /api/sources` and
/// the `/ws` RPC's `hooks.create`.
pub(crate) async fn create(st: &AppState, team: &str, new: &NewSource) -> Result<Source, ApiErr> {
    let src = st
        .store
        .create_source(
            team,
            &new.name,
            new.scheme,
            &new.secret,
            new.header.as_deref(),
        )
        .await?;
    st.senders.invalidate().await;
    Ok(src)
}

/// Removes a signed source and applies it at once (`DELETE /api/sources/{name}`, the RPC's
/// `hooks.deactivate`).
pub(crate) async fn delete(st: &AppState, team: &str, name: &str) -> Result<(), ApiErr> {
    st.store.delete_source(team, name).await?;
    st.senders.invalidate().await;
    Ok(())
}

#[utoipa::path(get, path = "/api/sources", tag = "sources",
    summary = "The team's sources (never their secrets), and the hook sources that took unsigned posts",
    responses((status = 200, description = "The sources", body = kite_api::sources::SourceList)))]
pub(super) async fn list_sources(
    State(st): St,
    Key(g, _): Key<act::ListSources>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_sources(&g.team_id).await?;
    let unsigned = st.store.unsigned_sources(&g.team_id).await?;
    Ok(Json(kite_api::sources::SourceList { items, unsigned }).into_response())
}

#[utoipa::path(post, path = "/api/sources/{name}/rotate", tag = "sources",
    summary = "Rotate a source's secret; the old one is accepted for the overlap",
    params(("name" = String, Path, description = "The source's name")),
    request_body = Rotation,
    responses((status = 200, description = "The source", body = kite_store::sources::Source)))]
pub(super) async fn rotate_source(
    State(st): St,
    Key(g, _): Key<act::RotateSource>,
    Path(name): Path<String>,
    Valid(Rotation { secret }): Valid<Rotation>,
) -> Result<Response, ApiErr> {
    let src = st
        .store
        .rotate_source(&g.team_id, &name, &secret, st.cfg.secret_overlap)
        .await?;
    st.senders.invalidate().await;
    Ok(Json(src).into_response())
}

#[utoipa::path(delete, path = "/api/sources/{name}", tag = "sources",
    summary = "Remove a source",
    params(("name" = String, Path, description = "The source's name")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_source(
    State(st): St,
    Key(g, _): Key<act::DeleteSource>,
    Path(name): Path<String>,
) -> Result<Response, ApiErr> {
    delete(&st, &g.team_id, &name).await?;
    Ok(deleted(None))
}
