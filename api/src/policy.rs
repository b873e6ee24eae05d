//! A team's federation policy.

use serde::{Deserialize, Serialize};

use crate::types::{FederationMode, SignatureProtocol};

/// A team's federation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// Who may federate.
    pub default_mode: FederationMode,
    /// Server names that may accept invitations under `invite_only`.
    pub allowed_peers: Vec<String>,
    /// The most events one backfill request is answered with.
    pub max_backfill_events_per_request: i32,
    /// The least federation traffic must be signed with: `token` (shared tokens or identity
    /// keys) or `identity` (identity keys only: shared-token peers and senders refused).
    pub min_signature_protocol: SignatureProtocol,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_mode: FederationMode::Open,
            allowed_peers: Vec::new(),
            max_backfill_events_per_request: 1000,
            min_signature_protocol: SignatureProtocol::Token,
        }
    }
}

impl Policy {
    /// Whether `server_name` may accept an invitation of this team.
    pub fn admits(&self, server_name: &str) -> std::result::Result<(), FederationMode> {
        match self.default_mode {
            FederationMode::Open => Ok(()),
            FederationMode::InviteOnly if self.allowed_peers.iter().any(|p| p == server_name) => {
                Ok(())
            }
            mode => Err(mode),
        }
    }
}

use crate::request::*;
use kite_wire::ApiError;
use serde_json::Value;

/// This server's identity as its admins see it: the descriptor other servers fetch, and when
/// its key is rotated next.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityView {
    /// The descriptor.
    #[serde(flatten)]
    pub descriptor: kite_wire::peering::ServerDescriptor,
    /// When the current key is rotated on schedule (`KITE_KEY_ROTATION_SECS`; null: by
    /// hand only).
    pub next_rotation_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `PUT /api/federation/policy`: any of `default_mode`, `allowed_peers`,
/// `max_backfill_events_per_request`; a field left out keeps its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyPatch {
    /// Who may federate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<FederationMode>,
    /// Server names that may accept invitations under `invite_only` (at most 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_peers: Option<Vec<String>>,
    /// The most events one backfill request is answered with.
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backfill_events_per_request: Option<i32>,
    /// The least federation traffic must be signed with: `token` or `identity` (identity
    /// keys only; refused while shared-token peers or trusted senders exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_signature_protocol: Option<SignatureProtocol>,
}

impl Request for PolicyPatch {
    const FIELDS: &'static [&'static str] = &[
        "default_mode",
        "allowed_peers",
        "max_backfill_events_per_request",
        "min_signature_protocol",
    ];

    fn read(m: &Body) -> Result<Self, ApiError> {
        let default_mode = opt_enum(m, "default_mode", FederationMode::ALL)?;
        let allowed_peers = match m.get("allowed_peers") {
            None | Some(Value::Null) => None,
            Some(Value::Array(v)) if v.len() <= 1000 => Some(
                v.iter()
                    .map(|p| match p {
                        Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.clone()),
                        _ => Err(ApiError::validation(
                            "allowed_peers",
                            "allowed_peers must be server names (non-empty strings)",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ApiError::validation(
                    "allowed_peers",
                    "allowed_peers must be an array of at most 1000 server names",
                ))
            }
        };
        let min_signature_protocol = opt_enum(m, "min_signature_protocol", SignatureProtocol::ALL)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_admit_by_mode() {
        let mut p = Policy::default();
        assert_eq!(p.admits("b"), Ok(()));
        p.default_mode = FederationMode::InviteOnly;
        assert_eq!(p.admits("b"), Err(FederationMode::InviteOnly));
        p.allowed_peers = vec!["b".into()];
        assert_eq!(p.admits("b"), Ok(()));
        p.default_mode = FederationMode::Closed;
        assert_eq!(p.admits("b"), Err(FederationMode::Closed));
    }
}
