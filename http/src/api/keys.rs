//! API keys: create, list, revoke.

use super::*;
use kite_api::keys::{CreatedKey, NewKey, Session};

#[utoipa::path(post, path = "/api/keys", tag = "keys",
    summary = "Make an API key (shown once)",
    request_body(content = NewKey, description = "Optional"),
    responses((status = 201, description = "The key, with its secret", body = CreatedKey)))]
pub(super) async fn create_key(
    State(st): St,
    Key(g, _): Key<act::CreateKey>,
    Valid(new): Valid<NewKey>,
) -> Result<Response, ApiErr> {
    let created = create(&st, &g.team_id, &new).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Mints an API key: the one way, for `POST /api/keys` and the `/ws` RPC's `keys.create`.
pub(crate) async fn create(st: &AppState, team: &str, new: &NewKey) -> Result<CreatedKey, ApiErr> {
    let (info, key) = st
        .store
        .create_api_key(team, new.permission, &new.label)
        .await?;
    Ok(CreatedKey { info, key })
}

#[utoipa::path(get, path = "/api/keys", tag = "keys",
    summary = "The team's API keys (never their secrets)",
    responses((status = 200, description = "The keys", body = Items<kite_store::keys::ApiKeyInfo>)))]
pub(super) async fn list_keys(
    State(st): St,
    Key(g, _): Key<act::ListKeys>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_api_keys(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys",
    summary = "Revoke an API key",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The revoked key", body = kite_store::keys::ApiKeyInfo)))]
pub(super) async fn revoke_key(
    State(st): St,
    Key(g, _): Key<act::RevokeKey>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let info = st.store.revoke_api_key(&g.team_id, parse_id(&id)?).await?;
    Ok(Json(info).into_response())
}

#[utoipa::path(get, path = "/api/session", tag = "keys",
    summary = "Who this key is: its team and permission (any key; the dashboard signs in with it)",
    responses((status = 200, description = "The key's team and permission", body = Session)))]
pub(super) async fn session(Key(g, _): Key<act::Session>) -> Response {
    Json(Session {
        team_id: g.team_id,
        permission: g.permission,
        key_id: g.key_id,
    })
    .into_response()
}
