//! Every event's story: its delivery attempts as rows, and what happened to it for each peer.

use chrono::{DateTime, Utc};

use crate::events::StoredEvent;
use crate::types::{AttemptOutcome, OutboxState, PeerAnswer, SkipReason};
use crate::{Result, RowExt, Store};
use kite_wire::ids::{OutboxId, PeerId};

pub use kite_api::events::{ActionEntry, AttemptEntry};

/// One delivery attempt to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// Its outbox row.
    pub outbox_id: OutboxId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The peer's HTTP status, when it answered.
    pub status_code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i32,
    /// What the peer did with the event, when it took it.
    pub peer_answer: Option<PeerAnswer>,
}

/// An event's outbox row for one peer, with its attempts.
#[derive(Debug, Clone)]
pub struct StoryRow {
    /// Outbox id.
    pub id: i64,
    /// The peer.
    pub peer_id: PeerId,
    /// Where it stands.
    pub state: OutboxState,
    /// Why it was skipped.
    pub reason: Option<SkipReason>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// What the peer did with the event once it took it.
    pub peer_answer: Option<PeerAnswer>,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptEntry>,
    /// What operators did to it, oldest first.
    pub actions: Vec<ActionEntry>,
}

impl Store {
    /// The sequence number of a team's event named by `id`: a sequence number, or a
    /// CloudEvent id (the newest such event, or the one from `source`).
    pub async fn find_event(
        &self,
        team_id: &str,
        id: &str,
        source: Option<&str>,
    ) -> Result<Option<i64>> {
        let c = self.conn().await?;
        if let Ok(seq) = id.parse::<i64>() {
            let row = c
                .query_opt(
                    "SELECT seq FROM events WHERE team_id = $1 AND seq = $2",
                    &[&team_id, &seq],
                )
                .await?;
            if row.is_some() {
                return Ok(Some(seq));
            }
        }
        let row = c
            .query_opt(
                "SELECT seq FROM events WHERE team_id = $1 AND ce_id = $2
                   AND ($3::text IS NULL OR hook_source = $3 OR ce_source = $3)
                 ORDER BY seq DESC LIMIT 1",
                &[&team_id, &id, &source],
            )
            .await?;
        row.map(|r| r.col(0)).transpose()
    }

    /// A team's event and its outbox rows with their attempts.
    pub async fn event_story(
        &self,
        team_id: &str,
        seq: i64,
    ) -> Result<Option<(StoredEvent, Vec<StoryRow>)>> {
        let Some(event) = self
            .events_after(team_id, seq - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq)
        else {
            return Ok(None);
        };
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, peer_id, state, reason, delivered_at, peer_answer FROM outbox
                 WHERE event_seq = $1 AND team_id = $2 ORDER BY id",
                &[&seq, &team_id],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(StoryRow {
                id: r.col(0)?,
                peer_id: r.col(1)?,
                state: r.col(2)?,
                reason: r.col(3)?,
                delivered_at: r.col(4)?,
                peer_answer: r.col(5)?,
                attempts: Vec::new(),
                actions: Vec::new(),
            });
        }
        let ids: Vec<i64> = out.iter().map(|r| r.id).collect();
        let attempts = c
            .query(
                "SELECT outbox_id, attempted_at, outcome, status_code, error, duration_ms, peer_answer
                 FROM attempts WHERE outbox_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await?;
        for a in &attempts {
            let id: i64 = a.col(0)?;
            if let Some(row) = out.iter_mut().find(|r| r.id == id) {
                row.attempts.push(AttemptEntry {
                    at: a.col(1)?,
                    outcome: a.col(2)?,
                    status_code: a.col(3)?,
                    error: a.col(4)?,
                    duration_ms: a.col(5)?,
                    peer_answer: a.col(6)?,
                });
            }
        }
        let actions = c
            .query(
                "SELECT outbox_id, at, action, by_key FROM outbox_actions
                 WHERE outbox_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await?;
        for a in &actions {
            let id: i64 = a.col(0)?;
            if let Some(row) = out.iter_mut().find(|r| r.id == id) {
                row.actions.push(ActionEntry {
                    at: a.col(1)?,
                    action: a.col(2)?,
                    by: a.col(3)?,
                });
            }
        }
        Ok(Some((event, out)))
    }
}

impl Store {
    /// A peer's attempts over the last `window` seconds in buckets of `bucket` seconds,
    /// oldest first, every bucket present: delivered, failed, and the median and 95th
    /// percentile duration of those that delivered.
    pub async fn peer_stats(
        &self,
        team_id: &str,
        peer_id: PeerId,
        window: i64,
        bucket: i64,
    ) -> Result<Vec<kite_api::peers::StatsBucket>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "WITH span AS (
                    SELECT to_timestamp((floor(extract(epoch FROM now()) / $4::bigint) * $4::bigint - $3::bigint + $4::bigint)::float8) AS start),
                 buckets AS (
                    SELECT generate_series(0, $3::bigint / $4::bigint - 1) AS n),
                 tried AS (
                    SELECT floor(extract(epoch FROM a.attempted_at - (SELECT start FROM span)) / $4::bigint)::bigint AS n,
                           a.outcome, a.duration_ms
                    FROM attempts a JOIN outbox o ON o.id = a.outbox_id
                    WHERE a.attempted_at >= (SELECT start FROM span)
                      AND o.team_id = $1 AND o.peer_id = $2)
                 SELECT (SELECT start FROM span) + make_interval(secs => (b.n * $4::bigint)::float8),
                        count(t.outcome) FILTER (WHERE t.outcome = 'delivered'),
                        count(t.outcome) FILTER (WHERE t.outcome <> 'delivered'),
                        (percentile_cont(0.5) WITHIN GROUP (ORDER BY t.duration_ms)
                            FILTER (WHERE t.outcome = 'delivered'))::bigint,
                        (percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms)
                            FILTER (WHERE t.outcome = 'delivered'))::bigint
                 FROM buckets b LEFT JOIN tried t ON t.n = b.n
                 GROUP BY b.n ORDER BY b.n",
                &[&team_id, &peer_id, &window, &bucket],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(kite_api::peers::StatsBucket {
                    start: r.col(0)?,
                    delivered: r.col(1)?,
                    failed: r.col(2)?,
                    p50_ms: r.col(3)?,
                    p95_ms: r.col(4)?,
                })
            })
            .collect()
    }
}
