//! Read-only listings, `/api/federation/outbox` and `/api/events` (filtered, with cursors;
//! an unknown filter is a 400, never ignored), and every event's story
//! (`GET /api/events/{id}`).

use kite_wire::Code;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kite_store::events::EventQuery;
use kite_store::peers::Peer;
use kite_store::story::StoryRow;
use kite_store::types::PeerHealth;
use kite_wire::ids::PeerId;
use utoipa::IntoParams;

use super::*;
use kite_api::events::{
    EventItem, EventParams, PeerStory, Story, StoryOutcome, StoryParams, StoryReason,
};
use kite_api::outbox::OutboxParams;

/// A listing's query string, every name checked against the filters the route documents
/// (its [`IntoParams`] type), so the OpenAPI document and the check never disagree.
pub(super) struct Filters(HashMap<String, String>);

/// The query parameter names a listing documents.
fn names<P: IntoParams>() -> Vec<String> {
    P::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect()
}

impl Filters {
    pub(super) fn read<P: IntoParams>(
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

    pub(super) fn text(&self, k: &str) -> Option<String> {
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
        peer_id = Some(peer_named(&st, &g.team_id, &name).await?);
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

/// The id of the team's peer of this name (or server name); 400 naming `peer` if none.
pub(super) async fn peer_named(st: &AppState, team_id: &str, name: &str) -> Result<PeerId, ApiErr> {
    let peers = st.store.list_peers(team_id).await?;
    peers
        .iter()
        .find(|p| p.name == name || p.server_name.as_deref() == Some(name))
        .map(|p| p.id)
        .ok_or_else(|| {
            ApiErr(ApiError::validation(
                "peer",
                format!("no peer named {name:?}"),
            ))
        })
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
    let items: Vec<EventItem> = events.into_iter().filter_map(event_item).collect();
    Ok(Json(Page {
        items,
        next_cursor: next,
    })
    .into_response())
}

fn event_item(e: kite_store::events::StoredEvent) -> Option<EventItem> {
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
    // What routing decided on: the type, and the attributes its filters read.
    let (ce_type, text, fed) = (
        event.ce_type.clone(),
        event.rest.clone().ok(),
        event.fed.clone(),
    );
    let mut attrs = kite_route::rules::facts(text.as_deref(), &fed);
    let event = event_item(event).ok_or_else(|| ApiErr(ApiError::internal()))?;
    let mut deliveries: Vec<PeerStory> = peers
        .iter()
        .map(|p| {
            let row = rows.iter().find(|r| r.peer_id == p.id);
            story_of(Some(p), row, received_at, (&ce_type, &mut attrs))
        })
        .collect();
    deliveries.extend(
        rows.iter()
            .filter(|r| !peers.iter().any(|p| p.id == r.peer_id))
            .map(|r| story_of(None, Some(r), received_at, (&ce_type, &mut attrs))),
    );
    Ok(Json(Story { event, deliveries }).into_response())
}

fn story_of(
    peer: Option<&Peer>,
    row: Option<&StoryRow>,
    received_at: DateTime<Utc>,
    (ce_type, attrs): (&str, &mut kite_api::filters::Facts<'_>),
) -> PeerStory {
    let mut s = PeerStory {
        peer_id: peer
            .map(|p| p.id)
            .or(row.map(|r| r.peer_id))
            .unwrap_or_default(),
        outbox_id: row.map(|r| r.id),
        peer: peer.map(|p| p.name.clone()),
        outcome: StoryOutcome::NoMatch,
        reason: None,
        scopes: None,
        filter: None,
        filter_error: None,
        delivered_at: row.and_then(|r| r.delivered_at),
        peer_answer: row.and_then(|r| r.peer_answer),
        attempts: row.map(|r| r.attempts.clone()).unwrap_or_default(),
        actions: row.map(|r| r.actions.clone()).unwrap_or_default(),
    };
    match (peer, row) {
        (Some(p), None) => {
            if p.created_at > received_at || !p.status.routes() {
                s.outcome = StoryOutcome::NotRouted;
            } else {
                // Its type in the scopes, the filters kept the event from the peer: say which.
                let in_scope = !p.filters.is_empty()
                    && kite_wire::scope::ScopeSet::compile(&p.scopes)
                        .is_ok_and(|set| set.matches(ce_type));
                if in_scope {
                    let miss = kite_api::filters::first_mismatch(&p.filters, attrs);
                    s.reason = miss.as_ref().map(|_| StoryReason::Filters);
                    s.filter = miss.as_ref().and_then(|m| p.filters.get(m.at).cloned());
                    s.filter_error = miss.and_then(|m| m.error);
                }
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
