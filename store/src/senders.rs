//! Trusted senders: instances allowed to post federated events to this one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// A trusted sender. The inbound token is never serialized.
#[derive(Debug, Clone, Serialize)]
pub struct Sender {
    /// Sender id.
    pub id: Uuid,
    /// Owning team.
    pub team_id: String,
    /// Unique name within the team.
    pub name: String,
    /// The secret the sender presents (shown never).
    #[serde(skip)]
    pub inbound_token: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

fn sender(r: &tokio_postgres::Row) -> Sender {
    Sender {
        id: r.get(0),
        team_id: r.get(1),
        name: r.get(2),
        inbound_token: r.get(3),
        created_at: r.get(4),
    }
}

impl Store {
    /// Adds a trusted sender.
    pub async fn create_sender(
        &self,
        team_id: &str,
        name: &str,
        inbound_token: &str,
    ) -> Result<Sender> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "INSERT INTO trusted_senders (id, team_id, name, inbound_token) VALUES ($1, $2, $3, $4)
                 RETURNING id, team_id, name, inbound_token, created_at",
                &[&Uuid::now_v7(), &team_id, &name, &inbound_token],
            )
            .await?;
        Ok(sender(&row))
    }

    /// A team's trusted senders.
    pub async fn list_senders(&self, team_id: &str) -> Result<Vec<Sender>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, team_id, name, inbound_token, created_at FROM trusted_senders
                 WHERE team_id = $1 ORDER BY created_at",
                &[&team_id],
            )
            .await?;
        Ok(rows.iter().map(sender).collect())
    }

    /// Every trusted sender (for ingress' cache).
    pub async fn all_senders(&self) -> Result<Vec<Sender>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, team_id, name, inbound_token, created_at FROM trusted_senders",
                &[],
            )
            .await?;
        Ok(rows.iter().map(sender).collect())
    }

    /// Removes a trusted sender.
    pub async fn delete_sender(&self, team_id: &str, id: Uuid) -> Result<()> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM trusted_senders WHERE team_id = $1 AND id = $2",
                &[&team_id, &id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
