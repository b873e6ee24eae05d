//! Peers: instances this one forwards to.

use kite_wire::ids::PeerId;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::keys::found;
use crate::rotation::rotate_set;
use crate::types::PeerHealth;
use crate::{Result, RowExt, Store};

pub use kite_api::filters::Filter;
pub use kite_api::peers::{Conduct, NewPeer, Peer, PeerPatch};

pub(crate) const COLS: &str =
    "id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status, \
    peer_instance_id, last_error, last_status_code, last_error_at, last_success_at, \
    consecutive_failures, created_at, updated_at, health, key_id, previous_outbound_token, \
    previous_until, server_name, peer_base_url, peer_team, last_heartbeat_at, \
    last_heartbeat_ok_at, heartbeat_failures, inbound_token, protocol_version, filters::text, \
    conduct::text";

/// How deliveries to a peer go, as the `conduct` column keeps it (one JSON object, so a
/// patch merges the members it gives).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredConduct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ordering_key: Option<String>,
    #[serde(default)]
    pub(crate) on_dead: kite_api::types::OnDead,
    #[serde(default)]
    pub(crate) delivery: kite_api::peers::DeliveryPolicy,
    #[serde(default)]
    pub(crate) content_mode: kite_api::types::ContentMode,
}

pub(crate) fn conduct_of(r: &Row, i: usize) -> Result<StoredConduct> {
    let text: String = r.col(i)?;
    serde_json::from_str(&text).map_err(|e| crate::StoreError::Decode {
        column: i,
        reason: format!("conduct: {e}"),
    })
}

fn conduct_text(c: &StoredConduct) -> Result<String> {
    serde_json::to_string(c).map_err(|e| crate::StoreError::Invalid(e.to_string()))
}

/// A handshake peer's conduct (an invitation's or an acceptance's) as stored.
pub(crate) fn handshake_conduct_text(c: &kite_api::peers::Conduct) -> Result<String> {
    conduct_text(&StoredConduct {
        ordering_key: c.ordering_key.clone(),
        on_dead: c.on_dead,
        delivery: c.delivery.clone(),
        content_mode: kite_api::types::ContentMode::Structured,
    })
}

/// A handshake peer's conduct read back.
pub(crate) fn handshake_conduct_of(r: &Row, i: usize) -> Result<kite_api::peers::Conduct> {
    let c = conduct_of(r, i)?;
    Ok(kite_api::peers::Conduct {
        ordering_key: c.ordering_key,
        on_dead: c.on_dead,
        delivery: c.delivery,
    })
}

/// The members of the conduct a patch changes (None: none).
fn conduct_patch(p: &PeerPatch) -> Result<Option<String>> {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: std::result::Result<serde_json::Value, serde_json::Error>| {
        v.map(|v| {
            m.insert(k.to_owned(), v);
        })
    };
    let err = |e: serde_json::Error| crate::StoreError::Invalid(e.to_string());
    if let Some(k) = &p.ordering_key {
        put("ordering_key", serde_json::to_value(k)).map_err(err)?;
    }
    if let Some(v) = &p.on_dead {
        put("on_dead", serde_json::to_value(v)).map_err(err)?;
    }
    if let Some(v) = &p.delivery {
        put("delivery", serde_json::to_value(v)).map_err(err)?;
    }
    if let Some(v) = &p.content_mode {
        put("content_mode", serde_json::to_value(v)).map_err(err)?;
    }
    Ok((!m.is_empty()).then(|| serde_json::Value::Object(m).to_string()))
}

/// A peer's filters as stored (the JSON text the API wrote); text that no longer reads as
/// filters is an error of that row, never a panic.
pub(crate) fn filters_of(r: &Row, i: usize) -> Result<Vec<kite_api::filters::Filter>> {
    let text: String = r.col(i)?;
    serde_json::from_str(&text).map_err(|e| crate::StoreError::Decode {
        column: i,
        reason: format!("filters: {e}"),
    })
}

/// Filters as the JSON text stored.
pub(crate) fn filters_text(f: &[kite_api::filters::Filter]) -> Result<String> {
    serde_json::to_string(f).map_err(|e| crate::StoreError::Invalid(e.to_string()))
}

impl Store {
    pub(crate) fn peer_row(&self, r: &Row) -> Result<Peer> {
        let (previous, previous_until) = self.previous_secret(r, 18, 19)?;
        let conduct = conduct_of(r, 29)?;
        Ok(Peer {
            id: r.col(0)?,
            team_id: r.col(1)?,
            name: r.col(2)?,
            peer_hook_url: r.col(3)?,
            outbound_token: self.open(r.col(4)?)?,
            scopes: r.col(5)?,
            max_hops: r.col(6)?,
            status: r.col(7)?,
            peer_instance_id: r.col(8)?,
            last_error: r.col(9)?,
            last_status_code: r.col(10)?,
            last_error_at: r.col(11)?,
            last_success_at: r.col(12)?,
            consecutive_failures: r.col(13)?,
            created_at: r.col(14)?,
            updated_at: r.col(15)?,
            health: r.col(16)?,
            key_id: r.col(17)?,
            previous_outbound_token: previous,
            previous_until,
            server_name: r.col(20)?,
            peer_base_url: r.col(21)?,
            peer_team: r.col(22)?,
            last_heartbeat_at: r.col(23)?,
            last_heartbeat_ok_at: r.col(24)?,
            heartbeat_failures: r.col(25)?,
            inbound_token: self.open_opt(r.col(26)?)?,
            protocol_version: r.col(27)?,
            filters: filters_of(r, 28)?,
            ordering_key: conduct.ordering_key,
            on_dead: conduct.on_dead,
            delivery: conduct.delivery,
            content_mode: conduct.content_mode,
        })
    }

    fn peers(&self, rows: &[Row]) -> Result<Vec<Peer>> {
        rows.iter().map(|r| self.peer_row(r)).collect()
    }
}

/// What one delivery batch learned about a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerOutcome {
    /// Some delivery succeeded.
    pub success: bool,
    /// Failed attempts in this batch, after the last success in it.
    pub failures: i32,
    /// The last error seen.
    pub last_error: Option<String>,
    /// The last status code seen.
    pub last_status_code: Option<i32>,
    /// Instance id the peer answered with.
    pub instance_id: Option<String>,
}

impl Store {
    /// Creates a peer.
    pub async fn create_peer(&self, team_id: &str, p: &NewPeer) -> Result<Peer> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status, key_id, inbound_token, filters, conduct)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12::text::jsonb) RETURNING {COLS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &p.name,
                    &p.peer_hook_url,
                    &self.seal(&p.outbound_token)?,
                    &p.scopes,
                    &p.max_hops,
                    &p.status,
                    &p.key_id,
                    &p.inbound_token.as_deref().map(|t| self.seal(t)).transpose()?,
                    &filters_text(&p.filters)?,
                    &conduct_text(&StoredConduct {
                        ordering_key: p.ordering_key.clone(),
                        on_dead: p.on_dead,
                        delivery: p.delivery.clone(),
                        content_mode: p.content_mode,
                    })?,
                ],
            )
            .await?;
        self.peer_row(&row)
    }

    /// A team's peers.
    pub async fn list_peers(&self, team_id: &str) -> Result<Vec<Peer>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {COLS} FROM peers WHERE team_id = $1 ORDER BY created_at"),
                &[&team_id],
            )
            .await?;
        self.peers(&rows)
    }

    /// Every peer of every team (for the router's and delivery's caches).
    pub async fn all_peers(&self) -> Result<Vec<Peer>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {COLS} FROM peers ORDER BY created_at, id"),
                &[],
            )
            .await?;
        self.peers(&rows)
    }

    /// One peer of a team.
    pub async fn get_peer(&self, team_id: &str, id: PeerId) -> Result<Peer> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLS} FROM peers WHERE team_id = $1 AND id = $2"),
                &[&team_id, &id],
            )
            .await?;
        found(row.as_ref().map(|r| self.peer_row(r)).transpose()?)
    }

    /// Applies a partial update. A new outbound token keeps the old one signing alongside
    /// it for `overlap` (secret rotation).
    pub async fn update_peer(
        &self,
        team_id: &str,
        id: PeerId,
        p: &PeerPatch,
        overlap: std::time::Duration,
    ) -> Result<Peer> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "UPDATE peers SET
                        name = COALESCE($3, name),
                        peer_hook_url = COALESCE($4, peer_hook_url),
                        {},
                        scopes = COALESCE($6, scopes),
                        max_hops = COALESCE($7, max_hops),
                        status = COALESCE($8, status),
                        key_id = COALESCE($9, key_id),
                        inbound_token = COALESCE($11, inbound_token),
                        filters = COALESCE($12::text::jsonb, filters),
                        conduct = conduct || COALESCE($13::text::jsonb, '{{}}'),
                        updated_at = now()
                     WHERE team_id = $1 AND id = $2 RETURNING {COLS}",
                    rotate_set(
                        "outbound_token",
                        "previous_outbound_token",
                        "previous_until",
                        "$5",
                        "$10"
                    )
                ),
                &[
                    &team_id,
                    &id,
                    &p.name,
                    &p.peer_hook_url,
                    &p.outbound_token
                        .as_deref()
                        .map(|t| self.seal(t))
                        .transpose()?,
                    &p.scopes,
                    &p.max_hops,
                    &p.status,
                    &p.key_id,
                    &overlap.as_secs_f64(),
                    &p.inbound_token
                        .as_deref()
                        .map(|t| self.seal(t))
                        .transpose()?,
                    &p.filters.as_deref().map(filters_text).transpose()?,
                    &conduct_patch(p)?,
                ],
            )
            .await?;
        found(row.as_ref().map(|r| self.peer_row(r)).transpose()?)
    }

    /// Deletes a peer and cancels its pending deliveries; answers how many were cancelled.
    pub async fn delete_peer(&self, team_id: &str, id: PeerId) -> Result<u64> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let gone = tx
            .execute(
                "DELETE FROM peers WHERE team_id = $1 AND id = $2",
                &[&team_id, &id],
            )
            .await?;
        if gone == 0 {
            return Err(crate::StoreError::NotFound);
        }
        let cancelled = tx
            .execute(
                "UPDATE outbox SET state = 'cancelled', updated_at = now()
                 WHERE peer_id = $1 AND state = 'pending'",
                &[&id],
            )
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Records what a delivery batch learned about a peer's health; a peer whose failures in
    /// a row reach `threshold` becomes `unreachable`, unless it took a delivery in the last
    /// 1.5 s (a delivery process writes a plain success at most once a second, so another
    /// process' failures alone would otherwise park a peer that is taking events: one
    /// failing event of an ordered key, say). Answers the new health (None: the peer is
    /// gone).
    pub async fn record_peer_outcome(
        &self,
        id: PeerId,
        o: &PeerOutcome,
        threshold: i32,
    ) -> Result<Option<PeerHealth>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "UPDATE peers SET
                    peer_instance_id = COALESCE($2, peer_instance_id),
                    last_success_at = CASE WHEN $3 THEN now() ELSE last_success_at END,
                    consecutive_failures = CASE WHEN $3 THEN $4 ELSE consecutive_failures + $4 END,
                    last_error = COALESCE($5, last_error),
                    last_status_code = COALESCE($6, last_status_code),
                    last_error_at = CASE WHEN $5::text IS NULL THEN last_error_at ELSE now() END,
                    health = CASE
                        WHEN (CASE WHEN $3 THEN $4 ELSE consecutive_failures + $4 END) >= $7
                             AND ($3 OR last_success_at IS NULL
                                  OR last_success_at < now() - interval '1500 milliseconds')
                        THEN 'unreachable'
                        WHEN (CASE WHEN $3 THEN $4 ELSE consecutive_failures + $4 END) > 0 THEN 'degraded'
                        ELSE 'active' END
                 WHERE id = $1 RETURNING health",
            )
            .await?;
        let row = c
            .query_opt(
                &st,
                &[
                    &id,
                    &o.instance_id,
                    &o.success,
                    &o.failures,
                    &o.last_error,
                    &o.last_status_code,
                    &threshold,
                ],
            )
            .await?;
        row.map(|r| r.col(0)).transpose()
    }

    /// Every peer's waiting deliveries: (team, peer name, pending, parked), where parked
    /// rows are the pending ones of an unreachable peer (for the metrics).
    pub async fn waiting_deliveries(&self) -> Result<Vec<(String, String, i64, i64)>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT p.team_id, p.name, count(o.id),
                        CASE WHEN p.health = 'unreachable' THEN count(o.id) ELSE 0 END
                 FROM peers p LEFT JOIN outbox o ON o.peer_id = p.id AND o.state = 'pending'
                 GROUP BY p.id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?)))
            .collect()
    }

    /// Pending and dead row counts of a team's peers, by peer id.
    pub async fn peer_backlogs(
        &self,
        team_id: &str,
    ) -> Result<std::collections::HashMap<PeerId, (i64, i64)>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT peer_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead')
                 FROM outbox WHERE team_id = $1 AND state IN ('pending', 'dead') GROUP BY peer_id",
                &[&team_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect())
    }

    /// The oldest pending row of a peer after outbox id `after` (what a probe delivers).
    pub async fn oldest_pending_after(&self, peer_id: PeerId, after: i64) -> Result<Option<i64>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT id FROM outbox WHERE peer_id = $1 AND state = 'pending' AND id > $2
                 ORDER BY id LIMIT 1",
                &[&peer_id, &after],
            )
            .await?;
        row.map(|r| r.col(0)).transpose()
    }

    /// Pauses a peer that answered 410 Gone, saying so in `last_error`.
    pub async fn pause_gone_peer(&self, id: PeerId, error: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE peers SET status = 'paused', last_error = $2, last_error_at = now(),
                    last_status_code = 410, updated_at = now()
             WHERE id = $1 AND status IN ('accepted', 'active', 'degraded')",
            &[&id, &error],
        )
        .await?;
        Ok(())
    }

    /// Marks a peer reachable again after a successful probe (or when nothing is parked).
    pub async fn mark_peer_reachable(&self, id: PeerId) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE peers SET health = 'active', consecutive_failures = 0, last_success_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }
}
