//! Read-only listings: `/api/federation/outbox` and `/api/events`.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct OutboxParams {
    peer_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub(super) async fn list_outbox(
    State(st): St,
    AdminKey(g): AdminKey,
    q: Result<Query<OutboxParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let Query(q) =
        q.map_err(|e| ApiErr(ApiError::bad_request("validation_error", e.body_text())))?;
    let peer_id = match q.peer_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map_err(|_| ApiErr(ApiError::validation("peer_id", "peer_id must be a UUID")))?,
        ),
    };
    let status = match q.status {
        Some(s) if !s.is_empty() => Some(OutboxState::parse(&s).ok_or_else(|| {
            ApiErr(ApiError::validation(
                "status",
                format!("status must be one of {}", one_of(OutboxState::ALL)),
            ))
        })?),
        _ => None,
    };
    let query = OutboxQuery {
        peer_id,
        status,
        limit: query_int("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(100),
        cursor: query_int("cursor", q.cursor.as_deref(), 0, i64::MAX)?,
    };
    let (items, next) = st.store.list_outbox(&g.team_id, &query).await?;
    Ok(Json(Page {
        items,
        next_cursor: next,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct EventParams {
    after: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_events(
    State(st): St,
    ReadKey(g): ReadKey,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiErr> {
    let Query(q) =
        q.map_err(|e| ApiErr(ApiError::bad_request("validation_error", e.body_text())))?;
    let after = query_int("after", q.after.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let limit = query_int("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(100);
    let events = st.store.events_after(&g.team_id, after, limit).await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    // The stored text goes out as it is, never parsed; a row that cannot be read is logged
    // and left out of the page.
    let items: Vec<EventItem> = events
        .into_iter()
        .filter_map(|e| {
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
                    tracing::warn!(seq = e.seq, error = %why, "event listing skips an event it cannot read");
                    None
                }
            }
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: next,
    })
    .into_response())
}

/// One event of `GET /api/events`.
#[derive(Debug, Serialize)]
struct EventItem {
    seq: i64,
    source: String,
    received_at: chrono::DateTime<chrono::Utc>,
    event: Box<RawValue>,
}
