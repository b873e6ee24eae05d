//! Operational events: kite's own CloudEvents about a team's peers, deliveries and identity.
//!
//! Triggers note what happened (`operational_signals`: a peer's health or status changed, a
//! delivery went dead, the server's identity key was rotated). [`Store::emit_operational`]
//! takes the signals and, coalesced per subject ([`coalesce`]), stores them as events of the
//! team (hook source [`HOOK_SOURCE`], type `kite.*`, marked routed: never routed to a peer),
//! so they are on the team's stream and listings, with a delivery to the team's operational
//! endpoint when it has one. [`Store::claim_operational`] and [`Store::settle_operational`]
//! are that delivery's bookkeeping.

use chrono::{DateTime, Utc};
use kite_api::operational::OperationalEndpoint;
use kite_wire::ids::TeamId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use crate::{Result, RowExt, Store};

/// The hook source of operational events (not a name a hook can have: nothing posts as it).
pub const HOOK_SOURCE: &str = "_kite";

/// A kind of operational event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsType {
    /// A peer's deliveries started failing.
    PeerDegraded,
    /// A peer failed the threshold in a row: its deliveries are parked and probed.
    PeerUnreachable,
    /// A degraded or unreachable peer takes deliveries again.
    PeerRecovered,
    /// A peer was added (a handshake completed, or a token peer was made).
    PeerJoined,
    /// A peer was revoked (by an operator, or by the peer itself).
    PeerRevoked,
    /// A delivery was given up after its last attempt.
    DeliveryDead,
    /// This server's identity key was rotated.
    IdentityRotated,
}

impl OpsType {
    /// The CloudEvent type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeerDegraded => "kite.peer.degraded",
            Self::PeerUnreachable => "kite.peer.unreachable",
            Self::PeerRecovered => "kite.peer.recovered",
            Self::PeerJoined => "kite.peer.joined",
            Self::PeerRevoked => "kite.peer.revoked",
            Self::DeliveryDead => "kite.delivery.dead",
            Self::IdentityRotated => "kite.identity.rotated",
        }
    }

    /// Every type, each once.
    pub const ALL: [Self; 7] = [
        Self::PeerDegraded,
        Self::PeerUnreachable,
        Self::PeerRecovered,
        Self::PeerJoined,
        Self::PeerRevoked,
        Self::DeliveryDead,
        Self::IdentityRotated,
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What a subject last emitted and what waits for the end of its window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mark {
    /// The type emitted last.
    pub last_type: Option<OpsType>,
    /// When it was emitted (None: never).
    pub last_at: Option<DateTime<Utc>>,
    /// What is emitted at the window's end, with its data.
    pub pending: Option<(OpsType, Value)>,
    /// How many signals the pending event stands for.
    pub pending_count: i32,
}

/// Decides what one signal of a subject emits now, updating its mark. A peer joined or
/// revoked and a rotated key are always emitted; a state (a peer's health) or dead
/// deliveries emit at most once a `window`: the first change emits at once; what follows within the window
/// waits, the latest replacing the earlier (or, for dead deliveries, counted), and is
/// emitted when the window ends ([`flush`]) unless the subject is back where it was last
/// reported. So a flapping peer emits at most two events a window, and an operator always
/// learns its last state.
pub fn coalesce(
    mark: &mut Mark,
    ty: OpsType,
    data: Value,
    now: DateTime<Utc>,
    window: Duration,
) -> Option<(OpsType, Value)> {
    let quiet = mark
        .last_at
        .is_none_or(|at| now - at >= chrono::Duration::from_std(window).unwrap_or_default());
    // A peer joined or revoked and a rotated key are an operator's (or the peer's) acts, each
    // reported: they are not states a subject flaps between.
    if matches!(
        ty,
        OpsType::PeerJoined | OpsType::PeerRevoked | OpsType::IdentityRotated
    ) {
        return Some((ty, data));
    }
    let counted = ty == OpsType::DeliveryDead;
    // A recovery of a subject that never reported trouble, or a state already reported,
    // says nothing new.
    let news = if counted {
        true
    } else if ty == OpsType::PeerRecovered {
        matches!(
            mark.last_type,
            Some(OpsType::PeerDegraded | OpsType::PeerUnreachable)
        )
    } else {
        mark.last_type != Some(ty)
    };
    if quiet && mark.pending.is_none() {
        if !news {
            return None;
        }
        mark.last_type = Some(ty);
        mark.last_at = Some(now);
        mark.pending_count = 0;
        return Some((ty, with_count(data, counted.then_some(1))));
    }
    if counted {
        mark.pending_count += 1;
        mark.pending = Some((ty, data));
    } else if news {
        mark.pending = Some((ty, data));
        mark.pending_count = 1;
    } else {
        // Back where it was last reported: nothing waits.
        mark.pending = None;
        mark.pending_count = 0;
    }
    None
}

/// What a mark emits once its window ended (None: nothing waits, or not yet).
pub fn flush(mark: &mut Mark, now: DateTime<Utc>, window: Duration) -> Option<(OpsType, Value)> {
    let ended = mark
        .last_at
        .is_none_or(|at| now - at >= chrono::Duration::from_std(window).unwrap_or_default());
    if !ended {
        return None;
    }
    let (ty, data) = mark.pending.take()?;
    let count = std::mem::take(&mut mark.pending_count);
    mark.last_type = Some(ty);
    mark.last_at = Some(now);
    Some((
        ty,
        with_count(data, (ty == OpsType::DeliveryDead).then_some(count)),
    ))
}

fn with_count(mut data: Value, count: Option<i32>) -> Value {
    if let (Some(n), Some(o)) = (count, data.as_object_mut()) {
        o.insert("count".into(), json!(n));
    }
    data
}

/// One signal as the triggers wrote it.
struct Signal {
    id: i64,
    team: Option<String>,
    kind: String,
    subject: Option<String>,
    value: String,
    at: DateTime<Utc>,
}

/// An operational event to store.
struct Emission {
    team: String,
    ty: OpsType,
    subject: Option<String>,
    data: Value,
}

/// What one pass of [`Store::emit_operational`] did.
#[derive(Debug, Clone, Default)]
pub struct Emitted {
    /// The events it stored: their team and type.
    pub events: Vec<(String, OpsType)>,
    /// The teams of the changes it folded into an event waiting for its window's end.
    pub coalesced: Vec<String>,
}

/// An operational event due at its team's endpoint (no `Debug`: it holds the secret).
#[derive(Clone)]
pub struct OpsDelivery {
    /// The event's sequence number.
    pub seq: i64,
    /// The team.
    pub team: TeamId,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint's secret.
    pub secret: String,
    /// The event as JSON text.
    pub text: String,
    /// The CloudEvent id.
    pub id: String,
    /// The CloudEvent source.
    pub source: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// What became of an operational delivery's attempt.
#[derive(Debug, Clone)]
pub enum OpsSettle {
    /// The endpoint took it.
    Delivered,
    /// It failed; try again at this time.
    Retry(DateTime<Utc>),
    /// It failed its last attempt.
    Dead,
}

impl Store {
    /// Sets a team's operational endpoint: answers it and, when this made it, its new
    /// secret (a changed URL keeps the secret).
    pub async fn put_operational_endpoint(
        &self,
        team: &str,
        url: &str,
    ) -> Result<(OperationalEndpoint, Option<String>)> {
        let secret = kite_wire::token::mint_federation_token();
        let sealed = self.seal(&secret)?;
        let c = self.conn().await?;
        let row = c
            .query_one(
                "INSERT INTO operational_endpoints (team_id, url, secret) VALUES ($1, $2, $3)
                 ON CONFLICT (team_id) DO UPDATE SET url = EXCLUDED.url,
                     updated_at = CASE WHEN operational_endpoints.url = EXCLUDED.url
                                       THEN operational_endpoints.updated_at ELSE now() END
                 RETURNING xmax = 0",
                &[&team, &url, &sealed],
            )
            .await?;
        let created: bool = row.col(0)?;
        let endpoint = self
            .operational_endpoint(team)
            .await?
            .ok_or_else(|| crate::StoreError::Secret("the endpoint vanished".into()))?;
        Ok((endpoint, created.then_some(secret)))
    }

    /// A team's operational endpoint, with its deliveries' counts.
    pub async fn operational_endpoint(&self, team: &str) -> Result<Option<OperationalEndpoint>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT e.url, e.created_at, e.updated_at,
                        count(*) FILTER (WHERE d.state = 'pending'),
                        count(*) FILTER (WHERE d.state = 'delivered'),
                        count(*) FILTER (WHERE d.state = 'dead'),
                        (SELECT last_error FROM operational_deliveries l
                         WHERE l.team_id = e.team_id ORDER BY l.updated_at DESC LIMIT 1)
                 FROM operational_endpoints e
                 LEFT JOIN operational_deliveries d ON d.team_id = e.team_id
                 WHERE e.team_id = $1
                 GROUP BY e.team_id",
                &[&team],
            )
            .await?;
        row.map(|r| {
            Ok(OperationalEndpoint {
                url: r.col(0)?,
                created_at: r.col(1)?,
                updated_at: r.col(2)?,
                pending: r.col(3)?,
                delivered: r.col(4)?,
                dead: r.col(5)?,
                last_error: r.col(6)?,
            })
        })
        .transpose()
    }

    /// Removes a team's operational endpoint and its deliveries (the events stay on the
    /// stream). Answers whether it had one.
    pub async fn delete_operational_endpoint(&self, team: &str) -> Result<bool> {
        let c = self.conn().await?;
        Ok(c.execute(
            "DELETE FROM operational_endpoints WHERE team_id = $1",
            &[&team],
        )
        .await?
            > 0)
    }

    /// Turns up to `limit` signals into operational events (coalesced per subject over
    /// `window`) and emits what waited for a window that ended, in one transaction. Answers
    /// what it stored and what it folded in.
    pub async fn emit_operational(
        &self,
        instance_id: &str,
        window: Duration,
        limit: i64,
    ) -> Result<Emitted> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // One emitter at a time, whichever process: marks and signals stay in order.
        let r = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext('kite-operational')), now()",
                &[],
            )
            .await?;
        if !r.col::<bool>(0)? {
            return Ok(Emitted::default());
        }
        let now: DateTime<Utc> = r.col(1)?;
        let signals: Vec<Signal> = tx
            .query(
                "SELECT id, team_id, kind, subject, value, at FROM operational_signals
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Signal {
                    id: r.col(0)?,
                    team: r.col(1)?,
                    kind: r.col(2)?,
                    subject: r.col(3)?,
                    value: r.col(4)?,
                    at: r.col(5)?,
                })
            })
            .collect::<Result<_>>()?;
        let peers = peer_facts(&tx, &signals).await?;
        let dead = dead_facts(&tx, &signals).await?;
        let teams: Vec<String> = if signals.iter().any(|s| s.team.is_none()) {
            tx.query("SELECT id FROM teams ORDER BY id", &[])
                .await?
                .iter()
                .map(|r| r.col(0))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        // The signals as events, before coalescing.
        let mut raw: Vec<(String, String, OpsType, Option<String>, Value)> = Vec::new();
        for s in &signals {
            let peer = s.subject.as_deref().and_then(|p| peers.get(p));
            let peer_json = |id: &str| json!({"id": id, "name": peer.map(|p| p.0.as_str())});
            match s.kind.as_str() {
                "health" => {
                    let (Some(team), Some(id)) = (&s.team, &s.subject) else {
                        continue;
                    };
                    let ty = match s.value.as_str() {
                        "degraded" => OpsType::PeerDegraded,
                        "unreachable" => OpsType::PeerUnreachable,
                        "active" => OpsType::PeerRecovered,
                        _ => continue,
                    };
                    let mut data = json!({"peer": peer_json(id), "health": s.value, "at": s.at});
                    if let Some((_, error)) = peer {
                        if ty != OpsType::PeerRecovered {
                            data["last_error"] = json!(error);
                        }
                    }
                    raw.push((
                        team.clone(),
                        format!("peer:{id}:health"),
                        ty,
                        Some(id.clone()),
                        data,
                    ));
                }
                "status" => {
                    let (Some(team), Some(id)) = (&s.team, &s.subject) else {
                        continue;
                    };
                    let (old, new) = s.value.split_once('>').unwrap_or(("", &s.value));
                    let ty = match (old, new) {
                        (_, "revoked") if old != "revoked" => OpsType::PeerRevoked,
                        ("" | "proposed", "accepted" | "active") => OpsType::PeerJoined,
                        _ => continue,
                    };
                    let data = json!({"peer": peer_json(id), "status": new, "at": s.at});
                    raw.push((
                        team.clone(),
                        format!("peer:{id}:status:{}", ty.as_str()),
                        ty,
                        Some(id.clone()),
                        data,
                    ));
                }
                "dead" => {
                    let (Some(team), Some(id)) = (&s.team, &s.subject) else {
                        continue;
                    };
                    let row = dead.get(&s.value);
                    let data = json!({
                        "peer": peer_json(id),
                        "outbox_id": s.value.parse::<i64>().ok(),
                        "event": row.map(|d| json!({"id": d.0, "type": d.1})),
                        "attempts": row.map(|d| d.3),
                        "last_error": row.and_then(|d| d.2.clone()),
                        "at": s.at,
                    });
                    raw.push((
                        team.clone(),
                        format!("peer:{id}:dead"),
                        OpsType::DeliveryDead,
                        Some(id.clone()),
                        data,
                    ));
                }
                "identity" => {
                    for team in &teams {
                        let data =
                            json!({"server_name": instance_id, "key_id": s.value, "at": s.at});
                        raw.push((
                            team.clone(),
                            "identity".into(),
                            OpsType::IdentityRotated,
                            None,
                            data,
                        ));
                    }
                }
                _ => {}
            }
        }
        // Coalesced per subject against the marks, which are locked until commit.
        let keys: Vec<(String, String)> = {
            let mut k: Vec<(String, String)> = raw
                .iter()
                .map(|(t, k, ..)| (t.clone(), k.clone()))
                .collect();
            k.sort();
            k.dedup();
            k
        };
        let mut marks = load_marks(&tx, &keys).await?;
        let mut out: Vec<Emission> = Vec::new();
        let mut touched: Vec<(String, String)> = Vec::new();
        let mut coalesced: Vec<String> = Vec::new();
        for (team, key, ty, subject, data) in raw {
            let mark = marks.entry((team.clone(), key.clone())).or_default();
            let waited = mark.pending.is_some();
            match coalesce(mark, ty, data, now, window) {
                Some((ty, data)) => out.push(Emission {
                    team: team.clone(),
                    ty,
                    subject,
                    data,
                }),
                // A change within the window replaced (or cancelled) what waited.
                None if waited || mark.pending.is_some() => coalesced.push(team.clone()),
                None => {}
            }
            touched.push((team, key));
        }
        // What waited for a window that has ended now.
        let waiting = tx
            .query(
                "SELECT team_id, key, last_type, last_at, pending_type, pending_data, pending_count
                 FROM operational_marks
                 WHERE pending_type IS NOT NULL AND last_at <= $1
                 ORDER BY last_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[
                    &(now - chrono::Duration::from_std(window).unwrap_or_default()),
                    &limit,
                ],
            )
            .await?;
        for r in &waiting {
            let (team, key): (String, String) = (r.col(0)?, r.col(1)?);
            let mark = marks
                .entry((team.clone(), key.clone()))
                .or_insert(mark_of(r)?);
            if let Some((ty, data)) = flush(mark, now, window) {
                let subject = key.split(':').nth(1).map(str::to_string);
                out.push(Emission {
                    team: team.clone(),
                    ty,
                    subject,
                    data,
                });
                touched.push((team, key));
            }
        }
        touched.sort();
        touched.dedup();
        save_marks(&tx, &touched, &marks).await?;
        store_events(&tx, instance_id, &out).await?;
        let ids: Vec<i64> = signals.iter().map(|s| s.id).collect();
        if !ids.is_empty() {
            tx.execute(
                "DELETE FROM operational_signals WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Emitted {
            events: out.into_iter().map(|e| (e.team, e.ty)).collect(),
            coalesced,
        })
    }

    /// What the operational worker has to do now, in one cheap statement (it asks every
    /// poll, mostly to hear "nothing"): (signals to take or coalesced events whose `window`
    /// ended, deliveries due).
    pub async fn operational_due(&self, window: Duration) -> Result<(bool, bool)> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM operational_signals)
                        OR EXISTS (SELECT 1 FROM operational_marks
                                   WHERE pending_type IS NOT NULL
                                     AND last_at <= now() - make_interval(secs => $1::float8)),
                        EXISTS (SELECT 1 FROM operational_deliveries
                                WHERE state = 'pending' AND next_attempt_at <= now())",
            )
            .await?;
        let r = c.query_one(&st, &[&window.as_secs_f64()]).await?;
        Ok((r.col(0)?, r.col(1)?))
    }

    /// Claims up to `limit` operational deliveries that are due, at most `per_team` of a
    /// team and none of the teams in `busy` (so that one team's slow endpoint cannot take
    /// every send), not due again for `lease` (so no other process sends them meanwhile).
    pub async fn claim_operational(
        &self,
        limit: i64,
        per_team: i64,
        busy: &[String],
        lease: Duration,
    ) -> Result<Vec<OpsDelivery>> {
        let c = self.conn().await?;
        let lease_ms = lease.as_millis() as f64;
        let rows = c
            .query(
                "WITH ranked AS (
                    SELECT event_seq, next_attempt_at,
                           row_number() OVER (PARTITION BY team_id ORDER BY next_attempt_at) AS rn
                    FROM operational_deliveries
                    WHERE state = 'pending' AND next_attempt_at <= now()
                      AND NOT (team_id = ANY($3))),
                 due AS (
                    SELECT d.event_seq FROM operational_deliveries d
                    JOIN ranked r ON r.event_seq = d.event_seq
                    WHERE r.rn <= $4 AND d.state = 'pending' AND d.next_attempt_at <= now()
                    ORDER BY r.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED),
                 claimed AS (
                    UPDATE operational_deliveries d
                    SET next_attempt_at = now() + make_interval(secs => $2::float8 / 1000), updated_at = now()
                    FROM due WHERE d.event_seq = due.event_seq
                    RETURNING d.event_seq, d.team_id, d.attempts)
                 SELECT c.event_seq, c.team_id, c.attempts, oe.url, oe.secret, e.event::text,
                        e.ce_id, e.ce_source, e.trace_parent, e.trace_state
                 FROM claimed c
                 JOIN operational_endpoints oe ON oe.team_id = c.team_id
                 JOIN events e ON e.seq = c.event_seq
                 ORDER BY c.event_seq",
                &[&limit, &lease_ms, &busy, &per_team],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.col(5)?;
                let trace = crate::events::trace_columns(r, 8);
                let text = match trace {
                    Some(t) => kite_wire::fed::splice(&text, &t.members()).unwrap_or(text),
                    None => text,
                };
                Ok(OpsDelivery {
                    seq: r.col(0)?,
                    team: r.col(1)?,
                    attempts: r.col(2)?,
                    url: r.col(3)?,
                    secret: self.open(&r.col::<String>(4)?)?,
                    text,
                    id: r.col(6)?,
                    source: r.col(7)?,
                })
            })
            .collect()
    }

    /// Records an operational delivery's attempt.
    pub async fn settle_operational(
        &self,
        seq: i64,
        settle: &OpsSettle,
        status: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        let (state, next) = match settle {
            OpsSettle::Delivered => ("delivered", None),
            OpsSettle::Retry(at) => ("pending", Some(*at)),
            OpsSettle::Dead => ("dead", None),
        };
        let c = self.conn().await?;
        c.execute(
            "UPDATE operational_deliveries SET state = $2, attempts = attempts + 1,
                 next_attempt_at = COALESCE($3, next_attempt_at), last_status = $4,
                 last_error = $5, updated_at = now()
             WHERE event_seq = $1",
            &[&seq, &state, &next, &status, &error],
        )
        .await?;
        Ok(())
    }
}

/// The peers signals name: their name and last error, by id.
async fn peer_facts(
    tx: &deadpool_postgres::Transaction<'_>,
    signals: &[Signal],
) -> Result<HashMap<String, (String, Option<String>)>> {
    let ids: Vec<uuid::Uuid> = signals
        .iter()
        .filter_map(|s| s.subject.as_deref()?.parse().ok())
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    tx.query(
        "SELECT id::text, name, last_error FROM peers WHERE id = ANY($1)",
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| Ok((r.col(0)?, (r.col(1)?, r.col(2)?))))
    .collect()
}

/// The dead rows signals name: their event's id and type, last error and attempts.
async fn dead_facts(
    tx: &deadpool_postgres::Transaction<'_>,
    signals: &[Signal],
) -> Result<HashMap<String, (String, String, Option<String>, i32)>> {
    let ids: Vec<i64> = signals
        .iter()
        .filter(|s| s.kind == "dead")
        .filter_map(|s| s.value.parse().ok())
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    tx.query(
        "SELECT o.id::text, e.ce_id, e.ce_type, o.last_error, o.attempts
         FROM outbox o JOIN events e ON e.seq = o.event_seq WHERE o.id = ANY($1)",
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| Ok((r.col(0)?, (r.col(1)?, r.col(2)?, r.col(3)?, r.col(4)?))))
    .collect()
}

fn mark_of(r: &tokio_postgres::Row) -> Result<Mark> {
    let last_type: Option<String> = r.col(2)?;
    let pending_type: Option<String> = r.col(4)?;
    let pending_data: Option<Value> = r.col(5)?;
    Ok(Mark {
        last_type: last_type.as_deref().and_then(OpsType::parse),
        last_at: Some(r.col(3)?),
        pending: pending_type
            .as_deref()
            .and_then(OpsType::parse)
            .map(|t| (t, pending_data.unwrap_or(Value::Null))),
        pending_count: r.col(6)?,
    })
}

/// The marks of `keys`, locked until the transaction ends.
async fn load_marks(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), Mark>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let teams: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let rows = tx
        .query(
            "SELECT m.team_id, m.key, m.last_type, m.last_at, m.pending_type, m.pending_data,
                    m.pending_count
             FROM operational_marks m
             JOIN UNNEST($1::text[], $2::text[]) AS u(t, k) ON m.team_id = u.t AND m.key = u.k
             ORDER BY m.team_id, m.key FOR UPDATE OF m",
            &[&teams, &names],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(((r.col(0)?, r.col(1)?), mark_of(r)?)))
        .collect()
}

/// Writes the marks of `keys` (of teams that still exist).
async fn save_marks(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &[(String, String)],
    marks: &HashMap<(String, String), Mark>,
) -> Result<()> {
    let rows: Vec<(&(String, String), &Mark)> = keys
        .iter()
        .filter_map(|k| marks.get(k).map(|m| (k, m)))
        .filter(|(_, m)| m.last_at.is_some() || m.pending.is_some())
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let teams: Vec<&str> = rows.iter().map(|((t, _), _)| t.as_str()).collect();
    let names: Vec<&str> = rows.iter().map(|((_, k), _)| k.as_str()).collect();
    let last_types: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, m)| m.last_type.map(OpsType::as_str))
        .collect();
    // A mark that only waits (its subject never emitted) starts its window now.
    let last_ats: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, m)| m.last_at).collect();
    let pending_types: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, m)| m.pending.as_ref().map(|(t, _)| t.as_str()))
        .collect();
    let pending_data: Vec<Option<String>> = rows
        .iter()
        .map(|(_, m)| m.pending.as_ref().map(|(_, d)| d.to_string()))
        .collect();
    let counts: Vec<i32> = rows.iter().map(|(_, m)| m.pending_count).collect();
    tx.execute(
        "INSERT INTO operational_marks (team_id, key, last_type, last_at, pending_type,
                                        pending_data, pending_count)
         SELECT t, k, lt, COALESCE(la, now()), pt, pd::jsonb, n
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::int[]) AS u(t, k, lt, la, pt, pd, n)
         WHERE EXISTS (SELECT 1 FROM teams WHERE id = u.t)
         ON CONFLICT (team_id, key) DO UPDATE SET last_type = EXCLUDED.last_type,
             last_at = EXCLUDED.last_at, pending_type = EXCLUDED.pending_type,
             pending_data = EXCLUDED.pending_data, pending_count = EXCLUDED.pending_count",
        &[
            &teams,
            &names,
            &last_types,
            &last_ats,
            &pending_types,
            &pending_data,
            &counts,
        ],
    )
    .await?;
    Ok(())
}

/// Stores operational events as their teams' events (routed: no peer gets them), each with
/// a delivery to its team's operational endpoint if it has one.
async fn store_events(
    tx: &deadpool_postgres::Transaction<'_>,
    instance_id: &str,
    out: &[Emission],
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let source = format!("/kite/{instance_id}");
    let mut teams = Vec::with_capacity(out.len());
    let mut ids = Vec::with_capacity(out.len());
    let mut types = Vec::with_capacity(out.len());
    let mut texts = Vec::with_capacity(out.len());
    let mut traces = Vec::with_capacity(out.len());
    for e in out {
        let id = uuid::Uuid::now_v7().to_string();
        let mut ev = json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": e.ty.as_str(),
            "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "datacontenttype": "application/json",
            "data": e.data,
        });
        if let Some(s) = &e.subject {
            ev["subject"] = json!(s);
        }
        teams.push(e.team.as_str());
        ids.push(id);
        types.push(e.ty.as_str());
        texts.push(ev.to_string());
        traces.push(kite_wire::trace::TraceContext::root().traceparent());
    }
    tx.execute(
        "WITH locks AS (
                SELECT pg_advisory_xact_lock(hashtext('kite-stream:' || t))
                FROM (SELECT DISTINCT t FROM UNNEST($1::text[]) AS u(t) ORDER BY t) ordered),
             ins AS (
                INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event,
                                    trace_parent, routed_at)
                SELECT t, $2, i, $3, ty, e::json, tp, now()
                FROM UNNEST($1::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                     WITH ORDINALITY AS u(t, i, ty, e, tp, pos)
                WHERE (SELECT count(*) FROM locks) >= 0
                  AND EXISTS (SELECT 1 FROM teams WHERE id = u.t)
                ORDER BY pos
                RETURNING seq, team_id)
             INSERT INTO operational_deliveries (event_seq, team_id)
             SELECT ins.seq, ins.team_id FROM ins
             JOIN operational_endpoints oe ON oe.team_id = ins.team_id",
        &[&teams, &source, &HOOK_SOURCE, &ids, &types, &texts, &traces],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn a_flapping_peer_emits_at_most_twice_a_window_and_ends_on_its_last_state() {
        let mut m = Mark::default();
        // Nothing to recover from yet.
        assert_eq!(
            coalesce(&mut m, OpsType::PeerRecovered, json!({}), at(0), W),
            None
        );
        let first = coalesce(&mut m, OpsType::PeerDegraded, json!({}), at(1), W);
        assert_eq!(first.map(|e| e.0), Some(OpsType::PeerDegraded));
        let mut emitted = 1;
        for i in 0..100 {
            let ty = if i % 2 == 0 {
                OpsType::PeerRecovered
            } else {
                OpsType::PeerDegraded
            };
            emitted += coalesce(&mut m, ty, json!({}), at(2 + i / 10), W).is_some() as usize;
        }
        // The last flap was `degraded`: what was reported; nothing waits.
        assert_eq!(emitted, 1);
        assert_eq!(flush(&mut m, at(61), W), None);
        assert_eq!(
            coalesce(&mut m, OpsType::PeerRecovered, json!({}), at(30), W),
            None
        );
        assert_eq!(flush(&mut m, at(59), W), None, "the window has not ended");
        assert_eq!(
            flush(&mut m, at(61), W).map(|e| e.0),
            Some(OpsType::PeerRecovered)
        );
        // Quiet for a window: the next change goes at once.
        let next = coalesce(&mut m, OpsType::PeerUnreachable, json!({}), at(200), W);
        assert_eq!(next.map(|e| e.0), Some(OpsType::PeerUnreachable));
    }

    #[test]
    fn acts_are_each_reported() {
        let mut m = Mark::default();
        for i in 0..3 {
            let e = coalesce(&mut m, OpsType::IdentityRotated, json!({}), at(i), W);
            assert_eq!(e.map(|e| e.0), Some(OpsType::IdentityRotated));
        }
    }

    #[test]
    fn dead_deliveries_are_counted_within_a_window() {
        let mut m = Mark::default();
        let one = coalesce(
            &mut m,
            OpsType::DeliveryDead,
            json!({"outbox_id": 1}),
            at(0),
            W,
        );
        assert_eq!(one.map(|e| e.1["count"].clone()), Some(json!(1)));
        for i in 2..=500 {
            assert_eq!(
                coalesce(
                    &mut m,
                    OpsType::DeliveryDead,
                    json!({"outbox_id": i}),
                    at(1),
                    W
                ),
                None
            );
        }
        let rest = flush(&mut m, at(60), W).expect("the rest at the window's end");
        assert_eq!(rest.1["count"], 499);
        assert_eq!(rest.1["outbox_id"], 500);
        assert_eq!(flush(&mut m, at(200), W), None);
    }
}
