//! Federation trust for admins: the instance's identity (`/api/federation/identity`, and
//! its rotation), the team's policy (`/api/federation/policy`), and invitations
//! (`/api/federation/invitations`, and accepting another server's).

use kite_store::federation::{InvitationInfo, Policy};
use kite_store::types::{FederationMode, SignatureProtocol};
use kite_wire::fed::hop_limit;
use kite_wire::peering::Invitation;
use kite_wire::Code;

use super::*;

/// The longest an invitation may live: a year.
const MAX_TTL_SECS: i64 = 365 * 24 * 3600;
/// How long an invitation lives unless told: 7 days.
const DEFAULT_TTL_SECS: i64 = 7 * 24 * 3600;

/// This server's identity as its admins see it: the descriptor other servers fetch, and when
/// its key is rotated next.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IdentityView {
    /// The descriptor.
    #[serde(flatten)]
    descriptor: kite_wire::peering::ServerDescriptor,
    /// When the current key is rotated on schedule (`KITE_KEY_ROTATION_SECS`; null: by
    /// hand only).
    next_rotation_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl IdentityView {
    async fn now(st: &AppState) -> Result<Response, ApiErr> {
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
}

#[utoipa::path(get, path = "/api/federation/identity", tag = "federation",
    summary = "This server's descriptor (name, keys, endpoints) and its next key rotation",
    responses((status = 200, description = "The identity", body = IdentityView)))]
pub(super) async fn identity(
    State(st): St,
    Key(_, _): Key<act::ShowIdentity>,
) -> Result<Response, ApiErr> {
    IdentityView::now(&st).await
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
    IdentityView::now(&st).await
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

/// `PUT /api/federation/policy`: any of `default_mode`, `allowed_peers`,
/// `max_backfill_events_per_request`; a field left out keeps its value.
#[derive(Debug, utoipa::ToSchema)]
pub(crate) struct PolicyPatch {
    /// Who may federate.
    default_mode: Option<FederationMode>,
    /// Server names that may accept invitations under `invite_only` (at most 1,000).
    allowed_peers: Option<Vec<String>>,
    /// The most events one backfill request is answered with.
    #[schema(minimum = 1, maximum = 100000)]
    max_backfill_events_per_request: Option<i32>,
    /// The least federation traffic must be signed with: `token` or `identity` (identity
    /// keys only; refused while shared-token peers or trusted senders exist).
    min_signature_protocol: Option<SignatureProtocol>,
}

impl FromBody for PolicyPatch {
    const FIELDS: &'static [&'static str] = &[
        "default_mode",
        "allowed_peers",
        "max_backfill_events_per_request",
        "min_signature_protocol",
    ];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let default_mode = opt_str(m, "default_mode", 32)?
            .map(|s| {
                FederationMode::parse(&s).ok_or_else(|| {
                    ApiErr(ApiError::validation(
                        "default_mode",
                        format!(
                            "default_mode must be one of {}",
                            one_of(FederationMode::ALL)
                        ),
                    ))
                })
            })
            .transpose()?;
        let allowed_peers = match m.get("allowed_peers") {
            None | Some(Value::Null) => None,
            Some(Value::Array(v)) if v.len() <= 1000 => Some(
                v.iter()
                    .map(|p| match p {
                        Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.clone()),
                        _ => Err(ApiErr(ApiError::validation(
                            "allowed_peers",
                            "allowed_peers must be server names (non-empty strings)",
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ApiErr(ApiError::validation(
                    "allowed_peers",
                    "allowed_peers must be an array of at most 1000 server names",
                )))
            }
        };
        let min_signature_protocol = opt_str(m, "min_signature_protocol", 32)?
            .map(|s| {
                SignatureProtocol::parse(&s).ok_or_else(|| {
                    ApiErr(ApiError::validation(
                        "min_signature_protocol",
                        format!(
                            "min_signature_protocol must be one of {}",
                            one_of(SignatureProtocol::ALL)
                        ),
                    ))
                })
            })
            .transpose()?;
        Ok(PolicyPatch {
            min_signature_protocol,
            default_mode,
            allowed_peers,
            max_backfill_events_per_request: opt_int(
                m,
                "max_backfill_events_per_request",
                1,
                100_000,
            )?
            .map(|n| n as i32),
        })
    }
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

/// `POST /api/federation/invitations`: `scopes` (what this side sends to whoever accepts;
/// default `["*"]`), `max_hops` (default 3), `ttl` in seconds (default 7 days).
#[derive(Debug, utoipa::ToSchema)]
pub(crate) struct NewInvitation {
    /// Event types this side sends to whoever accepts (globs).
    #[schema(required = false, default = json!(["*"]))]
    scopes: Vec<String>,
    /// Hop limit of what this side sends.
    #[schema(required = false, default = 3, minimum = 1, maximum = 16)]
    max_hops: i32,
    /// Seconds it stays valid (default 7 days).
    #[schema(required = false, default = 604800, minimum = 1)]
    ttl: i64,
}

impl FromBody for NewInvitation {
    const FIELDS: &'static [&'static str] = &["scopes", "max_hops", "ttl"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        Ok(NewInvitation {
            scopes: opt_scopes(m)?.unwrap_or_else(|| vec!["*".to_string()]),
            max_hops: opt_max_hops(m)?.unwrap_or(hop_limit::DEFAULT),
            ttl: opt_int(m, "ttl", 1, MAX_TTL_SECS)?.unwrap_or(DEFAULT_TTL_SECS),
        })
    }
}

/// A new invitation as answered once: the string to hand to the other server.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedInvitation {
    /// Its id (to list or revoke it).
    id: Uuid,
    /// The invitation string, with its single-use token; shown only in this answer.
    invitation: String,
    /// When it stops working.
    expires_at: chrono::DateTime<chrono::Utc>,
    /// What this side sends to whoever accepts.
    scopes: Vec<String>,
    /// Hop limit of what this side sends.
    max_hops: i32,
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
    let info: InvitationInfo = st
        .store
        .create_invitation(
            &g.team_id,
            &token,
            &new.scopes,
            new.max_hops,
            std::time::Duration::from_secs(new.ttl.unsigned_abs()),
        )
        .await?;
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
    Ok(Deleted::answer(None))
}

/// `POST /api/federation/invitations/accept`: `invitation` (the string another server's
/// `kite peer invite` printed), optional `scopes` (what this side sends; default what the
/// invitation offers) and `max_hops` (default 3). The inviter's answer may narrow these
/// terms, never widen them (502 `peering_terms_refused`, nothing kept).
#[derive(Debug, utoipa::ToSchema)]
pub(crate) struct AcceptInvitation {
    /// The string the other server's `kite peer invite` printed (`kiteinv_...`).
    #[schema(value_type = String, max_length = 8192)]
    invitation: Invitation,
    /// Event types this side sends (default: what the invitation offers).
    scopes: Option<Vec<String>>,
    /// Hop limit of what this side sends (default 3).
    #[schema(minimum = 1, maximum = 16)]
    max_hops: Option<i32>,
}

impl FromBody for AcceptInvitation {
    const FIELDS: &'static [&'static str] = &["invitation", "scopes", "max_hops"];

    fn from_body(m: &Map<String, Value>) -> Result<Self, ApiErr> {
        let text = req_str(m, "invitation", 8192)?;
        let invitation = Invitation::decode(&text)
            .map_err(|e| ApiErr(ApiError::validation("invitation", e.to_string())))?;
        Ok(AcceptInvitation {
            invitation,
            scopes: opt_scopes(m)?,
            max_hops: opt_int(m, "max_hops", 1, 16)?.map(|n| n as i32),
        })
    }
}

#[utoipa::path(post, path = "/api/federation/invitations/accept", tag = "federation",
    summary = "Accept another server's invitation: the handshake, then a peer on both sides",
    request_body = AcceptInvitation,
    responses((status = 201, description = "The new peer", body = super::peers::PeerView)))]
pub(super) async fn accept_invitation(
    State(st): St,
    Key(g, _): Key<act::AcceptInvitation>,
    Valid(a): Valid<AcceptInvitation>,
) -> Result<Response, ApiErr> {
    use kite_federation::handshake::AcceptError;
    peers::check_destination(&st, &a.invitation.url).await?;
    let peer = st
        .fed
        .accept_invitation(&g.team_id, &a.invitation, a.scopes, a.max_hops)
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
    let view = peers::PeerView::describe(&st, &g.team_id, &peer).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
