//! Read-only listings, `/api/federation/outbox` and `/api/events` (filtered, with cursors;
//! an unknown filter is a 400, never ignored), and every event's story
//! (`GET /api/events/{id}`).

use kite_wire::Code;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kite_store::events::EventQuery;
use kite_store::peers::Peer;
use kite_store::story::{AttemptEntry, StoryRow};
use kite_store::types::{PeerHealth, SkipReason};
use kite_wire::ids::PeerId;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::*;

/// A listing's query string, every name checked against the filters the route documents
/// (its [`IntoParams`] type), so the OpenAPI document and the check never disagree.
struct Filters(HashMap<String, String>);

/// The query parameter names a listing documents.
fn names<P: IntoParams>() -> Vec<String> {
    P::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect()
}

impl Filters {
    fn read<P: IntoParams>(
        q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Self, ApiErr> {
        let Query(q) =
            q.map_err(|e| ApiErr(ApiError::new(Code::ValidationError, e.body_text())))?;
        let known = names::<P>();
        if let Some(unknown) = q.keys().find(|k| !known.contains(k)) {
            return Err(ApiErr(
                ApiError::new(
                    Code::UnknownFilter,
                    format!(
                        "unknown filter {unknown:?}: this listing takes {}",
                        known.join(", ")
                    ),
                )
                .with("field", json!(unknown)),
            ));
        }
        Ok(Self(q))
    }

    fn text(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }

    fn int(&self, k: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiErr> {
        query_int(k, self.0.get(k).map(String::as_str), lo, hi)
    }

    fn time(&self, k: &str) -> Result<Option<DateTime<Utc>>, ApiErr> {
        self.text(k)
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiErr(ApiError::validation(
                            k,
                            format!("{k} must be an RFC 3339 time"),
                        ))
                    })
            })
            .transpose()
    }
}

/// The filters of `GET /api/federation/outbox`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct OutboxParams {
    /// Rows of the peer of this name (or server name).
    peer: Option<String>,
    /// Rows of the peer of this id.
    peer_id: Option<Uuid>,
    /// Rows in this state.
    status: Option<OutboxState>,
    /// The same as `status`.
    state: Option<OutboxState>,
    /// Rows of events of this type.
    r#type: Option<String>,
    /// Rows of events that came in on this source.
    source: Option<String>,
    /// Rows made at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Rows made before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    #[param(minimum = 0)]
    cursor: Option<i64>,
    /// The most rows in the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/federation/outbox", tag = "events",
    summary = "Outbox rows (one per event and peer), filtered, with a cursor (read key)",
    params(OutboxParams),
    responses((status = 200, description = "A page of rows", body = Page<kite_store::outbox::OutboxEntry>)))]
pub(super) async fn list_outbox(
    State(st): St,
    Key(g, _): Key<act::ListOutbox>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let f = Filters::read::<OutboxParams>(q)?;
    let mut peer_id = match f.text("peer_id") {
        None => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map(PeerId)
                .map_err(|_| ApiErr(ApiError::validation("peer_id", "peer_id must be a UUID")))?,
        ),
    };
    if let Some(name) = f.text("peer") {
        let peers = st.store.list_peers(&g.team_id).await?;
        let p = peers
            .iter()
            .find(|p| p.name == name || p.server_name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| {
                ApiErr(ApiError::validation(
                    "peer",
                    format!("no peer named {name:?}"),
                ))
            })?;
        peer_id = Some(p.id);
    }
    let status = match f.text("status").or_else(|| f.text("state")) {
        Some(s) => Some(OutboxState::parse(&s).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "status",
                format!("status must be one of {}", one_of(OutboxState::ALL)),
            ))
        })?),
        None => None,
    };
    let query = OutboxQuery {
        peer_id,
        status,
        event_type: f.text("type"),
        source: f.text("source"),
        since: f.time("since")?,
        until: f.time("until")?,
        limit: f.int("limit", 1, 1000)?.unwrap_or(100),
        cursor: f.int("cursor", 0, i64::MAX)?,
    };
    let (items, next) = st.store.list_outbox(&g.team_id, &query).await?;
    Ok(Json(Page {
        items,
        next_cursor: next,
    })
    .into_response())
}

/// The filters of `GET /api/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct EventParams {
    /// Events after this sequence number.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// The `next_cursor` of the previous page (the same as `after`).
    #[param(minimum = 0)]
    cursor: Option<i64>,
    /// The most events in the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Events of this type.
    r#type: Option<String>,
    /// Events that came in on this source.
    source: Option<String>,
    /// Events received at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Events received before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/events", tag = "events",
    summary = "Stored events in order, filtered, with a cursor (read key)",
    params(EventParams),
    responses((status = 200, description = "A page of events", body = Page<EventItem>)))]
pub(super) async fn list_events(
    State(st): St,
    Key(g, _): Key<act::ListEvents>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let f = Filters::read::<EventParams>(q)?;
    let after = match f.int("after", 0, i64::MAX)? {
        Some(a) => a,
        None => f.int("cursor", 0, i64::MAX)?.unwrap_or(0),
    };
    let query = EventQuery {
        after,
        limit: f.int("limit", 1, 1000)?.unwrap_or(100),
        event_type: f.text("type"),
        source: f.text("source"),
        since: f.time("since")?,
        until: f.time("until")?,
    };
    let events = st.store.list_events(&g.team_id, &query).await?;
    let next = (events.len() as i64 == query.limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    // The stored text goes out as it is, never parsed; a row that cannot be read is logged
    // and left out of the page.
    let items: Vec<EventItem> = events.into_iter().filter_map(EventItem::of).collect();
    Ok(Json(Page {
        items,
        next_cursor: next,
    })
    .into_response())
}

/// One event of `GET /api/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventItem {
    /// Its sequence number on this instance (the listing's cursor).
    seq: i64,
    /// The source it came in on (`kite` for peers).
    source: String,
    /// When it was stored.
    received_at: DateTime<Utc>,
    /// The structured CloudEvent, its `data` byte for byte as received.
    #[schema(value_type = Object)]
    event: Box<RawValue>,
}

impl EventItem {
    fn of(e: kite_store::events::StoredEvent) -> Option<Self> {
        let raw = e
            .text(false)
            .and_then(|t| RawValue::from_string(t).map_err(|err| err.to_string()));
        match raw {
            Ok(event) => Some(EventItem {
                seq: e.seq,
                source: e.hook_source,
                received_at: e.received_at,
                event,
            }),
            Err(why) => {
                tracing::warn!(seq = e.seq, error = %why, "an event that cannot be read is left out");
                None
            }
        }
    }
}

/// `GET /api/events/{id}`: the event and, for every peer of its team, what happened to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Story {
    /// The event.
    #[serde(flatten)]
    event: EventItem,
    /// One entry a peer (and one for each row of a peer deleted since).
    deliveries: Vec<PeerStory>,
}

/// What happened to an event for one peer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PeerStory {
    /// The peer's id.
    peer_id: PeerId,
    /// The peer's name (None: it was deleted since).
    peer: Option<String>,
    /// What became of the event for this peer.
    outcome: StoryOutcome,
    /// Why: `max_hops` or `loop` (skipped), `paused` or `parked` (waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<StoryReason>,
    /// The peer's scopes (`no_match`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<String>>,
    /// When it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<DateTime<Utc>>,
    /// Every attempt: time, outcome (`delivered`, `failed`, `refused`, `error`, `gone`,
    /// `revoked`), status code, error, duration.
    attempts: Vec<AttemptEntry>,
}

/// What became of an event for one peer, as its story tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum StoryOutcome {
    /// The peer's scopes do not cover the event's type.
    NoMatch,
    /// The peer was added after the event, or is not taking events.
    NotRouted,
    /// Routing skipped the peer (see the reason).
    Skipped,
    /// Its row waits for the peer (paused or parked).
    Waiting,
    /// Its row waits for (another) attempt.
    Pending,
    /// The peer took it.
    Delivered,
    /// Every attempt failed.
    Dead,
    /// Its peer was deleted or revoked before it went out.
    Cancelled,
}

/// Why an event's story for a peer is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum StoryReason {
    /// Skipped: the event had made the peer's `max_hops` hops.
    MaxHops,
    /// Skipped: the peer already forwarded the event.
    Loop,
    /// Waiting: the peer is paused.
    Paused,
    /// Waiting: the peer is unreachable and its deliveries are parked.
    Parked,
}

impl From<SkipReason> for StoryReason {
    fn from(r: SkipReason) -> Self {
        match r {
            SkipReason::MaxHops => StoryReason::MaxHops,
            SkipReason::Loop => StoryReason::Loop,
        }
    }
}

/// The filter of `GET /api/events/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct StoryParams {
    /// With a CloudEvent id: the source it came in on (ids are unique per source).
    source: Option<String>,
}

#[utoipa::path(get, path = "/api/events/{id}", tag = "events",
    summary = "One event and its story: for every peer, what happened to it (read key)",
    params(("id" = String, Path, description = "The event's sequence number or CloudEvent id"), StoryParams),
    responses((status = 200, description = "The event and its story", body = Story)))]
pub(super) async fn show_event(
    State(st): St,
    Key(g, _): Key<act::ShowEvent>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let f = Filters::read::<StoryParams>(q)?;
    let not_found = || ApiErr(ApiError::not_found(format!("no event {id:?}")));
    let seq = st
        .store
        .find_event(&g.team_id, &id, f.text("source").as_deref())
        .await?
        .ok_or_else(not_found)?;
    let (event, rows) = st
        .store
        .event_story(&g.team_id, seq)
        .await?
        .ok_or_else(not_found)?;
    let peers = st.store.list_peers(&g.team_id).await?;
    let received_at = event.received_at;
    let event = EventItem::of(event).ok_or_else(|| ApiErr(ApiError::internal()))?;
    let mut deliveries: Vec<PeerStory> = peers
        .iter()
        .map(|p| {
            let row = rows.iter().find(|r| r.peer_id == p.id);
            story_of(Some(p), row, received_at)
        })
        .collect();
    deliveries.extend(
        rows.iter()
            .filter(|r| !peers.iter().any(|p| p.id == r.peer_id))
            .map(|r| story_of(None, Some(r), received_at)),
    );
    Ok(Json(Story { event, deliveries }).into_response())
}

fn story_of(peer: Option<&Peer>, row: Option<&StoryRow>, received_at: DateTime<Utc>) -> PeerStory {
    let mut s = PeerStory {
        peer_id: peer
            .map(|p| p.id)
            .or(row.map(|r| r.peer_id))
            .unwrap_or_default(),
        peer: peer.map(|p| p.name.clone()),
        outcome: StoryOutcome::NoMatch,
        reason: None,
        scopes: None,
        delivered_at: row.and_then(|r| r.delivered_at),
        attempts: row.map(|r| r.attempts.clone()).unwrap_or_default(),
    };
    match (peer, row) {
        (Some(p), None) => {
            if p.created_at > received_at || !p.status.routes() {
                s.outcome = StoryOutcome::NotRouted;
            } else {
                s.scopes = Some(p.scopes.clone());
            }
        }
        (_, Some(r)) => {
            use StoryOutcome as O;
            (s.outcome, s.reason) = match r.state {
                OutboxState::Skipped => (O::Skipped, r.reason.map(StoryReason::from)),
                OutboxState::Pending => match peer {
                    Some(p) if p.status == PeerStatus::Paused => {
                        (O::Waiting, Some(StoryReason::Paused))
                    }
                    Some(p) if p.health == PeerHealth::Unreachable => {
                        (O::Waiting, Some(StoryReason::Parked))
                    }
                    _ => (O::Pending, None),
                },
                OutboxState::Delivered => (O::Delivered, None),
                OutboxState::Dead => (O::Dead, None),
                OutboxState::Cancelled => (O::Cancelled, None),
            };
        }
        (None, None) => {}
    }
    s
}
