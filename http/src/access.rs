//! One permission table for every door: each thing a key may be asked to do, over the admin
//! API or the `/ws` RPC, is an [`Action`], and [`Action::needs`] is the one place that says
//! which permission it takes. An HTTP handler names its action in its signature
//! (`Key<act::CreatePeer>`); an RPC method maps to the action of its HTTP twin
//! (`rpc::action`), so the two doors can never ask for different permissions.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use kite_store::keys::KeyGrant;
use kite_store::types::Permission;
use kite_wire::{ApiError, Code};

use crate::hooks::bearer;
use crate::{ApiErr, AppState};

/// Names an [`Action`] as a type, for [`Key`].
pub(crate) trait Act {
    /// The action.
    const ACTION: Action;
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $name:ident => $perm:ident, )*) => {
        /// Everything a team's key may be asked to do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Action {
            $( $(#[$doc])* $name, )*
        }

        impl Action {
            /// Every action.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Action] = &[$(Action::$name),*];

            /// The permission the action needs: the table every door reads.
            pub(crate) const fn needs(self) -> Permission {
                match self {
                    $( Action::$name => Permission::$perm, )*
                }
            }
        }

        /// One type per action, to name it in a handler's signature.
        pub(crate) mod act {
            $(
                $(#[$doc])*
                pub(crate) struct $name;
                impl super::Act for $name {
                    const ACTION: super::Action = super::Action::$name;
                }
            )*
        }
    };
}

actions! {
    /// Mint a federation token.
    CreateToken => Admin,
    /// List the minted tokens.
    ListTokens => Admin,
    /// Add a token peer.
    CreatePeer => Admin,
    /// List the peers.
    ListPeers => Read,
    /// Show one peer.
    ShowPeer => Read,
    /// Change a peer (pause, resume, revoke, its terms).
    UpdatePeer => Admin,
    /// Remove a peer.
    DeletePeer => Admin,
    /// Put a peer's dead deliveries back in line.
    ReplayDead => Admin,
    /// Put dead deliveries that match a filter back in line.
    ReplayMatching => Admin,
    /// Send one delivery again now.
    Resend => Admin,
    /// Cancel one pending delivery.
    Cancel => Admin,
    /// Show a peer's delivery charts.
    ShowPeerStats => Read,
    /// Fetch a handshake peer's descriptor again and pin its keys.
    RefreshPeer => Admin,
    /// Grant a peer `send` or `backfill`.
    CreateGrant => Admin,
    /// List a peer's grants.
    ListGrants => Admin,
    /// Withdraw a grant.
    DeleteGrant => Admin,
    /// Pull a peer's history.
    Backfill => Admin,
    /// Trust a sender.
    CreateSender => Admin,
    /// List the trusted senders.
    ListSenders => Admin,
    /// Change a trusted sender.
    UpdateSender => Admin,
    /// Stop trusting a sender.
    DeleteSender => Admin,
    /// Configure a signed source (RPC `hooks.create`).
    CreateSource => Admin,
    /// List the signed sources, never their secrets (RPC `hooks.list`).
    ListSources => Read,
    /// Rotate a source's secret.
    RotateSource => Admin,
    /// Remove a source's signature check (RPC `hooks.deactivate`).
    DeleteSource => Admin,
    /// Make an API key (RPC `keys.create`).
    CreateKey => Admin,
    /// List the API keys (RPC `keys.list`).
    ListKeys => Admin,
    /// Revoke an API key (RPC `keys.revoke`).
    RevokeKey => Admin,
    /// Who the key is (RPC `dashboard.stats`).
    Session => Read,
    /// Show this server's descriptor.
    ShowIdentity => Read,
    /// Rotate this server's identity key.
    RotateIdentity => Admin,
    /// Show the federation policy.
    ShowPolicy => Read,
    /// Change the federation policy.
    SetPolicy => Admin,
    /// Show the operational endpoint.
    ShowOperational => Read,
    /// Set the operational endpoint.
    SetOperational => Admin,
    /// Remove the operational endpoint.
    DeleteOperational => Admin,
    /// Invite a server.
    CreateInvitation => Admin,
    /// List the invitations.
    ListInvitations => Admin,
    /// Withdraw an invitation.
    DeleteInvitation => Admin,
    /// Accept another server's invitation.
    AcceptInvitation => Admin,
    /// List the outbox.
    ListOutbox => Read,
    /// List the events (RPC `events.recent`).
    ListEvents => Read,
    /// Show one event's story.
    ShowEvent => Read,
}

/// The grant of a request whose API key may do the action `A` (else 401 or 403).
pub(crate) struct Key<A>(pub(crate) KeyGrant, pub(crate) PhantomData<A>);

impl<A: Act + Send + Sync> FromRequestParts<Arc<AppState>> for Key<A> {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Self, ApiErr> {
        authorize(st, &parts.headers, A::ACTION.needs())
            .await
            .map(|g| Key(g, PhantomData))
    }
}

/// Authenticates the request's API key and checks it grants at least `need`.
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    need: Permission,
) -> Result<KeyGrant, ApiErr> {
    let key = bearer(headers).ok_or_else(|| {
        ApiErr(ApiError::unauthorized(
            "an API key is required (Authorization: Bearer ...)",
        ))
    })?;
    let grant = st
        .store
        .authenticate_key(key)
        .await?
        .ok_or_else(|| ApiErr(ApiError::unauthorized("unknown or revoked API key")))?;
    if !grant.permission.allows(need) {
        return Err(ApiErr(ApiError::new(
            Code::Forbidden,
            format!("this endpoint needs the {need} permission"),
        )));
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changing_anything_needs_admin_and_reads_need_read() {
        for a in Action::ALL {
            let name = format!("{a:?}");
            let reads = ["List", "Show", "Session"]
                .iter()
                .any(|p| name.starts_with(p));
            let admin_lists = [Action::ListTokens, Action::ListSenders, Action::ListKeys]
                .contains(a)
                || [Action::ListGrants, Action::ListInvitations].contains(a);
            let want = if reads && !admin_lists {
                Permission::Read
            } else {
                Permission::Admin
            };
            assert_eq!(a.needs(), want, "{name}");
        }
    }
}
