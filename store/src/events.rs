//! Events: every accepted webhook, stored whole as a structured CloudEvent.

use chrono::{DateTime, Utc};
use kite_protocol::fed::{EXT_CHAIN, EXT_HOPS, EXT_ORIGIN};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

use crate::{Result, Store};

/// An event to insert.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Owning team.
    pub team_id: String,
    /// CloudEvent `source`.
    pub ce_source: String,
    /// CloudEvent `id`.
    pub ce_id: String,
    /// The hook source it came in through (`stripe`, `kite`, ...).
    pub hook_source: String,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// The structured CloudEvent.
    pub event: Value,
}

/// What happened to one event of an insert batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored with this sequence number.
    Inserted {
        /// Sequence number (the stream cursor).
        seq: i64,
        /// When it was stored.
        received_at: DateTime<Utc>,
    },
    /// Its identity was already stored.
    Duplicate,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Sequence number.
    pub seq: i64,
    /// Owning team.
    pub team_id: String,
    /// Hook source it came in through.
    pub hook_source: String,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// The structured CloudEvent.
    pub event: Value,
    /// When it was stored.
    pub received_at: DateTime<Utc>,
}

/// What the router needs of an event.
#[derive(Debug, Clone)]
pub struct RoutingEvent {
    /// Sequence number.
    pub seq: i64,
    /// Owning team.
    pub team_id: String,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// The federation extensions present on it.
    pub fed: serde_json::Map<String, Value>,
}

/// An outbox row the router decided on.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    /// The event.
    pub event_seq: i64,
    /// The peer.
    pub peer_id: Uuid,
    /// The team.
    pub team_id: String,
    /// `pending` or `skipped`.
    pub state: &'static str,
    /// Why it was skipped.
    pub reason: Option<&'static str>,
}

impl Store {
    /// Inserts a batch in one statement; identities already stored come back as duplicates.
    pub async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                // The per-team advisory locks (taken in a fixed order, held to commit) make
                // each team's sequence numbers commit in order, so a stream reader that has
                // seen seq N never sees a smaller one appear later.
                "WITH locks AS (
                    SELECT pg_advisory_xact_lock(hashtext('kite-stream:' || t))
                    FROM (SELECT DISTINCT t FROM UNNEST($1::text[]) AS u(t) ORDER BY t) ordered)
                 INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
                 WHERE (SELECT count(*) FROM locks) >= 0
                 ON CONFLICT DO NOTHING
                 RETURNING seq, team_id, ce_source, ce_id, received_at",
            )
            .await?;
        let col = |f: fn(&NewEvent) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
        let teams = col(|e| &e.team_id);
        let sources = col(|e| &e.ce_source);
        let ids = col(|e| &e.ce_id);
        let hooks = col(|e| &e.hook_source);
        let types = col(|e| &e.ce_type);
        let bodies: Vec<&Value> = batch.iter().map(|e| &e.event).collect();
        let rows = c
            .query(&st, &[&teams, &sources, &ids, &hooks, &types, &bodies])
            .await?;
        let mut inserted: HashMap<(String, String, String), (i64, DateTime<Utc>)> = rows
            .iter()
            .map(|r| ((r.get(1), r.get(2), r.get(3)), (r.get(0), r.get(4))))
            .collect();
        Ok(batch
            .iter()
            .map(|e| {
                // The first of several equal identities in a batch takes the row.
                match inserted.remove(&(e.team_id.clone(), e.ce_source.clone(), e.ce_id.clone())) {
                    Some((seq, received_at)) => InsertOutcome::Inserted { seq, received_at },
                    None => InsertOutcome::Duplicate,
                }
            })
            .collect())
    }

    /// The events of `seqs` that are not routed yet, with only what routing reads: the type
    /// and the federation extensions (not the whole event).
    pub async fn unrouted_events(&self, seqs: &[i64]) -> Result<Vec<RoutingEvent>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, team_id, ce_type, event->'kitefedorigin', event->'kitefedchain', event->'kitefedhops'
                 FROM events WHERE seq = ANY($1) AND routed_at IS NULL ORDER BY seq",
            )
            .await?;
        let rows = c.query(&st, &[&seqs]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut fed = serde_json::Map::new();
                for (i, key) in [(3, EXT_ORIGIN), (4, EXT_CHAIN), (5, EXT_HOPS)] {
                    if let Some(v) = r.get::<_, Option<Value>>(i) {
                        fed.insert(key.to_string(), v);
                    }
                }
                RoutingEvent {
                    seq: r.get(0),
                    team_id: r.get(1),
                    ce_type: r.get(2),
                    fed,
                }
            })
            .collect())
    }

    /// Writes the router's decisions and marks the events routed, in one transaction.
    /// Answers the pending rows actually created, as (outbox id, peer id).
    pub async fn commit_routing(
        &self,
        seqs: &[i64],
        rows: &[NewOutbox],
    ) -> Result<Vec<(i64, Uuid)>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO outbox (event_seq, peer_id, team_id, state, reason)
                 SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[])
                 ON CONFLICT (event_seq, peer_id) DO NOTHING
                 RETURNING id, peer_id, state",
            )
            .await?;
        let event_seqs: Vec<i64> = rows.iter().map(|r| r.event_seq).collect();
        let peers: Vec<Uuid> = rows.iter().map(|r| r.peer_id).collect();
        let teams: Vec<&str> = rows.iter().map(|r| r.team_id.as_str()).collect();
        let states: Vec<&str> = rows.iter().map(|r| r.state).collect();
        let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.reason).collect();
        let created = tx
            .query(&ins, &[&event_seqs, &peers, &teams, &states, &reasons])
            .await?;
        let mark = tx
            .prepare_cached(
                "UPDATE events SET routed_at = now() WHERE seq = ANY($1) AND routed_at IS NULL",
            )
            .await?;
        tx.execute(&mark, &[&seqs]).await?;
        tx.commit().await?;
        Ok(created
            .iter()
            .filter(|r| r.get::<_, &str>(2) == "pending")
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// A team's events after `after_seq`, oldest first.
    pub async fn events_after(
        &self,
        team_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, team_id, hook_source, ce_type, event, received_at FROM events
                 WHERE team_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await?;
        let rows = c.query(&st, &[&team_id, &after_seq, &limit]).await?;
        Ok(rows.iter().map(stored).collect())
    }

    /// The team's highest sequence number (0 when it has none).
    pub async fn last_seq(&self, team_id: &str) -> Result<i64> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE team_id = $1",
                &[&team_id],
            )
            .await?;
        Ok(row.get(0))
    }
}

fn stored(r: &tokio_postgres::Row) -> StoredEvent {
    StoredEvent {
        seq: r.get(0),
        team_id: r.get(1),
        hook_source: r.get(2),
        ce_type: r.get(3),
        event: r.get(4),
        received_at: r.get(5),
    }
}
