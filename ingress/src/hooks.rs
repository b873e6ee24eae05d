//! `POST /hooks/{team}/{source}`: webhooks and federated events in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use kite_protocol::event::{build_event, validate_source_name, FEDERATION_SOURCE, MAX_BODY_BYTES};
use kite_protocol::{signature, ApiError};
use kite_store::events::{InsertOutcome, NewEvent};
use serde_json::{json, Value};

use crate::{ApiErr, AppState};

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(crate) fn body_or_413(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Bytes, ApiErr> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiErr(ApiError::payload_too_large(max))
        } else {
            ApiErr(ApiError::bad_request("invalid_body", r.body_text()))
        }
    })
}

pub(crate) async fn receive(
    State(st): State<Arc<AppState>>,
    Path((team, source)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body_or_413(body, MAX_BODY_BYTES)?;
    validate_source_name(&source)?;
    if !st.team_known(&team).await? {
        return Err(ApiErr(ApiError::new(
            404,
            "team_not_found",
            format!("no team {team:?}"),
        )));
    }
    let federated = source == FEDERATION_SOURCE;
    if federated {
        let token = bearer(&headers).ok_or_else(|| {
            ApiErr(ApiError::new(
                401,
                "unknown_sender",
                "a bearer token is required",
            ))
        })?;
        let senders = st.senders.get().await?;
        let sender = senders.find(&team, token).ok_or_else(|| {
            ApiErr(ApiError::new(
                401,
                "unknown_sender",
                "the bearer token is not a trusted sender's",
            ))
        })?;
        let sig = headers
            .get(signature::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !signature::verify(&sender.inbound_token, &body, sig) {
            return Err(ApiErr(ApiError::new(
                401,
                "invalid_signature",
                "X-Kite-Signature is missing or does not match the body",
            )));
        }
    }
    let incoming = build_event(&team, &source, &headers, &body, Utc::now())?;
    if federated && incoming.fed.visited(&st.cfg.instance_id) {
        tracing::debug!(id = %incoming.id, "dropping federated event that already passed here");
        return Ok((
            StatusCode::OK,
            Json(json!({"status":"loop_ignored","id": incoming.id})),
        )
            .into_response());
    }
    let id = incoming.id.clone();
    let outcome = st
        .ingest
        .submit(NewEvent {
            team_id: team,
            ce_source: incoming.source,
            ce_id: incoming.id,
            hook_source: source,
            ce_type: incoming.ty,
            event: Value::Object(incoming.event),
        })
        .await?;
    Ok(match outcome {
        InsertOutcome::Inserted { seq, received_at } => (
            StatusCode::ACCEPTED,
            Json(json!({"status":"accepted","id": id,"seq": seq,"created_at": received_at})),
        )
            .into_response(),
        InsertOutcome::Duplicate => (
            StatusCode::OK,
            Json(json!({"status":"duplicate_ignored","id": id})),
        )
            .into_response(),
    })
}
