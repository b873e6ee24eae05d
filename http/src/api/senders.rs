//! Trusted senders: create, list, update, delete.

use super::*;
use kite_api::senders::NewSender;
use kite_store::senders::SenderPatch;

#[utoipa::path(post, path = "/api/federation/trusted-senders", tag = "federation",
    summary = "Trust a sender that signs with a shared secret",
    request_body = NewSender,
    responses((status = 201, description = "The sender", body = kite_store::senders::Sender)))]
pub(super) async fn create_sender(
    State(st): St,
    Key(g, _): Key<act::CreateSender>,
    Valid(new): Valid<NewSender>,
) -> Result<Response, ApiErr> {
    st.fed.check_tokens_allowed(&g.team_id).await?;
    token_unused(&st, &g.team_id, &new.inbound_token).await?;
    let s = st
        .store
        .create_sender(
            &g.team_id,
            &new.name,
            &new.inbound_token,
            new.key_id.as_deref(),
            new.legacy_signature,
        )
        .await?;
    st.senders.invalidate().await;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(get, path = "/api/federation/trusted-senders", tag = "federation",
    summary = "The team's trusted senders (never their secrets)",
    responses((status = 200, description = "The senders", body = Items<kite_store::senders::Sender>)))]
pub(super) async fn list_senders(
    State(st): St,
    Key(g, _): Key<act::ListSenders>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_senders(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(patch, path = "/api/federation/trusted-senders/{id}", tag = "federation",
    summary = "Rename a sender, rotate its secret or change its signature form",
    params(("id" = String, Path, description = "The sender's id")),
    request_body = SenderPatch,
    responses((status = 200, description = "The sender", body = kite_store::senders::Sender)))]
pub(super) async fn patch_sender(
    State(st): St,
    Key(g, _): Key<act::UpdateSender>,
    Path(id): Path<String>,
    Valid(patch): Valid<SenderPatch>,
) -> Result<Response, ApiErr> {
    let id = parse_id(&id)?;
    if let Some(t) = &patch.inbound_token {
        token_unused(&st, &g.team_id, t).await?;
    }
    let s = st
        .store
        .update_sender(&g.team_id, id, &patch, st.cfg.secret_overlap)
        .await?;
    st.senders.invalidate().await;
    Ok(Json(s).into_response())
}

#[utoipa::path(delete, path = "/api/federation/trusted-senders/{id}", tag = "federation",
    summary = "Stop trusting a sender",
    params(("id" = String, Path, description = "The sender's id")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_sender(
    State(st): St,
    Key(g, _): Key<act::DeleteSender>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    st.store.delete_sender(&g.team_id, parse_id(&id)?).await?;
    st.senders.invalidate().await;
    Ok(deleted(None))
}
