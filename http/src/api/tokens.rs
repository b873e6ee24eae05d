//! Federation tokens: `POST` and `GET /api/federation/tokens`.

use super::*;

/// `POST /api/federation/tokens`: an optional label.
#[derive(Debug, utoipa::ToSchema)]
pub(crate) struct NewToken {
    /// A label to recognise it by.
    #[schema(required = false, max_length = 200, default = "")]
    label: String,
}

impl FromBody for NewToken {
    const FIELDS: &'static [&'static str] = &["label"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        Ok(NewToken {
            label: opt_str(m, "label", 200)?.unwrap_or_default(),
        })
    }
}

/// A new federation token as answered once: its listing plus the secret itself.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    info: kite_store::keys::TokenInfo,
    /// The token; shown only in this answer.
    token: String,
}

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
