//! The outbox: one row per (event, peer), whose state says where the delivery is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kite_wire::fed::FedInfo;
use kite_wire::ids::{Delivery, EventSeq, OutboxId, PeerId, TeamId};

use crate::events::fed_columns;
use crate::types::{AttemptOutcome, OutboxAction, OutboxState, PeerAnswer, PeerHealth, PeerStatus};
use crate::{Result, RowExt, Store};

pub use kite_api::outbox::OutboxEntry;

/// An outbox row with what delivery needs: the event and the peer's current settings.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// The row.
    pub id: OutboxId,
    /// Target peer.
    pub peer_id: PeerId,
    /// The owning team.
    pub team_id: TeamId,
    /// Current state.
    pub state: OutboxState,
    /// Failed attempts so far.
    pub attempts: i32,
    /// The event as it goes out, or why its row could not be read (a message failure:
    /// the delivery can never be made).
    pub event: std::result::Result<Outgoing, String>,
    /// The peer as it is now, or None when it was deleted.
    pub peer: Option<Target>,
}

/// A stored event as delivery forwards it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The CloudEvent as JSON text, without its federation extensions.
    pub rest: String,
    /// Its federation extensions.
    pub fed: FedInfo,
    /// Its CloudEvent id.
    pub id: String,
    /// Its CloudEvent source (with the id, the event's identity).
    pub source: String,
    /// Its CloudEvent type.
    pub ty: String,
    /// Its origin signature, when it came with one.
    pub origin_sig: Option<kite_wire::provenance::SigText>,
    /// Its trace context: each attempt's span is a child of it.
    pub trace: Option<kite_wire::trace::TraceContext>,
    /// When it was received here.
    pub received_at: DateTime<Utc>,
}

/// The peer a row goes to, as it is now.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: PeerStatus,
    /// What delivery has seen of it.
    pub health: PeerHealth,
    /// Its hook URL.
    pub hook_url: String,
    /// How requests to it are signed.
    pub auth: PeerAuth,
    /// Its own delivery policy (what it leaves out is the instance's).
    pub delivery: kite_api::peers::DeliveryPolicy,
    /// How events are sent to it.
    pub content_mode: kite_api::types::ContentMode,
    /// Whether it is ordered (its rows are claimed one a key).
    pub ordered: bool,
}

/// How requests to a peer are signed: the kind of peer it is.
#[derive(Debug, Clone)]
pub enum PeerAuth {
    /// A handshake peer: with this server's identity key, for the peer's server.
    Server {
        /// The peer's server name (the requests' destination).
        server_name: String,
    },
    /// A Kite token peer: with the shared secret.
    Token {
        /// The outbound secret.
        token: String,
        /// The secret replaced by a rotation, signed with too until the overlap ends.
        previous: Option<String>,
        /// The token the peer minted for this side (its `inbound_token`), signed with too.
        inbound: Option<String>,
        /// Key id to name instead of sending the token as a bearer.
        key_id: Option<String>,
    },
}

impl PeerAuth {
    /// How `peer` is signed for at `now` (a rotated secret only within its overlap).
    pub fn of(peer: &crate::peers::Peer, now: DateTime<Utc>) -> Self {
        match &peer.server_name {
            Some(server_name) => PeerAuth::Server {
                server_name: server_name.clone(),
            },
            None => PeerAuth::Token {
                token: peer.outbound_token.clone(),
                previous: crate::rotation::in_overlap(peer.previous_until, now)
                    .then(|| peer.previous_outbound_token.clone())
                    .flatten(),
                inbound: peer.inbound_token.clone(),
                key_id: peer.key_id.clone(),
            },
        }
    }
}

impl DeliveryRow {
    /// The row of an event just stored and routed, as [`Store::delivery_rows`] would load
    /// it (the local lane hands it over without reading it back).
    pub fn of_new(
        id: OutboxId,
        event: &crate::events::NewEvent,
        peer: &crate::peers::Peer,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            peer_id: peer.id,
            team_id: event.team_id.clone(),
            state: OutboxState::Pending,
            attempts: 0,
            event: Ok(Outgoing {
                rest: event.event.clone(),
                fed: event.fed.clone(),
                id: event.ce_id.clone(),
                source: event.ce_source.clone(),
                ty: event.ce_type.clone(),
                origin_sig: event.origin_sig.clone(),
                trace: event.trace.clone(),
                received_at,
            }),
            peer: Some(Target {
                name: peer.name.clone(),
                status: peer.status,
                health: peer.health,
                hook_url: peer.peer_hook_url.clone(),
                auth: PeerAuth::of(peer, now),
                delivery: peer.delivery.clone(),
                content_mode: peer.content_mode,
                ordered: peer.ordering_key.is_some(),
            }),
        }
    }

    /// When its event was received, if it could be read.
    pub fn received_at(&self) -> Option<DateTime<Utc>> {
        self.event.as_ref().ok().map(|e| e.received_at)
    }
}

/// The event columns of a [`Store::delivery_rows`] row.
fn outgoing(r: &tokio_postgres::Row) -> Result<Outgoing> {
    Ok(Outgoing {
        rest: r.col(4)?,
        fed: fed_columns(r, 11)?,
        id: r.col(14)?,
        source: r.col(15)?,
        ty: r.col(27)?,
        origin_sig: crate::events::sig_columns(r, 17),
        trace: crate::events::trace_columns(r, 25),
        received_at: r.col(21)?,
    })
}

/// The new state of a row after a delivery attempt.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    /// The row.
    pub id: OutboxId,
    /// `Delivered`, `Pending` (retry) or `Dead`.
    pub state: OutboxState,
    /// Failed attempts after this one.
    pub attempts: i32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Error of this attempt.
    pub last_error: Option<String>,
    /// Status code of this attempt.
    pub last_status_code: Option<i32>,
    /// What the peer did with the event (`Delivered` only).
    pub peer_answer: Option<PeerAnswer>,
}

/// What became of an operator's action on one outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    /// Done: the row now waits for its peer (publish it), or was cancelled.
    Done(PeerId),
    /// No such row in the team.
    Missing,
    /// The row's state does not allow the action.
    Refused(OutboxState),
}

/// The columns of an [`OutboxEntry`], read by [`entry`]; `o` is the outbox row, `e` its
/// event. The attempt count is the story's: every logged attempt of the row.
const ENTRY_COLUMNS: &str = "o.id, o.event_seq, e.ce_id, e.ce_type, o.peer_id, o.state, o.reason,
    (SELECT count(*)::int FROM attempts a WHERE a.outbox_id = o.id),
    o.next_attempt_at, o.last_error, o.last_status_code, o.created_at, o.updated_at,
    o.delivered_at, o.peer_answer, o.attempts";

/// An outbox row read with [`ENTRY_COLUMNS`].
fn entry(r: &tokio_postgres::Row) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.col(0)?,
        event_seq: r.col(1)?,
        event_id: r.col(2)?,
        event_type: r.col(3)?,
        peer_id: r.col(4)?,
        status: r.col(5)?,
        reason: r.col(6)?,
        attempts: r.col(7)?,
        next_attempt_at: r.col(8)?,
        last_error: r.col(9)?,
        last_status_code: r.col(10)?,
        created_at: r.col(11)?,
        updated_at: r.col(12)?,
        delivered_at: r.col(13)?,
        peer_answer: r.col(14)?,
        failures: r.col(15)?,
    })
}

/// Dead rows to replay, by filter (`POST /api/federation/outbox/replay`).
#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    /// Only this peer.
    pub peer_id: Option<PeerId>,
    /// Only events whose type matches this glob.
    pub event_type: Option<String>,
    /// Only rows made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows made before this time.
    pub until: Option<DateTime<Utc>>,
    /// The most rows.
    pub limit: i64,
}

/// Filters of an outbox listing.
#[derive(Debug, Clone, Default)]
pub struct OutboxQuery {
    /// Only this peer.
    pub peer_id: Option<PeerId>,
    /// Only this state.
    pub status: Option<OutboxState>,
    /// Only events whose type matches this glob (`*` any run, `?` one character).
    pub event_type: Option<String>,
    /// Only events that came in through this hook source.
    pub source: Option<String>,
    /// Only rows made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows made before this time.
    pub until: Option<DateTime<Utc>>,
    /// Rows after this id.
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: i64,
}

impl Store {
    /// Loads outbox rows with their event and peer.
    pub async fn delivery_rows(&self, ids: &[OutboxId]) -> Result<Vec<DeliveryRow>> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT o.id, o.peer_id, o.state, o.attempts, e.event::text,
                        p.status, p.peer_hook_url, p.outbound_token, p.health,
                        p.previous_outbound_token, p.key_id,
                        e.fed_origin, e.fed_chain, e.fed_hops, e.ce_id, e.ce_source, p.server_name,
                        e.fed_sig, e.fed_sigkey, p.name, o.team_id, e.received_at, p.inbound_token,
                        p.previous_until, p.conduct::text, e.trace_parent, e.trace_state,
                        e.ce_type
                 FROM outbox o JOIN events e ON e.seq = o.event_seq
                 LEFT JOIN peers p ON p.id = o.peer_id
                 WHERE o.id = ANY($1) ORDER BY o.id",
            )
            .await?;
        let rows = c.query(&st, &[&ids]).await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.col(0)?,
                    peer_id: r.col(1)?,
                    team_id: r.col(20)?,
                    state: r.col(2)?,
                    attempts: r.col(3)?,
                    // The event's own columns are read per row: one that cannot be read is
                    // that delivery's failure, never the batch's.
                    event: outgoing(r).map_err(|e| e.to_string()),
                    peer: self.target(r)?,
                })
            })
            .collect()
    }

    /// The peer columns of a [`Store::delivery_rows`] row (None: the peer was deleted).
    fn target(&self, r: &tokio_postgres::Row) -> Result<Option<Target>> {
        let (Some(name), Some(status), Some(health), Some(hook_url)) =
            (r.col(19)?, r.col(5)?, r.col(8)?, r.col(6)?)
        else {
            return Ok(None);
        };
        let auth = match r.col::<Option<String>>(16)? {
            Some(server_name) => PeerAuth::Server { server_name },
            None => PeerAuth::Token {
                token: self.open_opt(r.col(7)?)?.unwrap_or_default(),
                previous: self.previous_secret(r, 9, 23)?.0,
                inbound: self.open_opt(r.col(22)?)?,
                key_id: r.col(10)?,
            },
        };
        let conduct = crate::peers::conduct_of(r, 24)?;
        Ok(Some(Target {
            name,
            status,
            health,
            hook_url,
            auth,
            delivery: conduct.delivery,
            content_mode: conduct.content_mode,
            ordered: conduct.ordering_key.is_some(),
        }))
    }

    /// Analyzes kite's fast-changing tables (events, outbox, attempts) that have grown to
    /// twice the rows of their last analyze; answers their names. Their prepared
    /// statements keep the plan made when the table was small until its statistics change,
    /// and autovacuum looks at most once a minute: a young outbox would be scanned whole
    /// for every batch until then. Growth, not churn, is what changes those plans, so a
    /// large busy table is left to autovacuum (analyzing it every few seconds cost a tenth
    /// of Postgres' time at saturation).
    pub async fn analyze_changed(&self) -> Result<Vec<String>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.schemaname = current_schema() AND s.relname IN ('events', 'outbox', 'attempts')
                   AND s.n_mod_since_analyze > 1000
                   AND s.n_live_tup > 2 * GREATEST(c.reltuples, 500)",
                &[],
            )
            .await?;
        let mut done = Vec::new();
        for r in &rows {
            let table: String = r.col(0)?;
            // The name is one of the three above, never input.
            c.batch_execute(&format!("ANALYZE {table}")).await?;
            done.push(table);
        }
        Ok(done)
    }

    /// Applies attempt results and logs the attempts (of rows that still exist) in one
    /// statement; rows no longer pending are left alone.
    pub async fn apply_delivery(
        &self,
        updates: &[DeliveryUpdate],
        attempts: &[crate::story::NewAttempt],
    ) -> Result<u64> {
        if updates.is_empty() && attempts.is_empty() {
            return Ok(0);
        }
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                // The attempt log rides along (a data-modifying CTE runs whether or not it is
                // read): one round trip a batch. The rows are found from the UNNEST by key;
                // with statistics of the table's real size (`analyze_changed`) the planner
                // does so.
                "WITH logged AS (
                    INSERT INTO attempts (outbox_id, outcome, status_code, error, duration_ms, peer_answer)
                    SELECT a.id, a.outcome, a.code, a.error, a.ms, a.answer
                    FROM UNNEST($7::bigint[], $8::text[], $9::int[], $10::text[], $11::int[], $13::text[])
                         AS a(id, outcome, code, error, ms, answer)
                    JOIN outbox x ON x.id = a.id
                    RETURNING 1)
                 UPDATE outbox o SET state = u.state, attempts = u.attempts,
                    next_attempt_at = u.next_attempt_at,
                    last_error = COALESCE(u.last_error, o.last_error),
                    last_status_code = COALESCE(u.last_status_code, o.last_status_code),
                    delivered_at = CASE WHEN u.state = 'delivered' THEN now() ELSE o.delivered_at END,
                    peer_answer = CASE WHEN u.state = 'delivered' THEN u.answer ELSE o.peer_answer END,
                    updated_at = now()
                 FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::int[], $12::text[])
                    AS u(id, state, attempts, next_attempt_at, last_error, last_status_code, answer)
                 WHERE o.id = u.id
                   AND (o.state = 'pending' OR (o.state = 'cancelled' AND u.state = 'delivered'))",
            )
            .await?;
        let ids: Vec<OutboxId> = updates.iter().map(|u| u.id).collect();
        let states: Vec<OutboxState> = updates.iter().map(|u| u.state).collect();
        let tries: Vec<i32> = updates.iter().map(|u| u.attempts).collect();
        let next: Vec<DateTime<Utc>> = updates.iter().map(|u| u.next_attempt_at).collect();
        let errs: Vec<Option<&str>> = updates.iter().map(|u| u.last_error.as_deref()).collect();
        let codes: Vec<Option<i32>> = updates.iter().map(|u| u.last_status_code).collect();
        let a_ids: Vec<OutboxId> = attempts.iter().map(|a| a.outbox_id).collect();
        let a_outcomes: Vec<AttemptOutcome> = attempts.iter().map(|a| a.outcome).collect();
        let a_codes: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
        let a_errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
        let a_ms: Vec<i32> = attempts.iter().map(|a| a.duration_ms).collect();
        let answers: Vec<Option<PeerAnswer>> = updates.iter().map(|u| u.peer_answer).collect();
        let a_answers: Vec<Option<PeerAnswer>> = attempts.iter().map(|a| a.peer_answer).collect();
        Ok(c.execute(
            &st,
            &[
                &ids,
                &states,
                &tries,
                &next,
                &errs,
                &codes,
                &a_ids,
                &a_outcomes,
                &a_codes,
                &a_errors,
                &a_ms,
                &answers,
                &a_answers,
            ],
        )
        .await?)
    }

    /// Cancels pending rows (their peer is gone or revoked).
    pub async fn cancel_rows(&self, ids: &[OutboxId]) -> Result<u64> {
        let c = self.conn().await?;
        Ok(c
            .execute(
                "UPDATE outbox SET state = 'cancelled', updated_at = now() WHERE id = ANY($1) AND state = 'pending'",
                &[&ids],
            )
            .await?)
    }

    /// A page of a team's outbox, oldest first; answers the rows and the next cursor.
    pub async fn list_outbox(
        &self,
        team_id: &str,
        q: &OutboxQuery,
    ) -> Result<(Vec<OutboxEntry>, Option<i64>)> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS}
                 FROM outbox o JOIN events e ON e.seq = o.event_seq
                 WHERE o.team_id = $1 AND ($2::uuid IS NULL OR o.peer_id = $2)
                   AND ($3::text IS NULL OR o.state = $3) AND o.id > $4
                   AND ($6::text IS NULL OR e.ce_type LIKE $6)
                   AND ($7::text IS NULL OR e.hook_source = $7)
                   AND ($8::timestamptz IS NULL OR o.created_at >= $8)
                   AND ($9::timestamptz IS NULL OR o.created_at < $9)
                 ORDER BY o.id LIMIT $5"
                ),
                &[
                    &team_id,
                    &q.peer_id,
                    &q.status,
                    &q.cursor.unwrap_or(0),
                    &(q.limit + 1),
                    &q.event_type.as_deref().map(crate::glob_to_like),
                    &q.source,
                    &q.since,
                    &q.until,
                ],
            )
            .await?;
        let mut items: Vec<OutboxEntry> = rows.iter().map(entry).collect::<Result<_>>()?;
        let next = if items.len() as i64 > q.limit {
            items.truncate(q.limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok((items, next))
    }

    /// Moves up to `q.limit` dead rows of a team that match `q` back to pending with
    /// attempts reset, recording the replay (by key `by`) in each row's story; answers them.
    pub async fn replay_matching(
        &self,
        team_id: &str,
        q: &ReplayQuery,
        by: Option<&str>,
    ) -> Result<Vec<Delivery>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "WITH back AS (
                    UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
                    WHERE id IN (SELECT o.id FROM outbox o JOIN events e ON e.seq = o.event_seq
                                 WHERE o.team_id = $1 AND o.state = 'dead'
                                   AND ($2::uuid IS NULL OR o.peer_id = $2)
                                   AND ($3::text IS NULL OR e.ce_type LIKE $3)
                                   AND ($4::timestamptz IS NULL OR o.created_at >= $4)
                                   AND ($5::timestamptz IS NULL OR o.created_at < $5)
                                 ORDER BY o.id LIMIT $6 FOR UPDATE OF o SKIP LOCKED)
                    RETURNING id, peer_id),
                 noted AS (
                    INSERT INTO outbox_actions (outbox_id, action, by_key)
                    SELECT id, $7, $8 FROM back)
                 SELECT id, peer_id FROM back ORDER BY id",
                &[
                    &team_id,
                    &q.peer_id,
                    &q.event_type.as_deref().map(crate::glob_to_like),
                    &q.since,
                    &q.until,
                    &q.limit,
                    &OutboxAction::Replay,
                    &by,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.col(0)?,
                    peer: r.col(1)?,
                })
            })
            .collect()
    }

    /// One outbox row of a team.
    pub async fn outbox_entry(&self, team_id: &str, id: i64) -> Result<OutboxEntry> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM outbox o JOIN events e ON e.seq = o.event_seq
                     WHERE o.team_id = $1 AND o.id = $2"
                ),
                &[&team_id, &id],
            )
            .await?
            .ok_or(crate::StoreError::NotFound)?;
        entry(&row)
    }

    /// Resends one row now: a delivered or dead row goes back to pending, due now, with its
    /// retry count reset and what the peer last answered cleared. Any other row is refused: a
    /// pending one is in line already (a second message would start a second retry chain),
    /// a cancelled one may still have its message queued, a skipped one is never sent. The
    /// row's story records the resend, by key `by`.
    pub async fn resend(&self, team_id: &str, id: i64, by: Option<&str>) -> Result<Acted> {
        self.act(
            team_id,
            id,
            by,
            OutboxAction::Resend,
            "UPDATE outbox SET state = 'pending', attempts = 0,
                    next_attempt_at = now() + interval '1100 milliseconds',
                    peer_answer = NULL, delivered_at = NULL, updated_at = now()
             WHERE team_id = $1 AND id = $2 AND state IN ('delivered', 'dead')
             RETURNING id, peer_id",
        )
        .await
    }

    /// Cancels one pending row (its queued message is dropped when it comes), or a dead one
    /// (an ordered key it blocks moves on). The row's story records it, by key `by`.
    pub async fn cancel(&self, team_id: &str, id: i64, by: Option<&str>) -> Result<Acted> {
        self.act(
            team_id,
            id,
            by,
            OutboxAction::Cancel,
            "UPDATE outbox SET state = 'cancelled', updated_at = now()
             WHERE team_id = $1 AND id = $2 AND state IN ('pending', 'dead')
             RETURNING id, peer_id",
        )
        .await
    }

    /// Runs `update` (one of this module's statements, which answers `id, peer_id` of the
    /// row it changed) and records `action` in the same statement.
    async fn act(
        &self,
        team_id: &str,
        id: i64,
        by: Option<&str>,
        action: OutboxAction,
        update: &'static str,
    ) -> Result<Acted> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "WITH done AS ({update}),
                     noted AS (INSERT INTO outbox_actions (outbox_id, action, by_key)
                               SELECT id, $3, $4 FROM done)
                     SELECT peer_id FROM done"
                ),
                &[&team_id, &id, &action, &by],
            )
            .await?;
        if let Some(r) = row {
            return Ok(Acted::Done(r.col(0)?));
        }
        let state = c
            .query_opt(
                "SELECT state FROM outbox WHERE team_id = $1 AND id = $2",
                &[&team_id, &id],
            )
            .await?;
        Ok(match state {
            Some(r) => Acted::Refused(r.col(0)?),
            None => Acted::Missing,
        })
    }

    /// One sweep for lost messages, run by one process at a time (others get None): events
    /// stored more than `grace` ago whose routing never finished, and pending rows of active,
    /// reachable peers overdue by `grace`, whose due time moves `grace` ahead so the next sweep
    /// leaves them alone while their republished message is in flight. Rows of peers whose
    /// deliveries are claimed (ordered, rate-limited, or with a retry schedule of their own:
    /// `kite_delivery`'s `gate::claimed`) are left alone: their workers claim them when due.
    pub async fn sweep(&self, grace: Duration, limit: i64) -> Result<Option<Sweep>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let secs = grace.as_secs_f64();
        let events = tx
            .query(
                "SELECT seq FROM events WHERE routed_at IS NULL
                 AND received_at < now() - make_interval(secs => $1) ORDER BY seq LIMIT $2",
                &[&secs, &limit],
            )
            .await?
            .iter()
            .map(|r| r.col(0))
            .collect::<Result<_>>()?;
        let rows = tx
            .query(
                "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $1)
                 WHERE id IN (SELECT o.id FROM outbox o JOIN peers p ON p.id = o.peer_id
                              WHERE o.state = 'pending' AND p.status IN ('accepted', 'active', 'degraded') AND p.health <> 'unreachable'
                                AND o.next_attempt_at < now() - make_interval(secs => $1)
                                AND p.conduct->>'ordering_key' IS NULL
                                AND p.conduct->'delivery'->>'rate_per_sec' IS NULL
                                AND p.conduct->'delivery'->>'retry_base_ms' IS NULL
                                AND p.conduct->'delivery'->>'retry_max_delay_ms' IS NULL
                              ORDER BY o.next_attempt_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED)
                 RETURNING id, peer_id",
                &[&secs, &limit],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.col(0)?,
                    peer: r.col(1)?,
                })
            })
            .collect::<Result<_>>()?;
        tx.commit().await?;
        Ok(Some(Sweep { events, rows }))
    }
}

impl Store {
    /// Claims due rows of a peer whose deliveries are claimed rather than queued (ordered
    /// or rate-limited, see `kite_delivery`): at most `limit`, each leased for `lease` (not
    /// due for anyone else until then, so concurrent claims of several processes never
    /// share a row). With `ordered`, only the first row of each ordering key not yet
    /// settled may be claimed (in the order the events were accepted), and with
    /// `OnDead::Block` a dead first row holds its key. Answers the rows' ids, oldest first.
    pub async fn claim_due(
        &self,
        peer_id: PeerId,
        ordered: Option<kite_api::types::OnDead>,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<OutboxId>> {
        let c = self.conn().await?;
        let secs = lease.as_secs_f64();
        let rows = match ordered {
            None => {
                let st = c
                    .prepare_cached(
                        "UPDATE outbox o SET next_attempt_at = now() + make_interval(secs => $2)
                         WHERE o.id = ANY(ARRAY(SELECT id FROM outbox
                                        WHERE peer_id = $1 AND state = 'pending' AND next_attempt_at <= now()
                                        ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED))
                         RETURNING o.id",
                    )
                    .await?;
                c.query(&st, &[&peer_id, &secs, &limit]).await?
            }
            Some(on_dead) => {
                // A key's first row not yet settled (pending, or dead where dead blocks);
                // rows routed before the peer was ordered (no key) are one key of their own.
                // The heads are found once and the rows taken by id: a plan made while the
                // outbox was small must not scan it again for every row.
                let st = c
                    .prepare_cached(
                        "WITH heads AS MATERIALIZED (
                            (SELECT DISTINCT ON (ordering_key) id, state, next_attempt_at
                             FROM outbox
                             WHERE peer_id = $1 AND ordering_key IS NOT NULL
                               AND state IN ('pending', 'dead') AND (state = 'pending' OR $4)
                             ORDER BY ordering_key, event_seq)
                            UNION ALL
                            (SELECT id, state, next_attempt_at FROM outbox
                             WHERE peer_id = $1 AND ordering_key IS NULL AND state = 'pending'
                             ORDER BY id LIMIT 1))
                         UPDATE outbox o SET next_attempt_at = now() + make_interval(secs => $2)
                         WHERE o.id = ANY(ARRAY(SELECT id FROM heads
                                                WHERE state = 'pending' AND next_attempt_at <= now()
                                                ORDER BY id LIMIT $3))
                           AND o.state = 'pending' AND o.next_attempt_at <= now()
                         RETURNING o.id",
                    )
                    .await?;
                let block = on_dead == kite_api::types::OnDead::Block;
                c.query(&st, &[&peer_id, &secs, &limit, &block]).await?
            }
        };
        let mut ids: Vec<OutboxId> = rows.iter().map(|r| r.col(0)).collect::<Result<_>>()?;
        ids.sort_by_key(|id| id.0);
        Ok(ids)
    }
}

/// Advisory lock key that makes one sweeper run at a time.
const SWEEP_LOCK: i64 = 0x6b69_7465_7377;

/// What a sweep found to republish.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// Events to route again.
    pub events: Vec<EventSeq>,
    /// Deliveries to send again.
    pub rows: Vec<Delivery>,
}
