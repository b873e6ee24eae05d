//! Federation tokens: `POST` and `GET /api/federation/tokens`.

use super::*;

pub(super) async fn create_token(
    State(st): St,
    AdminKey(g): AdminKey,
    JsonBody(m): JsonBody,
) -> Result<Response, ApiErr> {
    let label = opt_str(&m, "label", 200)?.unwrap_or_default();
    let secret = token::mint_federation_token();
    let info = st.store.create_token(&g.team_id, &label, &secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": info.id, "label": info.label, "token": secret, "created_at": info.created_at})),
    )
        .into_response())
}

pub(super) async fn list_tokens(State(st): St, AdminKey(g): AdminKey) -> Result<Response, ApiErr> {
    let items = st.store.list_tokens(&g.team_id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}
