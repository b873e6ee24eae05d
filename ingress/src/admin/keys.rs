//! API keys: create, list, revoke.

use super::*;

/// `POST /api/keys`: an optional label and permission (default `read`).
#[derive(Debug)]
pub(crate) struct NewKey {
    label: String,
    permission: Permission,
}

impl FromBody for NewKey {
    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let permission = match opt_str(m, "permission", 16)? {
            None => Permission::Read,
            Some(p) => Permission::parse(&p).ok_or_else(|| {
                ApiErr(ApiError::validation(
                    "permission",
                    format!("permission must be one of {}", one_of(Permission::ALL)),
                ))
            })?,
        };
        Ok(NewKey {
            label: opt_str(m, "label", 200)?.unwrap_or_default(),
            permission,
        })
    }
}

/// A new key as answered once: its listing plus the secret itself.
#[derive(Serialize)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    info: kite_store::keys::ApiKeyInfo,
    /// The key; shown only in this answer.
    key: String,
}

pub(super) async fn create_key(
    State(st): St,
    AdminKey(g): AdminKey,
    Valid(new): Valid<NewKey>,
) -> Result<Response, ApiErr> {
    let (info, key) = st
        .store
        .create_api_key(&g.team_id, new.permission, &new.label)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { info, key })).into_response())
}

pub(super) async fn list_keys(State(st): St, AdminKey(g): AdminKey) -> Result<Response, ApiErr> {
    let items = st.store.list_api_keys(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
}

pub(super) async fn revoke_key(
    State(st): St,
    AdminKey(g): AdminKey,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let info = st.store.revoke_api_key(&g.team_id, parse_id(&id)?).await?;
    Ok(Json(info).into_response())
}
