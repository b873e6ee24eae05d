//! Events: every accepted webhook, stored whole as a structured CloudEvent.

mod routed;

use chrono::{DateTime, Utc};
use kite_wire::fed::{self, FedInfo};
use kite_wire::ids::{BatchPos, Delivery, EventSeq, PeerId, TeamId};
use kite_wire::provenance::SigText;
use kite_wire::trace::TraceContext;
use serde::Serialize;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::types::{OutboxState, SkipReason};
use crate::{Result, RowExt, Store};

pub use routed::RoutedRow;

/// An event to insert.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Owning team.
    pub team_id: TeamId,
    /// CloudEvent `source`.
    pub ce_source: String,
    /// CloudEvent `id`.
    pub ce_id: String,
    /// The hook source it came in through (`stripe`, `kite`, ...).
    pub hook_source: String,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// The structured CloudEvent as JSON text, without its federation extensions.
    pub event: String,
    /// Its federation extensions.
    pub fed: FedInfo,
    /// Its origin signature, when it came with one.
    pub origin_sig: Option<SigText>,
    /// The trace context of the span that took it in (see `kite_wire::trace`).
    pub trace: Option<TraceContext>,
}

/// What happened to one event of an insert batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored with this sequence number.
    Inserted {
        /// Sequence number (the stream cursor).
        seq: EventSeq,
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
    pub team_id: TeamId,
    /// Hook source it came in through.
    pub hook_source: String,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// CloudEvent `source` (`/hooks/{team}/{source}` where the event entered federation).
    pub ce_source: String,
    /// The stored CloudEvent text without its federation extensions, or why the row could
    /// not be read (readers log it and move past it); see [`StoredEvent::text`].
    pub rest: std::result::Result<String, String>,
    /// Its federation extensions.
    pub fed: FedInfo,
    /// When it was stored.
    pub received_at: DateTime<Utc>,
    /// Its origin signature (read only where a caller needs it: [`Store::history`]).
    pub origin_sig: Option<SigText>,
    /// Its trace context (see `kite_wire::trace`).
    pub trace: Option<TraceContext>,
}

/// Filters of an event listing.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events after this sequence number.
    pub after: i64,
    /// Page size.
    pub limit: i64,
    /// Only types matching this glob.
    pub event_type: Option<String>,
    /// Only this hook source.
    pub source: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
}

/// A team's counts, for a dashboard.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct TeamStats {
    /// Events stored since midnight UTC.
    pub events_today: i64,
    /// Signed provider sources.
    pub sources: i64,
    /// API keys not revoked.
    pub active_keys: i64,
}

/// What routing needs of an event, at `at`: its place in a batch before it is stored
/// ([`BatchPos`]), or its sequence number once it is ([`EventSeq`]).
#[derive(Debug, Clone)]
pub struct RoutingEvent<K> {
    /// Where the event is.
    pub at: K,
    /// Owning team.
    pub team_id: TeamId,
    /// CloudEvent `type`.
    pub ce_type: String,
    /// Its federation extensions.
    pub fed: FedInfo,
    /// The stored CloudEvent's JSON text, when a peer of the team filters on its attributes
    /// (read only then: most events are routed on their type alone).
    pub text: Option<String>,
}

/// An outbox row routing decided on, for the event at `event` (see [`RoutingEvent`]).
#[derive(Debug, Clone)]
pub struct NewOutbox<K> {
    /// The event.
    pub event: K,
    /// The peer.
    pub peer_id: PeerId,
    /// The team.
    pub team_id: TeamId,
    /// `Pending` or `Skipped`.
    pub state: OutboxState,
    /// Why it was skipped.
    pub reason: Option<SkipReason>,
    /// For an ordered peer, the event's key (the value of the peer's ordering attribute,
    /// empty when the event has none).
    pub ordering_key: Option<String>,
    /// Not due before this long has passed: the local lane delivers it meanwhile (only
    /// rows written with their event, [`Store::insert_events_routed`]).
    pub lease: Option<std::time::Duration>,
}

/// The events of a batch as routing sees them before they are stored: by their place in
/// the batch, the first of equal identities only (the others are duplicates of it); with
/// their text for the teams `needs_text` names (a peer of theirs filters on attributes).
pub fn routing_events(
    batch: &[NewEvent],
    needs_text: impl Fn(&str) -> bool,
) -> Vec<RoutingEvent<BatchPos>> {
    let mut first: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    batch
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            let key = (
                e.team_id.as_str(),
                e.hook_source.as_str(),
                e.ce_source.as_str(),
                e.ce_id.as_str(),
            );
            *first.entry(key).or_insert(*i) == *i
        })
        .map(|(i, e)| RoutingEvent {
            at: BatchPos(i),
            team_id: e.team_id.clone(),
            ce_type: e.ce_type.clone(),
            fed: e.fed.clone(),
            text: needs_text(&e.team_id).then(|| e.event.clone()),
        })
        .collect()
}

impl Store {
    /// Inserts a batch in one statement; identities already stored come back as duplicates.
    /// The events are left for the router (see [`Store::insert_events_routed`]).
    pub async fn insert_events(&self, batch: &[NewEvent]) -> Result<Vec<InsertOutcome>> {
        let c = self.conn().await?;
        insert(&c, batch).await
    }

    /// The events of `seqs` that are not routed yet, with only what routing reads: the type
    /// and the federation extensions, and, for the teams of `text_for` (a peer of theirs
    /// filters on attributes), the event's top-level members without its data, or with it
    /// for the teams of `data_for` (a peer's filter is an expression, which may read it).
    pub async fn unrouted_events(
        &self,
        seqs: &[EventSeq],
        text_for: &[TeamId],
        data_for: &[TeamId],
    ) -> Result<Vec<RoutingEvent<EventSeq>>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, team_id, ce_type, fed_origin, fed_chain, fed_hops,
                        CASE WHEN team_id = ANY($3) THEN event::text
                             WHEN team_id = ANY($2)
                             THEN (event::jsonb - 'data' - 'data_base64')::text END
                 FROM events WHERE seq = ANY($1) AND routed_at IS NULL ORDER BY seq",
            )
            .await?;
        let rows = c.query(&st, &[&seqs, &text_for, &data_for]).await?;
        rows.iter()
            .map(|r| {
                Ok(RoutingEvent {
                    at: r.col(0)?,
                    team_id: r.col(1)?,
                    ce_type: r.col(2)?,
                    fed: fed_columns(r, 3)?,
                    text: r.col(6)?,
                })
            })
            .collect()
    }

    /// Writes the router's decisions and marks the events routed, in one transaction.
    /// Answers the pending rows actually created.
    pub async fn commit_routing(
        &self,
        seqs: &[EventSeq],
        rows: &[NewOutbox<EventSeq>],
    ) -> Result<Vec<Delivery>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let pending = write_routing(&tx, seqs, rows).await?;
        tx.commit().await?;
        Ok(pending)
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
            .prepare_cached(&format!(
                "SELECT {STORED_COLS} FROM events
                 WHERE team_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ))
            .await?;
        let rows = c.query(&st, &[&team_id, &after_seq, &limit]).await?;
        Ok(rows.iter().filter_map(stored).collect())
    }

    /// A team's events after `after_seq` received at or after `since`, oldest first (what a
    /// peer's backfill reads): at most `limit`, and only those that start within `max_bytes`
    /// of event text (so at least one), so a page of history never loads more than about
    /// one page, however many rows a policy allows. Answers the rows and whether the byte
    /// bound cut them short.
    pub async fn history(
        &self,
        team_id: &str,
        after_seq: i64,
        since: Option<DateTime<Utc>>,
        limit: i64,
        max_bytes: i64,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {STORED_COLS}, upto >= $5 FROM (
                       SELECT *, sum(octet_length(event::text)) OVER (ORDER BY seq) AS upto,
                              octet_length(event::text) AS size
                       FROM events
                       WHERE team_id = $1 AND seq > $2
                         AND ($3::timestamptz IS NULL OR received_at >= $3)
                         -- kite's own operational events never go to a peer
                         AND hook_source <> '_kite'
                       ORDER BY seq LIMIT $4) page
                     WHERE upto - size < $5 ORDER BY seq"
                ),
                &[&team_id, &after_seq, &since, &limit, &max_bytes],
            )
            .await?;
        let cut = rows
            .last()
            .is_some_and(|r| r.try_get::<_, bool>(14).unwrap_or(false));
        Ok((rows.iter().filter_map(stored).collect(), cut))
    }

    /// A team's events after `q.after` matching the filters, oldest first.
    pub async fn list_events(&self, team_id: &str, q: &EventQuery) -> Result<Vec<StoredEvent>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {STORED_COLS} FROM events
                 WHERE team_id = $1 AND seq > $2
                   AND ($4::text IS NULL OR ce_type LIKE $4)
                   AND ($5::text IS NULL OR hook_source = $5)
                   AND ($6::timestamptz IS NULL OR received_at >= $6)
                   AND ($7::timestamptz IS NULL OR received_at < $7)
                   AND ((hook_source = '_kite') = $8)
                 ORDER BY seq LIMIT $3"
                ),
                &[
                    &team_id,
                    &q.after,
                    &q.limit,
                    &q.event_type.as_deref().map(crate::glob_to_like),
                    &q.source,
                    &q.since,
                    &q.until,
                    // kite's own operational events, and only those, when the type asks for
                    // them (`kite.*`)
                    &q.event_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with(kite_wire::event::OPERATIONAL_TYPE_PREFIX)),
                ],
            )
            .await?;
        Ok(rows.iter().filter_map(stored).collect())
    }

    /// The team's latest `limit` events, newest first.
    pub async fn recent_events(&self, team_id: &str, limit: i64) -> Result<Vec<StoredEvent>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {STORED_COLS} FROM events
                 WHERE team_id = $1 AND hook_source <> '_kite' ORDER BY seq DESC LIMIT $2"
                ),
                &[&team_id, &limit],
            )
            .await?;
        Ok(rows.iter().filter_map(stored).collect())
    }

    /// A team's counts for a dashboard: events stored since midnight UTC, signed sources,
    /// API keys not revoked.
    pub async fn team_stats(&self, team_id: &str) -> Result<TeamStats> {
        let c = self.conn().await?;
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM events WHERE team_id = $1 AND hook_source <> '_kite'
                           AND received_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
                        (SELECT count(*) FROM sources WHERE team_id = $1),
                        (SELECT count(*) FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL)",
                &[&team_id],
            )
            .await?;
        Ok(TeamStats {
            events_today: r.col(0)?,
            sources: r.col(1)?,
            active_keys: r.col(2)?,
        })
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
        row.col(0)
    }
}

/// The federation extensions of a row, from its `fed_origin`, `fed_chain` and `fed_hops`
/// columns starting at `first`.
pub(crate) fn fed_columns(r: &Row, first: usize) -> Result<FedInfo> {
    let hops: i32 = r.col(first + 2)?;
    Ok(FedInfo {
        origin: r.col(first)?,
        chain: r.col(first + 1)?,
        hops: u32::try_from(hops).unwrap_or(0),
    })
}

/// The columns [`stored`] reads, in its order.
const STORED_COLS: &str = "seq, team_id, hook_source, ce_type, event::text, received_at, \
    fed_origin, fed_chain, fed_hops, ce_source, fed_sig, fed_sigkey, trace_parent, trace_state";

/// A stored event row; a row whose event cannot be read keeps the reason instead, so
/// readers log it and move past it. None only without a sequence number (never stored).
fn stored(r: &Row) -> Option<StoredEvent> {
    let seq: i64 = r.col(0).ok()?;
    let read = (|| -> std::result::Result<(String, FedInfo), String> {
        let rest: String = r.col(4).map_err(|e| e.to_string())?;
        let fed = fed_columns(r, 6).map_err(|e| e.to_string())?;
        Ok((rest, fed))
    })();
    let (rest, fed) = match read {
        Ok((rest, fed)) => (Ok(rest), fed),
        Err(e) => (Err(e), FedInfo::default()),
    };
    Some(StoredEvent {
        seq,
        team_id: r.col(1).unwrap_or_default(),
        hook_source: r.col(2).unwrap_or_default(),
        ce_type: r.col(3).unwrap_or_default(),
        ce_source: r.col(9).unwrap_or_default(),
        rest,
        fed,
        received_at: r.col(5).unwrap_or_default(),
        origin_sig: sig_columns(r, 10),
        trace: trace_columns(r, 12),
    })
}

/// The trace context of a row from `trace_parent` and `trace_state` at `first`, when the
/// query read them and the event has one.
pub(crate) fn trace_columns(r: &Row, first: usize) -> Option<TraceContext> {
    if r.len() < first + 2 {
        return None;
    }
    let parent: Option<String> = r.col(first).ok()?;
    let state: Option<String> = r.col(first + 1).ok()?;
    TraceContext::parse(&parent?, state.as_deref())
}

/// The origin signature of a row from `fed_sig` and `fed_sigkey` at `first`, when the query
/// read them and the event has one.
pub(crate) fn sig_columns(r: &Row, first: usize) -> Option<SigText> {
    if r.len() < first + 2 {
        return None;
    }
    match (r.col(first).ok()?, r.col(first + 1).ok()?) {
        (Some(sig), Some(key)) => Some(SigText { sig, key }),
        _ => None,
    }
}

impl StoredEvent {
    /// The whole event as JSON text, federation extensions put back with its origin
    /// signature (so anyone can check it with the origin's published key) and its trace
    /// context, and `kiteseq` when `with_seq`; or why it cannot be read.
    pub fn text(&self, with_seq: bool) -> std::result::Result<String, String> {
        let rest = self.rest.as_deref().map_err(|e| e.clone())?;
        let mut text = fed::stored_text(rest, &self.fed, with_seq.then_some(self.seq))
            .map_err(|e| e.to_string())?;
        if let Some(sig) = &self.origin_sig {
            text = fed::splice(&text, &sig.members()).map_err(|e| e.to_string())?;
        }
        if let Some(trace) = &self.trace {
            text = fed::splice(&text, &trace.members()).map_err(|e| e.to_string())?;
        }
        Ok(text)
    }
}

/// The batch insert, on a connection or inside a transaction.
async fn insert(
    c: &impl deadpool_postgres::GenericClient,
    batch: &[NewEvent],
) -> Result<Vec<InsertOutcome>> {
    let st = c
        .prepare_cached(
            // The per-team advisory locks (taken in a fixed order, held to commit) make
            // each team's sequence numbers commit in order, so a stream reader that has
            // seen seq N never sees a smaller one appear later.
            "WITH locks AS (
                SELECT pg_advisory_xact_lock(hashtext('kite-stream:' || t))
                FROM (SELECT DISTINCT t FROM UNNEST($1::text[]) AS u(t) ORDER BY t) ordered)
             INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event,
                                 fed_origin, fed_chain, fed_hops, fed_sig, fed_sigkey,
                                 trace_parent, trace_state)
             SELECT t, s, i, h, ty, e::json, o, ARRAY(SELECT json_array_elements_text(c::json)), n, g, k,
                    tp, ts
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::int[], $10::text[], $11::text[],
                         $12::text[], $13::text[])
                  AS u(t, s, i, h, ty, e, o, c, n, g, k, tp, ts)
             WHERE (SELECT count(*) FROM locks) >= 0
             ON CONFLICT DO NOTHING
             RETURNING seq, team_id, hook_source, ce_source, ce_id, received_at, fed_origin",
        )
        .await?;
    let cols = EventColumns::of(batch);
    let rows = c.query(&st, &cols.params()).await?;
    outcomes(batch, &rows.iter().collect::<Vec<_>>(), 6)
}

/// A batch of events as the column arrays the inserts take.
struct EventColumns<'a> {
    teams: Vec<&'a str>,
    sources: Vec<&'a str>,
    ids: Vec<&'a str>,
    hooks: Vec<&'a str>,
    types: Vec<&'a str>,
    bodies: Vec<&'a str>,
    origins: Vec<Option<&'a str>>,
    chains: Vec<String>,
    hops: Vec<i32>,
    sigs: Vec<Option<&'a str>>,
    sigkeys: Vec<Option<&'a str>>,
    trace_parents: Vec<Option<String>>,
    trace_states: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    fn of(batch: &'a [NewEvent]) -> Self {
        let col = |f: fn(&NewEvent) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
        Self {
            teams: col(|e| &e.team_id),
            sources: col(|e| &e.ce_source),
            ids: col(|e| &e.ce_id),
            hooks: col(|e| &e.hook_source),
            types: col(|e| &e.ce_type),
            bodies: col(|e| &e.event),
            origins: batch.iter().map(|e| e.fed.origin.as_deref()).collect(),
            chains: batch
                .iter()
                .map(|e| serde_json::Value::from(e.fed.chain.clone()).to_string())
                .collect(),
            hops: batch.iter().map(|e| e.fed.hops as i32).collect(),
            sigs: batch
                .iter()
                .map(|e| e.origin_sig.as_ref().map(|s| s.sig.as_str()))
                .collect(),
            sigkeys: batch
                .iter()
                .map(|e| e.origin_sig.as_ref().map(|s| s.key.as_str()))
                .collect(),
            trace_parents: batch
                .iter()
                .map(|e| e.trace.as_ref().map(TraceContext::traceparent))
                .collect(),
            trace_states: batch
                .iter()
                .map(|e| e.trace.as_ref().and_then(|t| t.state.as_deref()))
                .collect(),
        }
    }
}

impl EventColumns<'_> {
    /// The columns as the inserts' first thirteen parameters.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.teams,
            &self.sources,
            &self.ids,
            &self.hooks,
            &self.types,
            &self.bodies,
            &self.origins,
            &self.chains,
            &self.hops,
            &self.sigs,
            &self.sigkeys,
            &self.trace_parents,
            &self.trace_states,
        ]
    }
}

/// Each event's outcome from the rows an insert returned (seq, team_id, hook_source,
/// ce_source, ce_id, received_at): the first of several equal identities takes the row.
fn outcomes(batch: &[NewEvent], rows: &[&Row], origin_at: usize) -> Result<Vec<InsertOutcome>> {
    // An event's identity (the `events_identity` index): its team, hook, CloudEvent source
    // and id, and the origin it names.
    type Identity = (TeamId, String, String, String, Option<String>);
    let mut inserted: HashMap<Identity, (EventSeq, DateTime<Utc>)> = HashMap::new();
    for r in rows {
        let key = (
            r.col(1)?,
            r.col(2)?,
            r.col(3)?,
            r.col(4)?,
            r.col(origin_at)?,
        );
        inserted.insert(key, (r.col(0)?, r.col(5)?));
    }
    Ok(batch
        .iter()
        .map(|e| {
            let key = (
                e.team_id.clone(),
                e.hook_source.clone(),
                e.ce_source.clone(),
                e.ce_id.clone(),
                e.fed.origin.clone(),
            );
            match inserted.remove(&key) {
                Some((seq, received_at)) => InsertOutcome::Inserted { seq, received_at },
                None => InsertOutcome::Duplicate,
            }
        })
        .collect())
}

/// Writes routing decisions and marks the events routed (inside the caller's transaction).
/// Answers the pending rows actually created.
async fn write_routing(
    tx: &deadpool_postgres::Transaction<'_>,
    seqs: &[EventSeq],
    rows: &[NewOutbox<EventSeq>],
) -> Result<Vec<Delivery>> {
    let ins = tx
        .prepare_cached(
            "INSERT INTO outbox (event_seq, peer_id, team_id, state, reason, ordering_key)
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                  $6::text[])
             ON CONFLICT (event_seq, peer_id) DO NOTHING
             RETURNING id, peer_id, state",
        )
        .await?;
    let event_seqs: Vec<EventSeq> = rows.iter().map(|r| r.event).collect();
    let peers: Vec<PeerId> = rows.iter().map(|r| r.peer_id).collect();
    let teams: Vec<&str> = rows.iter().map(|r| r.team_id.as_str()).collect();
    let states: Vec<OutboxState> = rows.iter().map(|r| r.state).collect();
    let reasons: Vec<Option<SkipReason>> = rows.iter().map(|r| r.reason).collect();
    let keys: Vec<Option<&str>> = rows.iter().map(|r| r.ordering_key.as_deref()).collect();
    let created = tx
        .query(
            &ins,
            &[&event_seqs, &peers, &teams, &states, &reasons, &keys],
        )
        .await?;
    let mark = tx
        .prepare_cached(
            "UPDATE events SET routed_at = now() WHERE seq = ANY($1) AND routed_at IS NULL",
        )
        .await?;
    tx.execute(&mark, &[&seqs]).await?;
    let mut pending = Vec::new();
    for r in &created {
        if r.col::<OutboxState>(2)? == OutboxState::Pending {
            pending.push(Delivery {
                id: r.col(0)?,
                peer: r.col(1)?,
            });
        }
    }
    Ok(pending)
}
