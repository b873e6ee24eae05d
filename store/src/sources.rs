//! Hook sources with a signature scheme and secret, checked at ingress.

use tokio_postgres::Row;
use uuid::Uuid;

use kite_wire::provider::Scheme;

use crate::keys::found;
use crate::rotation::rotate_set;
use crate::{Result, RowExt, Store, StoreError};

pub use kite_api::sources::Source;

const COLS: &str =
    "id, team_id, name, scheme, header_name, secret, previous_secret, previous_until, created_at, updated_at";

impl Store {
    fn source(&self, r: &Row) -> Result<Source> {
        let (previous, previous_until) = self.previous_secret(r, 6, 7)?;
        Ok(Source {
            id: r.get(0),
            team_id: r.get(1),
            name: r.get(2),
            scheme: r.col(3)?,
            header: r.get(4),
            secret: self.open(r.get(5))?,
            previous_secret: previous,
            previous_until,
            created_at: r.get(8),
            updated_at: r.get(9),
        })
    }

    /// Configures a source.
    pub async fn create_source(
        &self,
        team_id: &str,
        name: &str,
        scheme: Scheme,
        secret: &str,
        header: Option<&str>,
    ) -> Result<Source> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO sources (id, team_id, name, scheme, secret, header_name)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &name,
                    &scheme,
                    &self.seal(secret)?,
                    &header,
                ],
            )
            .await?;
        self.source(&row)
    }

    /// A team's sources.
    pub async fn list_sources(&self, team_id: &str) -> Result<Vec<Source>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {COLS} FROM sources WHERE team_id = $1 ORDER BY name"),
                &[&team_id],
            )
            .await?;
        rows.iter().map(|r| self.source(r)).collect()
    }

    /// Notes that hook source `name` of a team stored an unsigned event. Names not seen for
    /// 30 days are forgotten, and at most 1,000 names a team are kept.
    pub async fn note_unsigned_source(&self, team_id: &str, name: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "WITH stale AS (
                DELETE FROM unsigned_sources
                WHERE team_id = $1 AND last_seen < now() - interval '30 days')
             INSERT INTO unsigned_sources (team_id, name)
             SELECT $1, $2 WHERE (SELECT count(*) FROM unsigned_sources WHERE team_id = $1) < 1000
             ON CONFLICT (team_id, name) DO UPDATE SET last_seen = now()",
            &[&team_id, &name],
        )
        .await?;
        Ok(())
    }

    /// A team's hook sources that took unsigned posts and have no signature configured now.
    pub async fn unsigned_sources(
        &self,
        team_id: &str,
    ) -> Result<Vec<kite_api::sources::UnsignedSource>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT u.name, u.first_seen, u.last_seen FROM unsigned_sources u
                 WHERE u.team_id = $1
                   AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.team_id = u.team_id AND s.name = u.name)
                 ORDER BY u.name",
                &[&team_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(kite_api::sources::UnsignedSource {
                    name: r.col(0)?,
                    first_seen: r.col(1)?,
                    last_seen: r.col(2)?,
                })
            })
            .collect()
    }

    /// Every source (for ingress' cache).
    pub async fn all_sources(&self) -> Result<Vec<Source>> {
        let c = self.conn().await?;
        let rows = c.query(&format!("SELECT {COLS} FROM sources"), &[]).await?;
        rows.iter().map(|r| self.source(r)).collect()
    }

    /// Replaces a source's secret; the old one stays valid for `overlap`.
    pub async fn rotate_source(
        &self,
        team_id: &str,
        name: &str,
        secret: &str,
        overlap: std::time::Duration,
    ) -> Result<Source> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "UPDATE sources SET {}, updated_at = now()
                     WHERE team_id = $1 AND name = $2 RETURNING {COLS}",
                    rotate_set("secret", "previous_secret", "previous_until", "$3", "$4")
                ),
                &[&team_id, &name, &self.seal(secret)?, &overlap.as_secs_f64()],
            )
            .await?;
        found(row.as_ref().map(|r| self.source(r)).transpose()?)
    }

    /// Removes a source's configuration.
    pub async fn delete_source(&self, team_id: &str, name: &str) -> Result<()> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM sources WHERE team_id = $1 AND name = $2",
                &[&team_id, &name],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
