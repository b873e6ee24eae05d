//! The instance's identity keys: an Ed25519 key pair made at first start, sealed at rest,
//! rotated with an overlap in which the old key is still published and accepted.

use chrono::{DateTime, Utc};
use kite_wire::identity::{new_key_id, SecretKey};
use kite_wire::peering::PublishedKey;
use tokio_postgres::Row;

use crate::{Result, RowExt, Store, StoreError};

/// The key this instance signs with now.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// Its id.
    pub key_id: String,
    /// The private key.
    pub key: SecretKey,
}

fn published(r: &Row) -> Result<PublishedKey> {
    Ok(PublishedKey {
        key_id: r.col(0)?,
        public_key: r.col(1)?,
        valid_from: r.col(2)?,
        valid_until: r.col(3)?,
    })
}

impl Store {
    /// Makes the instance's first key pair unless it has one (safe when several processes
    /// start at once: the unique index on the current key lets one win).
    pub async fn ensure_server_key(&self) -> Result<()> {
        let c = self.conn().await?;
        let has: i64 = c
            .query_one(
                "SELECT count(*) FROM server_keys WHERE valid_until IS NULL",
                &[],
            )
            .await?
            .col(0)?;
        if has > 0 {
            return Ok(());
        }
        let key = SecretKey::generate();
        c.execute(
            "INSERT INTO server_keys (key_id, secret, public_key) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[
                &new_key_id(),
                &self.seal(&key.to_base64())?,
                &key.public().to_base64(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The published keys: the current one and any still inside their overlap, newest first.
    pub async fn server_keys(&self) -> Result<Vec<PublishedKey>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT key_id, public_key, valid_from, valid_until FROM server_keys
                 WHERE valid_until IS NULL OR valid_until > now()
                 ORDER BY valid_from DESC",
                &[],
            )
            .await?;
        rows.iter().map(published).collect()
    }

    /// The current signing key.
    pub async fn signing_key(&self) -> Result<SigningKey> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT key_id, secret FROM server_keys WHERE valid_until IS NULL",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Db("the instance has no identity key".into()))?;
        let sealed: String = row.col(1)?;
        let key = SecretKey::from_base64(&self.open(&sealed)?)
            .ok_or_else(|| StoreError::Secret("the stored identity key is not a key".into()))?;
        Ok(SigningKey {
            key_id: row.col(0)?,
            key,
        })
    }

    /// Every key that ever signed here, with its private half (for tests and tools that
    /// must sign as an older key); past keys included.
    pub async fn all_signing_keys(&self) -> Result<Vec<(PublishedKey, SecretKey)>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT key_id, public_key, valid_from, valid_until, secret FROM server_keys
                 ORDER BY valid_from DESC",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let sealed: String = r.col(4)?;
                let key = SecretKey::from_base64(&self.open(&sealed)?).ok_or_else(|| {
                    StoreError::Secret("a stored identity key is not a key".into())
                })?;
                Ok((published(r)?, key))
            })
            .collect()
    }

    /// Makes a new current key; the old one stays valid (published and accepted) until
    /// `overlap` from now. Answers the published keys after it.
    pub async fn rotate_server_key(
        &self,
        overlap: std::time::Duration,
    ) -> Result<Vec<PublishedKey>> {
        self.rotate_if(None, overlap).await?;
        self.server_keys().await
    }

    /// Rotates the key (as [`Store::rotate_server_key`]) if the current one is `age` old or
    /// older; answers whether it did. Processes racing for it rotate once: the current key's
    /// row is locked while one decides.
    pub async fn rotate_server_key_if_older(
        &self,
        age: std::time::Duration,
        overlap: std::time::Duration,
    ) -> Result<bool> {
        self.rotate_if(Some(age), overlap).await
    }

    /// When the current key will be `age` old (the next scheduled rotation).
    pub async fn next_rotation(&self, age: std::time::Duration) -> Result<Option<DateTime<Utc>>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT valid_from FROM server_keys WHERE valid_until IS NULL",
                &[],
            )
            .await?;
        let from: Option<DateTime<Utc>> = row.map(|r| r.col(0)).transpose()?;
        Ok(from.and_then(|f| f.checked_add_signed(chrono::Duration::from_std(age).ok()?)))
    }

    async fn rotate_if(
        &self,
        older_than: Option<std::time::Duration>,
        overlap: std::time::Duration,
    ) -> Result<bool> {
        let key = SecretKey::generate();
        {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            // One rotation at a time, whoever asks (the schedule in any process, an admin):
            // each then sees what the one before committed.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('kite-identity-rotation'))",
                &[],
            )
            .await?;
            if let Some(age) = older_than {
                let due: bool = tx
                    .query_opt(
                        "SELECT valid_from <= now() - make_interval(secs => $1) FROM server_keys
                         WHERE valid_until IS NULL",
                        &[&age.as_secs_f64()],
                    )
                    .await?
                    .map(|r| r.col(0))
                    .transpose()?
                    .unwrap_or(false);
                if !due {
                    return Ok(false);
                }
            }
            let until: DateTime<Utc> = Utc::now()
                + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::days(30));
            tx.execute(
                "UPDATE server_keys SET valid_until = $1 WHERE valid_until IS NULL",
                &[&until],
            )
            .await?;
            // A descriptor publishes at most MAX_KEYS: the oldest still inside their overlap
            // end now when rotations come faster than overlaps end.
            tx.execute(
                "UPDATE server_keys SET valid_until = now()
                 WHERE key_id IN (SELECT key_id FROM server_keys WHERE valid_until > now()
                                  ORDER BY valid_from DESC OFFSET $1)",
                &[&(kite_wire::peering::MAX_KEYS as i64 - 1)],
            )
            .await?;
            tx.execute(
                "INSERT INTO server_keys (key_id, secret, public_key) VALUES ($1, $2, $3)",
                &[
                    &new_key_id(),
                    &self.seal(&key.to_base64())?,
                    &key.public().to_base64(),
                ],
            )
            .await?;
            tx.commit().await?;
        }
        Ok(true)
    }
}
