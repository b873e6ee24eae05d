//! Teams, API keys and federation tokens. Only SHA-256 digests of secrets are stored.

use kite_wire::ids::TeamId;
use kite_wire::token;
use uuid::Uuid;

use crate::types::Permission;
use crate::{Result, RowExt, Store, StoreError};

pub use kite_api::keys::ApiKeyInfo;
pub use kite_api::tokens::TokenInfo;

/// The team and permission an API key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key's team.
    pub team_id: TeamId,
    /// `read`, `write` or `admin`.
    pub permission: Permission,
    /// The key's id (per-key limits).
    pub key_id: Uuid,
}

fn key_info(r: &tokio_postgres::Row) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.col(0)?,
        prefix: r.col(1)?,
        permission: r.col(2)?,
        label: r.col(3)?,
        created_at: r.col(4)?,
        revoked_at: r.col(5)?,
    })
}

impl Store {
    /// Creates the team if it does not exist.
    pub async fn ensure_team(&self, team_id: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO teams (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&team_id],
        )
        .await?;
        Ok(())
    }

    /// True if the team exists.
    pub async fn team_exists(&self, team_id: &str) -> Result<bool> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached("SELECT 1 FROM teams WHERE id = $1")
            .await?;
        Ok(c.query_opt(&st, &[&team_id]).await?.is_some())
    }

    /// Whether the team has any live key.
    pub async fn team_has_keys(&self, team_id: &str) -> Result<bool> {
        let c = self.conn().await?;
        Ok(c.query_opt(
            "SELECT 1 FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL LIMIT 1",
            &[&team_id],
        )
        .await?
        .is_some())
    }

    /// Stores an API key (by digest) for a team; a key already stored is left as it is.
    pub async fn add_api_key(
        &self,
        team_id: &str,
        key: &str,
        permission: Permission,
        label: &str,
    ) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO api_keys (id, team_id, prefix, key_hash, permission, label)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_hash) DO NOTHING",
            &[
                &Uuid::now_v7(),
                &team_id,
                &token::key_prefix(key),
                &token::digest(key),
                &permission,
                &label,
            ],
        )
        .await?;
        Ok(())
    }

    /// Mints an API key for a team; answers its listing entry and the key (shown once).
    pub async fn create_api_key(
        &self,
        team_id: &str,
        permission: Permission,
        label: &str,
    ) -> Result<(ApiKeyInfo, String)> {
        let key = token::mint_api_key();
        let c = self.conn().await?;
        let row = c
            .query_one(
                "INSERT INTO api_keys (id, team_id, prefix, key_hash, permission, label)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, prefix, permission, label, created_at, revoked_at",
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &token::key_prefix(&key),
                    &token::digest(&key),
                    &permission,
                    &label,
                ],
            )
            .await?;
        Ok((key_info(&row)?, key))
    }

    /// A team's API keys.
    pub async fn list_api_keys(&self, team_id: &str) -> Result<Vec<ApiKeyInfo>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, prefix, permission, label, created_at, revoked_at FROM api_keys
                 WHERE team_id = $1 ORDER BY created_at",
                &[&team_id],
            )
            .await?;
        rows.iter().map(key_info).collect()
    }

    /// Revokes a key; it fails from the next request on.
    pub async fn revoke_api_key(&self, team_id: &str, id: Uuid) -> Result<ApiKeyInfo> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE team_id = $1 AND id = $2
                 RETURNING id, prefix, permission, label, created_at, revoked_at",
                &[&team_id, &id],
            )
            .await?;
        found(row.as_ref().map(key_info).transpose()?)
    }

    /// The grant of a presented API key, if it is known and not revoked.
    pub async fn authenticate_key(&self, key: &str) -> Result<Option<KeyGrant>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT team_id, permission, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .await?;
        let row = c.query_opt(&st, &[&token::digest(key)]).await?;
        row.map(|r| {
            Ok(KeyGrant {
                team_id: r.col(0)?,
                permission: r.col(1)?,
                key_id: r.col(2)?,
            })
        })
        .transpose()
    }

    /// Records a minted federation token (by digest) and returns its listing entry.
    pub async fn create_token(
        &self,
        team_id: &str,
        label: &str,
        secret: &str,
    ) -> Result<TokenInfo> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "INSERT INTO federation_tokens (id, team_id, label, token_hash) VALUES ($1, $2, $3, $4)
                 RETURNING id, label, created_at",
                &[&Uuid::now_v7(), &team_id, &label, &token::digest(secret)],
            )
            .await?;
        Ok(TokenInfo {
            id: row.get(0),
            label: row.get(1),
            created_at: row.get(2),
        })
    }

    /// Lists a team's federation tokens (labels only).
    pub async fn list_tokens(&self, team_id: &str) -> Result<Vec<TokenInfo>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, label, created_at FROM federation_tokens WHERE team_id = $1 ORDER BY created_at",
                &[&team_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                id: r.get(0),
                label: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }
}

/// Maps a missing row to [`StoreError::NotFound`].
pub(crate) fn found<T>(v: Option<T>) -> Result<T> {
    v.ok_or(StoreError::NotFound)
}
