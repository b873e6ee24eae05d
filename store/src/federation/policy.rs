//! Each team's federation policy: who may federate, how much a backfill answers, the least
//! signature protocol it takes.

use std::collections::HashMap;

use crate::{Result, RowExt, Store};

pub use kite_api::policy::Policy;

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
