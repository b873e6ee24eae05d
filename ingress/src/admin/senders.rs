//! Trusted senders: create, list, update, delete.

use super::*;

pub(super) async fn create_sender(
    State(st): St,
    AdminKey(g): AdminKey,
    JsonBody(m): JsonBody,
) -> Result<Response, ApiErr> {
    let name = req_str(&m, "name", 128)?;
    let token = req_str(&m, "inbound_token", 512)?;
    let key_id = opt_str(&m, "key_id", 128)?;
    let legacy = opt_bool(&m, "legacy_signature")?.unwrap_or(false);
    let s = st
        .store
        .create_sender(&g.team_id, &name, &token, key_id.as_deref(), legacy)
        .await?;
    st.senders.invalidate().await;
    Ok((StatusCode::CREATED, Json(json!(s))).into_response())
}

pub(super) async fn list_senders(State(st): St, AdminKey(g): AdminKey) -> Result<Response, ApiErr> {
    let items = st.store.list_senders(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub(super) async fn patch_sender(
    State(st): St,
    AdminKey(g): AdminKey,
    Path(id): Path<String>,
    JsonBody(m): JsonBody,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    let patch = kite_store::senders::SenderPatch {
        name: opt_str(&m, "name", 128)?,
        inbound_token: opt_str(&m, "inbound_token", 512)?,
        legacy_signature: opt_bool(&m, "legacy_signature")?,
    };
    let s = st
        .store
        .update_sender(&g.team_id, id, &patch, st.cfg.secret_overlap)
        .await?;
    st.senders.invalidate().await;
    Ok(Json(json!(s)).into_response())
}

pub(super) async fn delete_sender(
    State(st): St,
    AdminKey(g): AdminKey,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    st.store.delete_sender(&g.team_id, parse_id(&id)?).await?;
    st.senders.invalidate().await;
    Ok(Json(json!({"deleted": true})).into_response())
}
