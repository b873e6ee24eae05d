//! Each team's federation policy: who may federate, how much a backfill answers, the least
//! signature protocol it takes.

use std::collections::HashMap;

use serde::Serialize;

use crate::types::{FederationMode, SignatureProtocol};
use crate::{Result, RowExt, Store};

/// A team's federation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

impl Store {
    /// A team's policy (the default one if it never set one).
    pub async fn policy(&self, team_id: &str) -> Result<Policy> {
        Ok(self
            .policies(Some(team_id))
            .await?
            .remove(team_id)
            .unwrap_or_default())
    }

    /// Every team's policy that differs from the default.
    pub async fn all_policies(&self) -> Result<HashMap<String, Policy>> {
        self.policies(None).await
    }

    async fn policies(&self, team_id: Option<&str>) -> Result<HashMap<String, Policy>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT team_id, default_mode, allowed_peers, max_backfill_events_per_request,
                        min_signature_protocol
                 FROM federation_policies WHERE $1::text IS NULL OR team_id = $1",
                &[&team_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.col(0)?,
                    Policy {
                        default_mode: r.col(1)?,
                        allowed_peers: r.col(2)?,
                        max_backfill_events_per_request: r.col(3)?,
                        min_signature_protocol: r.col(4)?,
                    },
                ))
            })
            .collect()
    }

    /// Sets a team's policy.
    pub async fn set_policy(&self, team_id: &str, p: &Policy) -> Result<Policy> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO federation_policies (team_id, default_mode, allowed_peers,
                 max_backfill_events_per_request, min_signature_protocol)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (team_id) DO UPDATE SET default_mode = $2, allowed_peers = $3,
                 max_backfill_events_per_request = $4, min_signature_protocol = $5,
                 updated_at = now()",
            &[
                &team_id,
                &p.default_mode,
                &p.allowed_peers,
                &p.max_backfill_events_per_request,
                &p.min_signature_protocol,
            ],
        )
        .await?;
        Ok(p.clone())
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
