//! Teams: made and removed by the operator (`/api/teams`); everything else belongs to one.

use uuid::Uuid;

use crate::keys::ApiKeyInfo;
use crate::types::Permission;
use crate::{Result, RowExt, Store, StoreError};

pub use kite_api::teams::Team;

impl Store {
    /// Makes a team and its first admin key, in one transaction; answers the team, the key's
    /// listing and the key itself (to show once). A taken id is a conflict.
    pub async fn create_team(&self, id: &str) -> Result<(Team, ApiKeyInfo, String)> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO teams (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id, created_at",
                &[&id],
            )
            .await?
            .ok_or(StoreError::Conflict)?;
        let team = Team {
            id: row.col(0)?,
            created_at: row.col(1)?,
        };
        let key = kite_wire::token::mint_api_key();
        let k = tx
            .query_one(
                "INSERT INTO api_keys (id, team_id, prefix, key_hash, permission, label)
                 VALUES ($1, $2, $3, $4, $5, 'first admin key')
                 RETURNING id, prefix, permission, label, created_at, revoked_at",
                &[
                    &Uuid::now_v7(),
                    &id,
                    &kite_wire::token::key_prefix(&key),
                    &kite_wire::token::digest(&key),
                    &Permission::Admin,
                ],
            )
            .await?;
        let info = ApiKeyInfo {
            id: k.col(0)?,
            prefix: k.col(1)?,
            permission: k.col(2)?,
            label: k.col(3)?,
            created_at: k.col(4)?,
            revoked_at: k.col(5)?,
        };
        tx.commit().await?;
        Ok((team, info, key))
    }

    /// Every team, oldest first.
    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        let c = self.conn().await?;
        c.query(
            "SELECT id, created_at FROM teams ORDER BY created_at, id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Team {
                id: r.col(0)?,
                created_at: r.col(1)?,
            })
        })
        .collect()
    }

    /// Removes a team and everything it owns (keys, tokens, peers, senders, sources, events,
    /// deliveries, cursors); answers the ids of its peers, whose queues the caller removes.
    pub async fn delete_team(&self, id: &str) -> Result<Vec<Uuid>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let peers: Vec<Uuid> = tx
            .query("SELECT id FROM peers WHERE team_id = $1", &[&id])
            .await?
            .iter()
            .map(|r| r.col(0))
            .collect::<Result<_>>()?;
        // Events, their deliveries and attempts, and cursors name their team (and their
        // parent row) without a foreign key: removed first (the deliveries in one pass,
        // their attempts with them).
        tx.execute(
            "WITH rows AS (DELETE FROM outbox WHERE team_id = $1 RETURNING id),
                  gone_actions AS (DELETE FROM outbox_actions WHERE outbox_id IN (SELECT id FROM rows))
             DELETE FROM attempts WHERE outbox_id IN (SELECT id FROM rows)",
            &[&id],
        )
        .await?;
        tx.execute("DELETE FROM events WHERE team_id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM stream_cursors WHERE team_id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM stream_retention WHERE team_id = $1", &[&id])
            .await?;
        if tx
            .execute("DELETE FROM teams WHERE id = $1", &[&id])
            .await?
            == 0
        {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(peers)
    }
}
