//! Stream cursors (acked positions of named listeners) and event retention.

use std::time::Duration;

use crate::{Result, Store};

/// Where a named listener resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Send events after this sequence number.
    From(i64),
    /// The cursor points at events retention already removed; the oldest kept is this one.
    Expired {
        /// The listener's stored cursor.
        cursor: i64,
        /// Oldest sequence number still available (0 when none is).
        oldest_available_seq: i64,
    },
}

/// How long an idle listener's cursor is kept at least.
const CURSOR_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

impl Store {
    /// The acked position of a named listener, if it has one.
    pub async fn cursor(&self, team_id: &str, client_id: &str) -> Result<Option<i64>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT acked_seq FROM stream_cursors WHERE team_id = $1 AND client_id = $2",
                &[&team_id, &client_id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Decides where a listener with `cursor` resumes, given what retention has removed.
    pub async fn resume_point(&self, team_id: &str, cursor: i64) -> Result<Resume> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT (SELECT pruned_through FROM stream_retention WHERE team_id = $1),
                        (SELECT min(seq) FROM events WHERE team_id = $1)",
                &[&team_id],
            )
            .await?;
        let pruned: Option<i64> = row.get(0);
        let oldest: Option<i64> = row.get(1);
        Ok(match pruned {
            Some(p) if cursor < p => Resume::Expired {
                cursor,
                oldest_available_seq: oldest.unwrap_or(0),
            },
            _ => Resume::From(cursor),
        })
    }

    /// Stores a listener's acked position (it only moves forward).
    pub async fn save_cursor(&self, team_id: &str, client_id: &str, acked_seq: i64) -> Result<()> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO stream_cursors (team_id, client_id, acked_seq) VALUES ($1, $2, $3)
                 ON CONFLICT (team_id, client_id) DO UPDATE
                 SET acked_seq = GREATEST(stream_cursors.acked_seq, EXCLUDED.acked_seq), updated_at = now()",
            )
            .await?;
        c.execute(&st, &[&team_id, &client_id, &acked_seq]).await?;
        Ok(())
    }

    /// Deletes events older than `retention` whose deliveries are all settled (with those
    /// deliveries and their attempts), and cursors idle for much longer; records per team
    /// how far events were pruned. Answers the count.
    pub async fn prune(&self, retention: Duration, limit: i64) -> Result<u64> {
        let c = self.conn().await?;
        let secs = retention.as_secs_f64();
        let rows = c
            .query(
                "WITH gone AS (
                    DELETE FROM events WHERE seq IN (
                        SELECT e.seq FROM events e
                        WHERE e.received_at < now() - make_interval(secs => $1) AND e.routed_at IS NOT NULL
                          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = e.seq AND o.state = 'pending')
                        ORDER BY e.seq LIMIT $2)
                    RETURNING team_id, seq),
                 -- Their deliveries and those deliveries' attempts go with them.
                 gone_rows AS (
                    DELETE FROM outbox WHERE event_seq IN (SELECT seq FROM gone) RETURNING id),
                 gone_attempts AS (
                    DELETE FROM attempts WHERE outbox_id IN (SELECT id FROM gone_rows)),
                 gone_actions AS (
                    DELETE FROM outbox_actions WHERE outbox_id IN (SELECT id FROM gone_rows)),
                 per_team AS (SELECT team_id, max(seq) AS through, count(*) AS n FROM gone GROUP BY team_id),
                 noted AS (
                    INSERT INTO stream_retention (team_id, pruned_through) SELECT team_id, through FROM per_team
                    ON CONFLICT (team_id) DO UPDATE
                    SET pruned_through = GREATEST(stream_retention.pruned_through, EXCLUDED.pruned_through))
                 SELECT COALESCE(sum(n), 0)::bigint FROM per_team",
                &[&secs, &limit],
            )
            .await?;
        // Cursors outlive the events they point at by far, so a returning listener learns
        // that it missed events (cursor_expired) instead of silently starting afresh.
        let cursor_secs = (secs * 4.0).max(CURSOR_KEEP.as_secs_f64());
        c.execute(
            "DELETE FROM stream_cursors WHERE updated_at < now() - make_interval(secs => $1)",
            &[&cursor_secs],
        )
        .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64).unwrap_or(0))
    }
}
