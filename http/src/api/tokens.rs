//! Federation tokens: `POST` and `GET /api/federation/tokens`.

use super::*;
use kite_api::tokens::{CreatedToken, NewToken};

#[utoipa::path(post, path = "/api/federation/tokens", tag = "federation",
    summary = "Make a federation token a peer sends with its events (shown once)",
    request_body(content = NewToken, description = "Optional"),
    responses((status = 201, description = "The token, with its secret", body = CreatedToken)))]
pub(super) async fn create_token(
    State(st): St,
    Key(g, _): Key<act::CreateToken>,
    Valid(new): Valid<NewToken>,
) -> Result<Response, ApiErr> {
    st.fed.check_tokens_allowed(&g.team_id).await?;
    let token = token::mint_federation_token();
    let info = st
        .store
        .create_token(&g.team_id, &new.label, &token)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })).into_response())
}

#[utoipa::path(get, path = "/api/federation/tokens", tag = "federation",
    summary = "The team's federation tokens (never their secrets)",
    responses((status = 200, description = "The tokens", body = Items<kite_store::keys::TokenInfo>)))]
pub(super) async fn list_tokens(
    State(st): St,
    Key(g, _): Key<act::ListTokens>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_tokens(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
}
