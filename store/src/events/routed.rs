//! The routed insert: a batch and the outbox rows routing decided on, in one statement.

use std::collections::HashMap;

use kite_wire::ids::{BatchPos, EventSeq, OutboxId, PeerId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{outcomes, EventColumns, InsertOutcome, NewEvent, NewOutbox};
use crate::types::{OutboxState, SkipReason};
use crate::{Result, RowExt, Store};

/// A pending outbox row written with its event by [`Store::insert_events_routed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedRow {
    /// The row.
    pub id: OutboxId,
    /// The peer.
    pub peer_id: PeerId,
    /// Its event's place in the batch.
    pub event: BatchPos,
    /// Written with a lease (for the local lane).
    pub leased: bool,
}

/// One statement: the events (with the per-team locks of `insert`), and the outbox rows of
/// those that were new, joined to them by identity; it commits as a whole, so there is no
/// BEGIN or COMMIT to wait for. The rows belong to events this statement made, one a peer, so
/// they need no conflict check.
const INSERT_ROUTED: &str = "WITH locks AS (
                    SELECT pg_advisory_xact_lock(hashtext('kite-stream:' || t))
                    FROM (SELECT DISTINCT t FROM UNNEST($1::text[]) AS u(t) ORDER BY t) ordered),
                 src AS (
                    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                         $6::text[], $7::text[], $8::text[], $9::int[], $10::text[],
                                         $11::text[], $12::text[], $13::text[])
                         WITH ORDINALITY AS u(t, s, i, h, ty, e, o, c, n, g, k, tp, ts, pos)),
                 ins AS (
                    INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event,
                                        fed_origin, fed_chain, fed_hops, fed_sig, fed_sigkey,
                                        trace_parent, trace_state, routed_at)
                    SELECT t, s, i, h, ty, e::json, o, ARRAY(SELECT json_array_elements_text(c::json)),
                           n, g, k, tp, ts, now()
                    FROM src WHERE (SELECT count(*) FROM locks) >= 0
                    ORDER BY pos
                    ON CONFLICT DO NOTHING
                    RETURNING seq, team_id, hook_source, ce_source, ce_id, received_at, fed_origin),
                 routed AS (
                    INSERT INTO outbox (event_seq, peer_id, team_id, state, reason, next_attempt_at,
                                        ordering_key)
                    SELECT ins.seq, r.peer, ins.team_id, r.state, r.reason,
                           now() + make_interval(secs => r.lease), r.okey
                    FROM UNNEST($14::bigint[], $15::uuid[], $16::text[], $17::text[], $18::float8[],
                                $19::text[])
                         AS r(pos, peer, state, reason, lease, okey)
                    JOIN src ON src.pos = r.pos
                    JOIN ins ON ins.team_id = src.t AND ins.hook_source = src.h
                            AND ins.ce_source = src.s AND ins.ce_id = src.i
                            AND ins.fed_origin IS NOT DISTINCT FROM src.o
                    RETURNING id, peer_id, state, event_seq, next_attempt_at > now() AS leased)
                 SELECT seq, team_id, hook_source, ce_source, ce_id, received_at,
                        NULL::bigint, NULL::uuid, NULL::text, NULL::bool, fed_origin FROM ins
                 UNION ALL
                 SELECT event_seq, NULL, NULL, NULL, NULL, NULL, id, peer_id, state, leased, NULL
                 FROM routed";

impl Store {
    /// Inserts a batch and its outbox rows in the same statement (one round trip, one
    /// commit): `rows` (routing's decisions on [`routing_events`](super::routing_events) of
    /// the batch) are written for the events that turn out new, which are marked routed. A
    /// row with a `lease` is not due before it ends (the local lane delivers it; see
    /// `kite_bus::local`). Answers each event's outcome and the pending rows made.
    pub async fn insert_events_routed(
        &self,
        batch: &[NewEvent],
        rows: &[NewOutbox<BatchPos>],
    ) -> Result<(Vec<InsertOutcome>, Vec<RoutedRow>)> {
        let c = self.conn().await?;
        let st = c.prepare_cached(INSERT_ROUTED).await?;
        let cols = EventColumns::of(batch);
        let routing = OutboxColumns::of(rows);
        let mut params = cols.params();
        params.extend(routing.params());
        let answer = c.query(&st, &params).await?;
        let (inserted, made) = split_answer(&answer)?;
        let outcomes = outcomes(batch, &inserted, 10)?;
        let pending = pending_rows(&outcomes, made);
        Ok((outcomes, pending))
    }
}

/// Routing's decisions on a batch as the column arrays the routed insert takes.
struct OutboxColumns {
    positions: Vec<i64>,
    peers: Vec<PeerId>,
    states: Vec<OutboxState>,
    reasons: Vec<Option<SkipReason>>,
    leases: Vec<f64>,
    keys: Vec<Option<String>>,
}

impl OutboxColumns {
    fn of(rows: &[NewOutbox<BatchPos>]) -> Self {
        Self {
            // Positions are 1-based in SQL (ORDINALITY).
            positions: rows.iter().map(|r| r.event.0 as i64 + 1).collect(),
            peers: rows.iter().map(|r| r.peer_id).collect(),
            states: rows.iter().map(|r| r.state).collect(),
            reasons: rows.iter().map(|r| r.reason).collect(),
            leases: rows
                .iter()
                .map(|r| r.lease.map_or(0.0, |d| d.as_secs_f64()))
                .collect(),
            keys: rows.iter().map(|r| r.ordering_key.clone()).collect(),
        }
    }

    /// The columns as the routed insert's parameters after the events' eleven.
    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.positions,
            &self.peers,
            &self.states,
            &self.reasons,
            &self.leases,
            &self.keys,
        ]
    }
}

/// An outbox row the routed insert made: its id, peer, state, event and whether it is leased.
type MadeRow = (OutboxId, PeerId, OutboxState, EventSeq, bool);

/// The routed insert's answer split into the events' rows (no outbox id) and the outbox rows
/// made.
fn split_answer(answer: &[Row]) -> Result<(Vec<&Row>, Vec<MadeRow>)> {
    let mut inserted = Vec::new();
    let mut made = Vec::new();
    for r in answer {
        match r.col::<Option<i64>>(6)? {
            None => inserted.push(r),
            Some(id) => made.push((
                OutboxId(id),
                r.col::<PeerId>(7)?,
                r.col::<OutboxState>(8)?,
                r.col::<EventSeq>(0)?,
                r.col::<bool>(9)?,
            )),
        }
    }
    Ok((inserted, made))
}

/// The pending rows among those made, each by its event's place in the batch.
fn pending_rows(outcomes: &[InsertOutcome], made: Vec<MadeRow>) -> Vec<RoutedRow> {
    let position: HashMap<EventSeq, BatchPos> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            InsertOutcome::Inserted { seq, .. } => Some((*seq, BatchPos(i))),
            InsertOutcome::Duplicate => None,
        })
        .collect();
    made.into_iter()
        .filter(|(_, _, state, _, _)| *state == OutboxState::Pending)
        .filter_map(|(id, peer_id, _, seq, leased)| {
            Some(RoutedRow {
                id,
                peer_id,
                event: *position.get(&seq)?,
                leased,
            })
        })
        .collect()
}
