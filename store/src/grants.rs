//! Grants: scoped, expiring permissions a team gives a handshake peer (`send`, `backfill`).

use kite_wire::ids::PeerId;
use std::collections::HashMap;

use tokio_postgres::Row;
use uuid::Uuid;

use crate::types::GrantPermission;
use crate::{Result, RowExt, Store, StoreError};

pub use kite_api::grants::{Grant, NewGrant};

const COLS: &str = "id, peer_id, permissions, scopes, expires_at, created_at";

fn grant(r: &Row) -> Result<Grant> {
    let permissions: Vec<String> = r.col(2)?;
    Ok(Grant {
        id: r.col(0)?,
        peer_id: r.col(1)?,
        permissions: permissions
            .iter()
            .map(|p| {
                GrantPermission::parse(p).ok_or_else(|| StoreError::Decode {
                    column: 2,
                    reason: format!("unknown permission {p:?}"),
                })
            })
            .collect::<Result<_>>()?,
        scopes: r.col(3)?,
        expires_at: r.col(4)?,
        created_at: r.col(5)?,
    })
}

impl Store {
    /// Gives a peer of the team a grant.
    pub async fn create_grant(
        &self,
        team_id: &str,
        peer_id: PeerId,
        g: &NewGrant,
    ) -> Result<Grant> {
        let c = self.conn().await?;
        let permissions: Vec<&str> = g.permissions.iter().map(|p| p.as_str()).collect();
        let row = c
            .query_opt(
                &format!(
                    "INSERT INTO peer_grants (id, team_id, peer_id, permissions, scopes, expires_at)
                     SELECT $1, $2, $3, $4, $5, $6 FROM peers WHERE id = $3 AND team_id = $2
                     RETURNING {COLS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &peer_id,
                    &permissions,
                    &g.scopes,
                    &g.expires_at,
                ],
            )
            .await?;
        row.as_ref()
            .map(grant)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// A peer's grants, newest first (expired ones included).
    pub async fn list_grants(&self, team_id: &str, peer_id: PeerId) -> Result<Vec<Grant>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM peer_grants WHERE team_id = $1 AND peer_id = $2
                     ORDER BY created_at DESC"
                ),
                &[&team_id, &peer_id],
            )
            .await?;
        rows.iter().map(grant).collect()
    }

    /// Every grant, by peer (for the federation cache, which checks expiry when it uses one).
    pub async fn all_grants(&self) -> Result<HashMap<PeerId, Vec<Grant>>> {
        let c = self.conn().await?;
        let rows = c
            .query(&format!("SELECT {COLS} FROM peer_grants"), &[])
            .await?;
        let mut out: HashMap<PeerId, Vec<Grant>> = HashMap::new();
        for r in &rows {
            let g = grant(r)?;
            out.entry(g.peer_id).or_default().push(g);
        }
        Ok(out)
    }

    /// Deletes a grant of a peer.
    pub async fn delete_grant(&self, team_id: &str, peer_id: PeerId, id: Uuid) -> Result<()> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM peer_grants WHERE team_id = $1 AND peer_id = $2 AND id = $3",
                &[&team_id, &peer_id, &id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// Inserts a grant inside a transaction (the grants a handshake makes).
pub(crate) async fn insert_grant(
    tx: &tokio_postgres::Transaction<'_>,
    team_id: &str,
    peer_id: PeerId,
    g: &NewGrant,
) -> Result<()> {
    let permissions: Vec<&str> = g.permissions.iter().map(|p| p.as_str()).collect();
    tx.execute(
        "INSERT INTO peer_grants (id, team_id, peer_id, permissions, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &Uuid::now_v7(),
            &team_id,
            &peer_id,
            &permissions,
            &g.scopes,
            &g.expires_at,
        ],
    )
    .await?;
    Ok(())
}
