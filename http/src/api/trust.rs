//! Federation trust for admins: the instance's identity (`/api/federation/identity`, and
//! its rotation), the team's policy (`/api/federation/policy`), and invitations
//! (`/api/federation/invitations`, and accepting another server's).

use kite_store::federation::{InvitationInfo, Policy};
use kite_store::types::SignatureProtocol;
use kite_wire::peering::Invitation;
use kite_wire::Code;

use super::*;
use kite_api::invitations::{AcceptInvitation, CreatedInvitation, NewInvitation};
use kite_api::peers::PeerView;
use kite_api::policy::{IdentityView, PolicyPatch};

async fn identity_now(st: &AppState) -> Result<Response, ApiErr> {
    let next_rotation_at = match st.fed.config().key_rotation {
        Some(age) => st.store.next_rotation(age).await?,
        None => None,
    };
    Ok(Json(IdentityView {
        descriptor: st.fed.descriptor().await.map_err(ApiErr::from)?,
        next_rotation_at,
    })
    .into_response())
}

#[utoipa::path(get, path = "/api/federation/identity", tag = "federation",
    summary = "This server's descriptor (name, keys, endpoints) and its next key rotation",
    responses((status = 200, description = "The identity", body = IdentityView)))]
pub(super) async fn identity(
    State(st): St,
    Key(_, _): Key<act::ShowIdentity>,
) -> Result<Response, ApiErr> {
    identity_now(&st).await
}

#[utoipa::path(post, path = "/api/federation/identity/rotate", tag = "federation",
    summary = "Rotate the identity key; the old one stays valid for the overlap",
    responses((status = 200, description = "The identity after it", body = IdentityView)))]
pub(super) async fn rotate_identity(
    State(st): St,
    Key(g, _): Key<act::RotateIdentity>,
) -> Result<Response, ApiErr> {
    st.fed.rotate().await?;
    tracing::info!(team = %g.team_id, "identity key rotated");
    identity_now(&st).await
}

#[utoipa::path(get, path = "/api/federation/policy", tag = "federation",
    summary = "The team's federation policy",
    responses((status = 200, description = "The policy", body = kite_store::federation::Policy)))]
pub(super) async fn get_policy(
    State(st): St,
    Key(g, _): Key<act::ShowPolicy>,
) -> Result<Response, ApiErr> {
    Ok(Json(st.store.policy(&g.team_id).await?).into_response())
}

#[utoipa::path(put, path = "/api/federation/policy", tag = "federation",
    summary = "Change the federation policy; a field left out keeps its value",
    request_body = PolicyPatch,
    responses((status = 200, description = "The policy", body = kite_store::federation::Policy)))]
pub(super) async fn put_policy(
    State(st): St,
    Key(g, _): Key<act::SetPolicy>,
    Valid(patch): Valid<PolicyPatch>,
) -> Result<Response, ApiErr> {
    let now = st.store.policy(&g.team_id).await?;
    let policy = Policy {
        default_mode: patch.default_mode.unwrap_or(now.default_mode),
        allowed_peers: patch.allowed_peers.unwrap_or(now.allowed_peers),
        max_backfill_events_per_request: patch
            .max_backfill_events_per_request
            .unwrap_or(now.max_backfill_events_per_request),
        min_signature_protocol: patch
            .min_signature_protocol
            .unwrap_or(now.min_signature_protocol),
    };
    if policy.min_signature_protocol == SignatureProtocol::Identity {
        // What the policy would refuse must go first: it never strands a peer silently.
        let token_peers: Vec<String> = st
            .store
            .list_peers(&g.team_id)
            .await?
            .into_iter()
            .filter(|p| p.server_name.is_none())
            .map(|p| p.name)
            .collect();
        let senders: Vec<String> = st
            .store
            .list_senders(&g.team_id)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        if !token_peers.is_empty() || !senders.is_empty() {
            return Err(ApiErr(
                ApiError::new(
                    Code::SharedTokensInUse,
                    "min_signature_protocol identity refuses shared-token peers and trusted \
                     senders: delete these first, or peer with them by invitation",
                )
                .with("peers", json!(token_peers))
                .with("trusted_senders", json!(senders)),
            ));
        }
    }
    let saved = st.store.set_policy(&g.team_id, &policy).await?;
    // This process applies it at once; the others on the change notice.
    st.fed.invalidate().await;
    Ok(Json(saved).into_response())
}

#[utoipa::path(post, path = "/api/federation/invitations", tag = "federation",
    summary = "Invite another server to peer (a single-use token, shown once)",
    request_body(content = NewInvitation, description = "Optional"),
    responses((status = 201, description = "The invitation", body = CreatedInvitation)))]
pub(super) async fn create_invitation(
    State(st): St,
    Key(g, _): Key<act::CreateInvitation>,
    Valid(new): Valid<NewInvitation>,
) -> Result<Response, ApiErr> {
    let url = st
        .fed
        .config()
        .public_url
        .clone()
        .ok_or_else(|| ApiErr::from(kite_federation::FedError::NoPublicUrl))?;
    let token = Invitation::mint_token();
    let info: InvitationInfo = st.store.create_invitation(&g.team_id, &token, &new).await?;
    let invitation = Invitation {
        url,
        team: g.team_id.clone(),
        server_name: st.cfg.instance_id.clone(),
        token,
        offer: kite_wire::peering::Terms {
            scopes: info.scopes.clone(),
            max_hops: info.max_hops,
        },
    }
    .encode();
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            id: info.id,
            invitation,
            expires_at: info.expires_at,
            scopes: info.scopes,
            max_hops: info.max_hops,
            filters: info.filters,
            ordering_key: info.ordering_key,
            on_dead: info.on_dead,
            delivery: info.delivery,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/federation/invitations", tag = "federation",
    summary = "The team's invitations (never their tokens)",
    responses((status = 200, description = "The invitations", body = Items<kite_store::federation::InvitationInfo>)))]
pub(super) async fn list_invitations(
    State(st): St,
    Key(g, _): Key<act::ListInvitations>,
) -> Result<Response, ApiErr> {
    let items = st.store.list_invitations(&g.team_id).await?;
    Ok(Json(Items { items }).into_response())
}

#[utoipa::path(delete, path = "/api/federation/invitations/{id}", tag = "federation",
    summary = "Withdraw an invitation",
    params(("id" = String, Path, description = "The invitation's id")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub(super) async fn delete_invitation(
    State(st): St,
    Key(g, _): Key<act::DeleteInvitation>,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    st.store
        .delete_invitation(&g.team_id, parse_id(&id)?)
        .await?;
    Ok(deleted(None))
}

#[utoipa::path(post, path = "/api/federation/invitations/accept", tag = "federation",
    summary = "Accept another server's invitation: the handshake, then a peer on both sides",
    request_body = AcceptInvitation,
    responses((status = 201, description = "The new peer", body = PeerView)))]
pub(super) async fn accept_invitation(
    State(st): St,
    Key(g, _): Key<act::AcceptInvitation>,
    Valid(a): Valid<AcceptInvitation>,
) -> Result<Response, ApiErr> {
    use kite_federation::handshake::AcceptError;
    peers::check_destination(&st, &a.invitation.url).await?;
    let peer = st
        .fed
        .accept_invitation(
            &g.team_id,
            &a.invitation,
            a.scopes,
            a.max_hops,
            a.filters,
            kite_api::peers::Conduct {
                ordering_key: a.ordering_key,
                on_dead: a.on_dead,
                delivery: a.delivery,
            },
        )
        .await
        .map_err(|e| match e {
            AcceptError::SelfPeering => ApiErr(ApiError::new(
                Code::SelfPeering,
                "the invitation is this server's own",
            )),
            AcceptError::AlreadyPeered(s) => ApiErr(ApiError::new(
                Code::AlreadyPeered,
                format!("this team already peers with {s:?} (or has a peer of that name)"),
            )),
            e @ AcceptError::WrongServer { .. } => {
                ApiErr(ApiError::new(Code::WrongServer, e.to_string()))
            }
            e @ AcceptError::Terms(_) => {
                ApiErr(ApiError::new(Code::PeeringTermsRefused, e.to_string()))
            }
            e @ AcceptError::Protocol { .. } => {
                ApiErr(ApiError::new(Code::UnsupportedProtocol, e.to_string()))
            }
            AcceptError::Fed(e) => ApiErr::from(e),
        })?;
    st.fed.invalidate().await;
    st.peers.invalidate().await;
    if let Err(e) = st.bus.declare_peer(peer.id).await {
        tracing::warn!(peer = %peer.id, error = %e, "peer queue not declared yet; the router will");
    }
    tracing::info!(team = %g.team_id, peer = %peer.name, "peered by invitation");
    let view = peers::describe_peer(&st, &g.team_id, &peer).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
