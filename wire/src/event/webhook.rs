//! Plain webhooks (not CloudEvents) as the events kite stores: the type and summary read
//! from the body (or a provider's header), the identity from what the source's scheme signs,
//! and the event's text written directly, with the body as it came.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::{
    check_attribute, check_depth, check_size, header, invalid_ce, original_headers, trim_json,
    Hook, IncomingEvent, EXT_ORIGINAL_HEADERS, MAX_DEPTH, MAX_ID_LEN, MAX_SOURCE_LEN,
};
use crate::error::ApiError;
use crate::fed::FedInfo;
use crate::pick::{self, Picked};
use crate::provider::Scheme;
use crate::Code;

/// How a plain webhook's type and summary are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mapping {
    Stripe,
    Github,
    Generic,
}

impl Mapping {
    /// The mapping of a hook: by its signature scheme, else by its source's name.
    fn of(scheme: Option<Scheme>, source: &str) -> Self {
        match (scheme, source) {
            (Some(Scheme::Stripe), _) | (None, "stripe") => Mapping::Stripe,
            (Some(Scheme::Github), _) | (None, "github") => Mapping::Github,
            _ => Mapping::Generic,
        }
    }
}

/// A webhook's body as its event carries it: JSON as its own text, anything else as
/// `data_base64`.
#[derive(Clone, Copy)]
enum Body<'a> {
    Json(&'a str),
    Base64(&'a [u8]),
}

/// A plain webhook (not a CloudEvent) as the event kite stores. Its body is read in one
/// pass for the few fields the mapping needs, and the event's text is written directly:
/// attributes first, then the body as it came.
pub(super) fn build_webhook(
    hook: Hook<'_>,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<IncomingEvent, ApiError> {
    let Hook {
        team,
        source,
        scheme,
        ..
    } = hook;
    let content_type = non_json_content_type(headers);
    let (picked, raw) = read_body(content_type.as_deref(), body)?;
    let mapping = Mapping::of(scheme, source);
    let (name, summary) = name_and_summary(mapping, &picked, headers);
    let id = webhook_id(scheme, mapping, &picked, headers, body);
    let ce_source = format!("/hooks/{team}/{source}");
    let ty = format!("com.{source}.{name}");
    check_attribute("id", &id, MAX_ID_LEN)?;
    check_attribute("source", &ce_source, MAX_SOURCE_LEN)?;
    check_attribute("type", &ty, MAX_ID_LEN)?;
    let data_type = content_type.as_deref().unwrap_or("application/json");
    let text = webhook_text(
        [
            ("id", &id),
            ("source", &ce_source),
            ("type", &ty),
            ("datacontenttype", data_type),
            ("kitesummary", &clip(&summary, 200)),
            (EXT_ORIGINAL_HEADERS, &original_headers(headers)),
        ],
        now,
        raw,
    )?;
    // The copy forwarded must fit a peer's limit, with room for what it collects.
    check_size(&text, super::NEW_EVENT_ROOM)?;
    Ok(IncomingEvent {
        id,
        source: ce_source,
        ty,
        text,
        fed: FedInfo::default(),
        origin_sig: None,
        trace: super::header_trace(headers),
    })
}

/// The body's content type (lowercase, without parameters) when it is not JSON; None for a
/// JSON body or one without a content type.
fn non_json_content_type(headers: &HeaderMap) -> Option<String> {
    header(headers, "content-type")
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase())
        .filter(|c| !c.contains("json"))
}

/// Reads a webhook's body: JSON bodies (or bodies without a content type) must parse, and
/// travel as their own text, byte for byte; other bodies (Slack's form posts, say) travel as
/// `data_base64`, with nothing picked from them.
fn read_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<(Picked<'a>, Body<'a>), ApiError> {
    if content_type.is_some() {
        return Ok((Picked::default(), Body::Base64(body)));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(Code::InvalidEncoding, "body must be UTF-8"))?;
    check_depth(body, MAX_DEPTH)?;
    let picked = pick::pick(text)
        .map_err(|e| ApiError::new(Code::InvalidJson, format!("malformed JSON: {e}")))?;
    Ok((picked, Body::Json(trim_json(text))))
}

/// A picked field, if it is there and not empty.
fn field<'a>(f: &'a Option<std::borrow::Cow<'_, str>>) -> Option<&'a str> {
    f.as_deref().filter(|s| !s.is_empty())
}

/// The event's name (the last part of its type) and its summary (the name, and for Stripe
/// and GitHub the object or repository it is about).
fn name_and_summary<'a>(
    mapping: Mapping,
    picked: &'a Picked<'_>,
    headers: &'a HeaderMap,
) -> (&'a str, String) {
    let (name, detail) = match mapping {
        Mapping::Stripe => (
            field(&picked.ty).unwrap_or("event"),
            Some(picked.object_id.as_deref().unwrap_or("")),
        ),
        Mapping::Github => (
            header(headers, "x-github-event").unwrap_or("event"),
            Some(picked.repo.as_deref().unwrap_or("")),
        ),
        Mapping::Generic => (
            field(&picked.ty)
                .or_else(|| field(&picked.event))
                .unwrap_or("event"),
            None,
        ),
    };
    let summary = match detail {
        Some(d) => format!("{name} {d}").trim().to_string(),
        None => name.to_string(),
    };
    (name, summary)
}

/// The event's id: from what the scheme signs when the source is signed, so a replay of a
/// captured delivery is a duplicate and unsigned headers cannot choose it; otherwise what
/// the provider names the delivery by, else a new id.
fn webhook_id(
    scheme: Option<Scheme>,
    mapping: Mapping,
    picked: &Picked<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    let body_id = || field(&picked.id).map(str::to_string);
    match scheme {
        Some(Scheme::Stripe) => body_id().unwrap_or_else(|| digest_id(&[body])),
        Some(Scheme::StandardWebhooks) => header(headers, "webhook-id")
            .map(str::to_string)
            .unwrap_or_else(|| digest_id(&[body])),
        // GitHub signs only the body; its delivery id names the delivery and a replay
        // carries it unchanged.
        Some(Scheme::Github) => header(headers, "x-github-delivery")
            .map(str::to_string)
            .unwrap_or_else(|| digest_id(&[body])),
        Some(Scheme::Slack) => field(&picked.event_id)
            .map(str::to_string)
            .unwrap_or_else(|| digest_id(&[body])),
        Some(Scheme::HmacSha256) => body_id().unwrap_or_else(|| digest_id(&[body])),
        None => match mapping {
            Mapping::Stripe => body_id(),
            Mapping::Github => header(headers, "x-github-delivery").map(str::to_string),
            Mapping::Generic => None,
        }
        .or_else(|| header(headers, "webhook-id").map(str::to_string))
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    }
}

/// An id derived from signed bytes: the same delivery replayed gets the same id.
fn digest_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    format!("sha256-{}", hex::encode(h.finalize()))
}

/// The first `max` characters of `s`.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A webhook's CloudEvent text: `specversion`, these string attributes, `time`, then the
/// data (the JSON body as its own text, or `data_base64`).
fn webhook_text(
    attributes: [(&str, &str); 6],
    time: DateTime<Utc>,
    body: Body<'_>,
) -> Result<String, ApiError> {
    use base64::Engine as _;
    /// Appends `,"name":value` to `out`.
    fn member(
        out: &mut Vec<u8>,
        name: &str,
        value: &impl serde::Serialize,
    ) -> serde_json::Result<()> {
        out.push(b',');
        serde_json::to_writer(&mut *out, name)?;
        out.push(b':');
        serde_json::to_writer(out, value)
    }
    let body_len = match body {
        Body::Json(t) => t.len(),
        Body::Base64(b) => b.len() / 3 * 4 + 4,
    };
    let mut out = Vec::with_capacity(body_len + 512);
    out.extend_from_slice(br#"{"specversion":"1.0""#);
    for (name, value) in attributes {
        member(&mut out, name, &value).map_err(invalid_ce)?;
    }
    member(&mut out, "time", &time).map_err(invalid_ce)?;
    match body {
        Body::Json(text) => {
            out.extend_from_slice(br#","data":"#);
            out.extend_from_slice(text.as_bytes());
        }
        Body::Base64(bytes) => {
            out.extend_from_slice(br#","data_base64":""#);
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            out.extend_from_slice(b64.as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
    String::from_utf8(out).map_err(invalid_ce)
}
