//! API keys: create, list, revoke.

use super::*;

pub(super) async fn create_key(
    State(st): St,
    AdminKey(g): AdminKey,
    JsonBody(m): JsonBody,
) -> Result<Response, ApiErr> {
    let label = opt_str(&m, "label", 200)?.unwrap_or_default();
    let permission = match opt_str(&m, "permission", 16)? {
        None => Permission::Read,
        Some(p) => Permission::parse(&p).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "permission",
                format!("permission must be one of {}", one_of(Permission::ALL)),
            ))
        })?,
    };
    let (info, key) = st
        .store
        .create_api_key(&g.team_id, permission, &label)
        .await?;
    let mut v = json!(info);
    v["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(super) async fn list_keys(State(st): St, AdminKey(g): AdminKey) -> Result<Response, ApiErr> {
    let items = st.store.list_api_keys(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub(super) async fn revoke_key(
    State(st): St,
    AdminKey(g): AdminKey,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let info = st.store.revoke_api_key(&g.team_id, parse_id(&id)?).await?;
    Ok(Json(json!(info)).into_response())
}
