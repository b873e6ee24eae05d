//! Signed provider sources: create, list, rotate, delete.

use super::*;
use kite_wire::provider::Scheme;

/// `POST /api/sources`: a source name, its signature scheme and secret, and for the
/// `hmac-sha256` scheme an optional header.
#[derive(Debug, utoipa::ToSchema)]
pub(crate) struct NewSource {
    /// The `{source}` of `/hooks/{team}/{source}` (not `kite`).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    name: String,
    /// The provider's signature scheme.
    #[schema(example = "stripe")]
    scheme: Scheme,
    /// The signing secret the provider gave you.
    #[schema(min_length = 1, max_length = 512, write_only)]
    secret: String,
    /// The signature header of the `hmac-sha256` scheme.
    #[schema(max_length = 128)]
    header: Option<String>,
}

impl FromBody for NewSource {
    const FIELDS: &'static [&'static str] = &["name", "scheme", "secret", "header"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let name = req_str(m, "name", 64)?;
        kite_wire::event::validate_source_name(&name).map_err(|_| {
            ApiErr(ApiError::validation(
                "name",
                "name must be 1-64 characters of a-z, 0-9, '_' or '-'",
            ))
        })?;
        if name == kite_wire::event::FEDERATION_SOURCE {
            return Err(ApiErr(ApiError::validation(
                "name",
                "kite is the federation source; trust senders with /api/federation/trusted-senders",
            )));
        }
        let scheme = Scheme::parse(&req_str(m, "scheme", 32)?).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "scheme",
                format!("scheme must be one of {}", Scheme::NAMES.join(", ")),
            ))
        })?;
        let secret = req_str(m, "secret", 512)?;
        let header = opt_str(m, "header", 128)?.map(|h| h.to_ascii_lowercase());
        if let Some(h) = &header {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ApiErr(ApiError::validation(
                    "header",
                    "not a valid header name",
                )));
            }
        }
        Ok(NewSource {
            name,
            scheme,
            secret,
            header,
        })
    }
}

/// `POST /api/sources/{name}/rotate`: the new secret.
#[derive(utoipa::ToSchema)]
pub(crate) struct Rotation {
    /// The new signing secret.
    #[schema(min_length = 1, max_length = 512, write_only)]
    secret: String,
}

impl FromBody for Rotation {
    const FIELDS: &'static [&'static str] = &["secret"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        Ok(Rotation {
            secret: req_str(m, "secret", 512)?,
        })
    }
}

#[utoipa::path(post, path = "/api/sources", tag = "sources",
    summary = "Add a signed provider source (`/hooks/{team}/{name}`)",
    request_body = NewSource,
    responses((status = 201, description = "The source", body = kite_store::sources::Source)))]
pub(super) async fn create_source(
    State(st): St,
    Key(g, _): Key<act::CreateSource>,
    Valid(new): Valid<NewSource>,
) -> Result<Response, ApiErr> {
    let src = st
        .store
        .create_source(
            &g.team_id,
            &new.name,
            new.scheme,
            &new.secret,
            new.header.as_deref(),
        )
        .await?;
    st.senders.invalidate().await;
    Ok((StatusCode::CREATED, Json(src)).into_response())
}

#[utoipa::path(get, path = "/api/sources", tag = "sources",
    summary = "The team's sources (never their secrets)",
    responses((status = 200, description = "The sources", body = Items<kite_store::sources::Source>)))]
pub(super) async fn list_sources(
    State(st): St,
    Key(g, _): Key<act::ListSources>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_sources(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
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
    st.store.delete_source(&g.team_id, &name).await?;
    st.senders.invalidate().await;
    Ok(Deleted::answer(None))
}
