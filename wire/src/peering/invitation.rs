//! The invitation (`kite peer invite`) and the accept call that answers it: what the
//! inviter offers, what the accepting server asks for, and what the inviter agrees to.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{
    check_hops, check_name, Message, PeeringError, ServerDescriptor, Terms, INVITATION_PREFIX,
    MAX_TOKEN_LEN, MAX_URL_LEN,
};
use crate::identity::valid_server_name;
use crate::ids::TeamId;
use crate::scope::ScopeSet;

/// What an invitation string carries: where and who the inviter is, the single-use token,
/// and what the inviter offers to send (the bound of what it may later say it sends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invitation {
    /// The inviting server's base URL.
    pub url: String,
    /// Its team.
    pub team: TeamId,
    /// Its server name.
    pub server_name: String,
    /// The single-use token.
    pub token: String,
    /// What the inviter sends to whoever accepts.
    pub offer: Terms,
}

/// Why an invitation string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a kite invitation (it starts with {INVITATION_PREFIX} and was printed by `kite peer invite`)")]
pub struct BadInvitation;

impl Invitation {
    /// A new single-use token: 32 random bytes, base64url.
    pub fn mint_token() -> String {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The one-line form printed by `kite peer invite`.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{INVITATION_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads the one-line form.
    pub fn decode(s: &str) -> Result<Self, BadInvitation> {
        let b64 = s
            .trim()
            .strip_prefix(INVITATION_PREFIX)
            .ok_or(BadInvitation)?;
        let json = URL_SAFE_NO_PAD.decode(b64).map_err(|_| BadInvitation)?;
        let inv: Self = serde_json::from_slice(&json).map_err(|_| BadInvitation)?;
        if inv.url.is_empty()
            || inv.url.len() > MAX_URL_LEN
            || !super::plausible_team(&inv.team)
            || inv.token.is_empty()
            || inv.token.len() > MAX_TOKEN_LEN
            || !valid_server_name(&inv.server_name)
            || inv.offer.check().is_err()
        {
            return Err(BadInvitation);
        }
        Ok(inv)
    }
}

/// `POST {accept}`: the accepting server answers an invitation (signed with its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptRequest {
    /// The invitation's token.
    pub token: String,
    /// The accepting server's descriptor (its keys are pinned by the inviter).
    pub server: ServerDescriptor,
    /// The accepting team.
    pub team: TeamId,
    /// Event types the accepting side will send to the inviter (None: the invitation's).
    pub scopes: Option<Vec<String>>,
    /// Hop limit for what the accepting side sends.
    pub max_hops: i32,
}

impl Message for AcceptRequest {
    const WHAT: &'static str = "an accept request";
    fn check(&self) -> Result<(), PeeringError> {
        if self.token.is_empty() || self.token.len() > MAX_TOKEN_LEN {
            return Err(PeeringError::Malformed {
                what: Self::WHAT,
                reason: format!("its token is 1 to {MAX_TOKEN_LEN} bytes"),
            });
        }
        self.server.check()?;
        check_team(self.team.as_str(), Self::WHAT)?;
        if let Some(scopes) = &self.scopes {
            ScopeSet::compile(scopes).map_err(|e| PeeringError::Terms(e.to_string()))?;
        }
        check_hops(self.max_hops)
    }
}

/// The inviter's answer to an accepted invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptResponse {
    /// The inviter's server name.
    pub server_name: String,
    /// The inviting team.
    pub team: TeamId,
    /// Event types the inviter will send to the accepting side.
    pub scopes: Vec<String>,
    /// Hop limit for what the inviter sends.
    pub max_hops: i32,
    /// Event types the accepting side sends, as agreed.
    pub your_scopes: Vec<String>,
    /// Hop limit for what the accepting side sends.
    pub your_max_hops: i32,
}

impl AcceptResponse {
    /// What the inviter says it sends.
    pub fn theirs(&self) -> Terms {
        Terms {
            scopes: self.scopes.clone(),
            max_hops: self.max_hops,
        }
    }

    /// What the inviter says the accepting side sends.
    pub fn yours(&self) -> Terms {
        Terms {
            scopes: self.your_scopes.clone(),
            max_hops: self.your_max_hops,
        }
    }
}

impl Message for AcceptResponse {
    const WHAT: &'static str = "an acceptance";
    fn check(&self) -> Result<(), PeeringError> {
        check_name(&self.server_name)?;
        check_team(self.team.as_str(), Self::WHAT)?;
        self.theirs().check()?;
        self.yours().check()
    }
}

/// Refuses a team another server names that could not stand as one segment of this
/// server's URLs for it ([`super::plausible_team`]).
fn check_team(team: &str, what: &'static str) -> Result<(), PeeringError> {
    if super::plausible_team(team) {
        return Ok(());
    }
    Err(PeeringError::Malformed {
        what,
        reason: "its team is 1 to 64 visible characters without / ? # % or \\".into(),
    })
}
