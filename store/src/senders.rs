//! Trusted senders: instances allowed to post federated events to this one.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::keys::found;
use crate::rotation::rotate_set;
use crate::{Result, Store, StoreError};

pub use kite_api::senders::{Sender, SenderPatch};

const COLS: &str = "id, team_id, name, key_id, legacy_signature, inbound_token, \
    previous_inbound_token, previous_until, created_at";

impl Store {
    fn sender(&self, r: &Row) -> Result<Sender> {
        let (previous, previous_until) = self.previous_secret(r, 6, 7)?;
        Ok(Sender {
            id: r.get(0),
            team_id: r.get(1),
            name: r.get(2),
            key_id: r.get::<_, Option<String>>(3).unwrap_or_default(),
            legacy_signature: r.get(4),
            inbound_token: self.open(r.get(5))?,
            previous_inbound_token: previous,
            previous_until,
            created_at: r.get(8),
        })
    }

    /// Adds a trusted sender. Its key id is `key_id` if given, else the id of the federation
    /// token minted here with this secret, else the sender's own id.
    pub async fn create_sender(
        &self,
        team_id: &str,
        name: &str,
        inbound_token: &str,
        key_id: Option<&str>,
        legacy_signature: bool,
    ) -> Result<Sender> {
        let c = self.conn().await?;
        let id = Uuid::now_v7();
        let key_id = match key_id {
            Some(k) => k.to_string(),
            None => c
                .query_opt(
                    "SELECT id::text FROM federation_tokens WHERE team_id = $1 AND token_hash = $2",
                    &[&team_id, &kite_wire::token::digest(inbound_token)],
                )
                .await?
                .map(|r| r.get(0))
                .unwrap_or_else(|| id.to_string()),
        };
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO trusted_senders (id, team_id, name, inbound_token, key_id, legacy_signature)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLS}"
                ),
                &[
                    &id,
                    &team_id,
                    &name,
                    &self.seal(inbound_token)?,
                    &key_id,
                    &legacy_signature,
                ],
            )
            .await?;
        self.sender(&row)
    }

    /// A team's trusted senders.
    pub async fn list_senders(&self, team_id: &str) -> Result<Vec<Sender>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM trusted_senders WHERE team_id = $1 ORDER BY created_at"
                ),
                &[&team_id],
            )
            .await?;
        rows.iter().map(|r| self.sender(r)).collect()
    }

    /// Every trusted sender (for ingress' cache).
    pub async fn all_senders(&self) -> Result<Vec<Sender>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {COLS} FROM trusted_senders ORDER BY created_at, id"),
                &[],
            )
            .await?;
        rows.iter().map(|r| self.sender(r)).collect()
    }

    /// Updates a trusted sender; a new secret keeps the old one valid for `overlap`.
    pub async fn update_sender(
        &self,
        team_id: &str,
        id: Uuid,
        p: &SenderPatch,
        overlap: std::time::Duration,
    ) -> Result<Sender> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "UPDATE trusted_senders SET
                        name = COALESCE($3, name),
                        {},
                        legacy_signature = COALESCE($5, legacy_signature)
                     WHERE team_id = $1 AND id = $2 RETURNING {COLS}",
                    rotate_set(
                        "inbound_token",
                        "previous_inbound_token",
                        "previous_until",
                        "$4",
                        "$6"
                    )
                ),
                &[
                    &team_id,
                    &id,
                    &p.name,
                    &p.inbound_token
                        .as_deref()
                        .map(|t| self.seal(t))
                        .transpose()?,
                    &p.legacy_signature,
                    &overlap.as_secs_f64(),
                ],
            )
            .await?;
        found(row.as_ref().map(|r| self.sender(r)).transpose()?)
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
