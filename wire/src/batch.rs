//! Batched transactions between kite instances: one signed POST to `/hooks/{team}/kite`
//! carrying many forwarded events, as a JSON array (CloudEvents' batched mode,
//! `application/cloudevents-batch+json`), answered with one result per event.
//!
//! A receiver offers batches with [`OFFER_HEADER`] on its 2xx answers to federated events;
//! a sender batches only to a peer that offered, so a Kite peer (one event per POST) never
//! sees one. Each event in a batch is exactly what a single POST would carry, and is
//! checked, stored and answered on its own: one bad event never fails the others.

use crate::Code;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ErrorDetail;
use crate::ApiError;

/// The content type of a batch.
pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// The response header by which a receiver offers batches: the most events it takes in one.
pub const OFFER_HEADER: &str = "x-kite-batch";

/// The most events one batch carries (its bytes are bounded by the one-event body limit).
pub const MAX_EVENTS: usize = 64;

/// The answer to a batch (HTTP 200): one result per event, in the batch's order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// What became of each event.
    pub results: Vec<ItemResult>,
}

/// What a receiver did with one event: a single POST's answer, or one result of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookStatus {
    /// Stored (202 for a single POST).
    Accepted,
    /// Held already: taken before, not stored again (200).
    DuplicateIgnored,
    /// It came back to where it started (200).
    LoopIgnored,
    /// Refused (the error's status).
    Rejected,
    /// A status this version does not know (read from a newer peer): treated as refused.
    #[serde(other)]
    Unknown,
}

impl HookStatus {
    /// The `outcome` label of `kite_ingest_total` for an event with this answer.
    pub fn outcome(self) -> &'static str {
        match self {
            HookStatus::Accepted => "accepted",
            HookStatus::DuplicateIgnored => "duplicate",
            HookStatus::LoopIgnored => "loop",
            HookStatus::Rejected | HookStatus::Unknown => "rejected",
        }
    }
}

/// What became of one event of a batch: what a single POST of it would have answered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemResult {
    /// `accepted`, `duplicate_ignored`, `loop_ignored` (a single POST's 2xx answers) or
    /// `rejected` (its error).
    pub status: HookStatus,
    /// The CloudEvent id, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its sequence number on the receiver (`accepted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// When it was stored (`accepted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// The HTTP status a single POST of the event would have got (`rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it was refused (`rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl ItemResult {
    /// The result of an event refused with `e`.
    pub fn rejected(id: Option<String>, e: &ApiError) -> Self {
        Self {
            status: HookStatus::Rejected,
            id,
            seq: None,
            created_at: None,
            http_status: Some(e.status),
            error: Some(ErrorDetail {
                code: e.code.to_string(),
                message: e.message.clone(),
                extra: e.extra.clone(),
            }),
        }
    }

    /// The HTTP status a single POST of this event would have got, and its error code.
    pub fn as_single(&self) -> (u16, Option<&str>) {
        match self.status {
            HookStatus::Accepted => (202, None),
            HookStatus::DuplicateIgnored | HookStatus::LoopIgnored => (200, None),
            HookStatus::Rejected | HookStatus::Unknown => (
                self.http_status.unwrap_or(400),
                self.error.as_ref().map(|e| e.code.as_str()),
            ),
        }
    }
}

/// True when a request's content type says it is a batch.
pub fn is_batch(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The batch size a peer's answer offers, if it offers batches of two events or more
/// (capped at [`MAX_EVENTS`]).
pub fn offered(headers: &http::HeaderMap) -> Option<usize> {
    let n: usize = headers
        .get(OFFER_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (n >= 2).then_some(n.min(MAX_EVENTS))
}

/// The events of a batch body, each as its own bytes in the body (kept byte for byte).
/// Refuses anything but a JSON array of 1..=`max` values; each is then checked as an
/// event on its own.
pub fn split(body: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidBatch,
            format!("a batch is a JSON array of CloudEvents: {e}"),
        )
    })?;
    if items.is_empty() {
        return Err(ApiError::new(
            Code::InvalidBatch,
            "a batch carries at least one event",
        ));
    }
    if items.len() > max {
        return Err(ApiError::new(
            Code::BatchTooLarge,
            format!(
                "a batch carries at most {max} events; this one has {}",
                items.len()
            ),
        )
        .with("max_events", serde_json::json!(max)));
    }
    Ok(items)
}

/// A batch body: the events' texts as a JSON array, each byte for byte.
pub fn body<T: AsRef<[u8]>>(events: &[T]) -> Vec<u8> {
    let len = events.iter().map(|e| e.as_ref().len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.as_ref());
    }
    out.push(b']');
    out
}

/// The bytes a batch of events of these sizes takes.
pub fn body_len(sizes: impl IntoIterator<Item = usize>) -> usize {
    let (n, sum) = sizes
        .into_iter()
        .fold((0usize, 0usize), |(n, s), len| (n + 1, s + len));
    sum + n.saturating_sub(1) + 2
}

/// The `webhook-id` of a batch: derived from its events' own message ids, so the same
/// batch sent again carries the same id.
pub fn message_id<'a>(event_message_ids: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in event_message_ids {
        h.update(id.as_bytes());
        h.update([0]);
    }
    format!("msg_batch_{}", hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_splits_back_into_its_events_byte_for_byte() {
        let events = [
            r#"{"id":"a", "type":"x"}"#,
            r#"{"id":"b","data":{"k":[1,2]}}"#,
        ];
        let b = body(&events);
        assert_eq!(b.len(), body_len(events.iter().map(|e| e.len())));
        let items = split(&b, MAX_EVENTS).expect("split");
        let texts: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(texts, events);
    }

    #[test]
    fn split_refuses_what_is_not_a_batch() {
        assert_eq!(split(b"{}", 4).unwrap_err().code, "invalid_batch");
        assert_eq!(split(b"[]", 4).unwrap_err().code, "invalid_batch");
        assert_eq!(split(b"[1,", 4).unwrap_err().code, "invalid_batch");
        let e = split(b"[{},{},{}]", 2).unwrap_err();
        assert_eq!((e.status, e.code), (413, Code::BatchTooLarge));
    }

    #[test]
    fn offers_and_content_types_are_read_strictly() {
        let mut h = http::HeaderMap::new();
        assert_eq!(offered(&h), None);
        h.insert(OFFER_HEADER, "1".parse().unwrap());
        assert_eq!(offered(&h), None, "one event is no batch");
        h.insert(OFFER_HEADER, "1000".parse().unwrap());
        assert_eq!(offered(&h), Some(MAX_EVENTS));
        h.insert(OFFER_HEADER, "x".parse().unwrap());
        assert_eq!(offered(&h), None);
        h.insert(
            http::header::CONTENT_TYPE,
            "Application/CloudEvents-Batch+JSON; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(is_batch(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/cloudevents+json".parse().unwrap(),
        );
        assert!(!is_batch(&h));
    }

    #[test]
    fn an_item_reads_as_the_single_answer_it_stands_for() {
        let r = ItemResult::rejected(Some("e".into()), &ApiError::new(Code::NotGranted, "no"));
        assert_eq!(r.as_single(), (403, Some("not_granted")));
        let text = serde_json::to_string(&BatchAnswer { results: vec![r] }).unwrap();
        let back: BatchAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back.results[0].as_single(), (403, Some("not_granted")));
        assert_eq!(
            message_id(["a", "b"]),
            message_id(["a", "b"]),
            "the same batch, the same id"
        );
        assert_ne!(message_id(["a", "b"]), message_id(["ab"]));
    }
}
