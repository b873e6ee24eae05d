//! Turning an incoming webhook into a structured CloudEvent (a JSON object).

use crate::Code;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::fed::{self, FedInfo};
use crate::provider::Scheme;

mod webhook;
use webhook::build_webhook;

/// Largest body accepted, and largest event kite forwards: what a peer accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Deepest nesting (arrays and objects) of a webhook payload; a structured CloudEvent may
/// use one more level for its envelope. Deeper bodies get 400 `too_deep`.
pub const MAX_DEPTH: usize = 64;
/// Longest CloudEvent `id` and `type`.
pub const MAX_ID_LEN: usize = 256;
/// Longest CloudEvent `source`.
pub const MAX_SOURCE_LEN: usize = 1024;
/// The hook source that carries events from peer instances.
pub const FEDERATION_SOURCE: &str = "kite";
/// Extension holding the `source` a CloudEvent claimed when it came through a hook that
/// is not `kite` (its `source` becomes the hook).
pub const EXT_CLAIMED_SOURCE: &str = "kiteclaimedsource";
/// What kite's own operational events' types start with (`kite.peer.degraded`, ...): no hook
/// takes an event of such a type, and the stream and listings show them only to a client
/// asking for them by type.
pub const OPERATIONAL_TYPE_PREFIX: &str = "kite.";

/// Whether `ty` is (or reads as, by scope matching, which also takes the reverse-DNS form
/// `com.kite.*`) a kite operational event type, which only kite itself may emit.
pub fn is_operational_type(ty: &str) -> bool {
    ty.starts_with(OPERATIONAL_TYPE_PREFIX)
        || ty
            .strip_prefix("com.")
            .is_some_and(|t| t.starts_with(OPERATIONAL_TYPE_PREFIX))
}
/// Extension holding the kept request headers (a JSON object string).
pub const EXT_ORIGINAL_HEADERS: &str = "kiteoriginalheaders";
/// Request headers worth keeping on an event (`kiteoriginalheaders`): what describes the
/// delivery. Everything else, credentials and signatures above all, is never stored.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-instance",
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-webhook-id",
    "x-slack-retry-num",
    "x-slack-retry-reason",
    "webhook-id",
    "webhook-timestamp",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Checks a hook source name: 1..=64 of `a-z 0-9 _ -`, starting with a letter or digit.
pub fn validate_source_name(source: &str) -> Result<(), ApiError> {
    let ok = !source.is_empty()
        && source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && source
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidSource,
            "source must be 1-64 characters of a-z, 0-9, '_' or '-'",
        )
        .with("field", json!("source")))
    }
}

/// Where a webhook came in: the hook, how it is signed, and who would forward it.
#[derive(Debug, Clone, Copy)]
pub struct Hook<'a> {
    /// Team of `/hooks/{team}/{source}`.
    pub team: &'a str,
    /// Source of `/hooks/{team}/{source}`.
    pub source: &'a str,
    /// The source's signature scheme, if it has one: then only signed material decides the
    /// event's identity (unsigned `ce-*` headers are not read).
    pub scheme: Option<Scheme>,
    /// This instance's id, to size the copy it forwards.
    pub instance_id: &'a str,
}

/// An event ready to store: its identity, its JSON text and its federation extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// CloudEvent `id`.
    pub id: String,
    /// CloudEvent `source`.
    pub source: String,
    /// CloudEvent `type`.
    pub ty: String,
    /// The structured CloudEvent as compact JSON, without its federation extensions and
    /// `kiteseq` (those are kept beside it, in `fed`).
    pub text: String,
    /// Its federation extensions.
    pub fed: FedInfo,
    /// Its origin signature, kept beside it (federated events only).
    pub origin_sig: Option<crate::provenance::SigText>,
    /// Its trace context, kept beside it: as it came (its `traceparent` extension, else the
    /// request's `traceparent` header), until the intake's span continues it.
    pub trace: Option<crate::trace::TraceContext>,
}

/// The trace context a request's `traceparent` and `tracestate` headers name, if valid.
pub fn header_trace(h: &HeaderMap) -> Option<crate::trace::TraceContext> {
    crate::trace::TraceContext::parse(
        header(h, crate::trace::EXT_TRACEPARENT)?,
        header(h, crate::trace::EXT_TRACESTATE),
    )
}

/// A header's value, trimmed, if it is there, visible ASCII and not empty.
fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether the request is a structured CloudEvent (`application/cloudevents+json`).
fn is_structured(h: &HeaderMap) -> bool {
    header(h, "content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/cloudevents+json")
    })
}

/// 400 `invalid_cloudevent`, saying why.
fn invalid_ce(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::InvalidCloudevent,
        format!("invalid CloudEvent: {msg}"),
    )
}

/// An SDK event as its JSON object.
fn into_object(ev: cloudevents::Event) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(&ev) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid_ce("not an object")),
        Err(e) => Err(invalid_ce(e)),
    }
}

/// The kept request headers ([`KEPT_HEADERS`]) as a JSON object string, sorted by name;
/// a repeated header keeps its first value, one that is not visible ASCII is left out.
pub fn original_headers(h: &HeaderMap) -> String {
    let mut kept: Vec<(&str, Option<&str>)> = Vec::new();
    for (name, value) in h {
        let name = name.as_str();
        if KEPT_HEADERS.contains(&name) && !kept.iter().any(|(n, _)| *n == name) {
            kept.push((name, value.to_str().ok()));
        }
    }
    kept.sort_unstable_by_key(|(name, _)| *name);
    let kept: serde_json::Map<String, Value> = kept
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), Value::String(value?.to_string()))))
        .collect();
    Value::Object(kept).to_string()
}

/// The nesting depth of JSON text (arrays and objects), counted without parsing it; stops
/// counting once past `limit`.
pub fn json_depth(text: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuses JSON text nested deeper than `limit`: 400 `too_deep`.
fn check_depth(text: &[u8], limit: usize) -> Result<(), ApiError> {
    if json_depth(text, limit) > limit {
        return Err(ApiError::new(
            Code::TooDeep,
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        )
        .with("max_depth", json!(MAX_DEPTH)));
    }
    Ok(())
}

/// True if `s` can travel as an HTTP header value: 1..=`max` bytes of visible ASCII or
/// spaces, with no space at either end.
pub fn header_safe(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

/// Refuses a CloudEvent attribute that cannot travel as an HTTP header value.
fn check_attribute(name: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    if header_safe(value, max) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::InvalidAttribute,
        format!("CloudEvent {name} must be 1-{max} characters of visible ASCII (it is sent as an HTTP header)"),
    )
    .with("field", json!(name)))
}

/// A CloudEvent's data as it travels: the original JSON text (spliced into the stored event,
/// never re-encoded), or what the SDK made of it.
enum Data {
    Json(String),
    None,
}

/// The JSON text without the whitespace around it.
fn trim_json(text: &str) -> &str {
    text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// The event's text: its attributes, then its data as it came.
fn with_data(mut obj: Map<String, Value>, data: Data) -> String {
    match data {
        Data::Json(raw) => {
            obj.remove("data");
            obj.remove("data_base64");
            let head = Value::Object(obj).to_string();
            let head = head.strip_suffix('}').unwrap_or(&head);
            let sep = if head.len() > 1 { "," } else { "" };
            format!("{head}{sep}\"data\":{raw}}}")
        }
        Data::None => Value::Object(obj).to_string(),
    }
}

/// A structured or binary CloudEvent as its attributes and its data, as kite keeps them.
fn build_cloudevent(
    hook: Hook<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Map<String, Value>, Data), ApiError> {
    let structured = is_structured(headers);
    // Structured: the envelope is one more level; binary: the body is the data.
    check_depth(body, if structured { MAX_DEPTH + 1 } else { MAX_DEPTH })?;
    let (obj, data) = if structured {
        // The envelope is read with the SDK; `data` is kept as its own text.
        let mut fields: std::collections::HashMap<String, &serde_json::value::RawValue> =
            serde_json::from_slice(body).map_err(invalid_ce)?;
        if fields.contains_key("data") && fields.contains_key("data_base64") {
            return Err(invalid_ce("an event cannot have both data and data_base64"));
        }
        // Spec 0.3's `datacontentencoding` changes what `data` means: the SDK reads that.
        if fields.contains_key("datacontentencoding") {
            let ev: cloudevents::Event = serde_json::from_slice(body).map_err(invalid_ce)?;
            return finish_cloudevent(hook, into_object(ev)?, Data::None);
        }
        let data = fields.remove("data").map(|d| d.get().to_owned());
        let envelope = fields
            .into_iter()
            .map(|(k, v)| serde_json::from_str(v.get()).map(|v| (k, v)))
            .collect::<Result<Map<String, Value>, _>>()
            .map_err(invalid_ce)?;
        let ev: cloudevents::Event =
            serde_json::from_value(Value::Object(envelope)).map_err(invalid_ce)?;
        let obj = into_object(ev)?;
        (obj, data.map_or(Data::None, Data::Json))
    } else {
        // The SDK would tell the encoding by a case-sensitive content type: decided above,
        // so a structured event (`Application/CloudEvents+JSON`) is never read from `ce-*`.
        let mut ev =
            cloudevents::binding::http::to_event(headers, body.to_vec()).map_err(invalid_ce)?;
        // Binary data travels as base64, which a peer reads back as JSON when the content
        // type says JSON (and refuses, in spec 0.3, when it is not): keep what peers read.
        if matches!(ev.data(), Some(cloudevents::Data::Binary(_))) {
            let sent = serde_json::to_value(&ev).map_err(invalid_ce)?;
            ev = serde_json::from_value(sent).map_err(invalid_ce)?;
        }
        let json_body = matches!(ev.data(), Some(cloudevents::Data::Json(_)));
        let obj = into_object(ev)?;
        // What is stored must parse again where it is forwarded (a `ce-data` header, say,
        // would otherwise sit beside `data_base64`).
        if obj.contains_key("data") && obj.contains_key("data_base64") {
            return Err(invalid_ce("an event cannot have both data and data_base64"));
        }
        let data = match std::str::from_utf8(body) {
            Ok(text) if json_body => Data::Json(trim_json(text).to_owned()),
            _ => Data::None,
        };
        (obj, data)
    };
    finish_cloudevent(hook, obj, data)
}

/// What every CloudEvent that came through a hook gets: a peer's event is kept as sent;
/// any other keeps the hook as its source and may not carry kite's own extensions.
fn finish_cloudevent(
    hook: Hook<'_>,
    mut obj: Map<String, Value>,
    data: Data,
) -> Result<(Map<String, Value>, Data), ApiError> {
    if hook.source == FEDERATION_SOURCE {
        return Ok((obj, data));
    }
    // Only peers (`/hooks/{team}/kite`, authenticated) speak for another instance: kite's
    // own extensions are refused elsewhere, and the source is the hook it came through.
    if let Some(k) = obj.keys().find(|k| k.starts_with("kite")) {
        return Err(ApiError::new(
            Code::ReservedExtension,
            format!("extension {k:?} is reserved for kite (only peers may send kite* extensions, to /hooks/{{team}}/kite)"),
        )
        .with("field", json!(k)));
    }
    let hook_source = format!("/hooks/{}/{}", hook.team, hook.source);
    if let Some(Value::String(claimed)) = obj.insert("source".into(), json!(hook_source)) {
        if claimed != hook_source {
            obj.insert(EXT_CLAIMED_SOURCE.into(), Value::String(claimed));
        }
    }
    Ok((obj, data))
}

/// Room an event entering the federation here keeps for what its forwarded copies add: the
/// longest chain it can collect, its origin signature and its trace context.
pub(crate) const NEW_EVENT_ROOM: usize = fed::MAX_SUFFIX_BYTES
    + 1
    + crate::provenance::MAX_SIG_BYTES
    + crate::trace::MAX_MEMBERS_BYTES
    + 1;

/// Refuses an event whose text, with `room` bytes more, would not fit a peer's limit.
fn check_size(text: &str, room: usize) -> Result<(), ApiError> {
    if text.len() + room > MAX_BODY_BYTES {
        return Err(
            ApiError::payload_too_large(MAX_BODY_BYTES.saturating_sub(room))
                .with("event_bytes", json!(text.len())),
        );
    }
    Ok(())
}

/// Maps a webhook (or a structured/binary CloudEvent) posted to `/hooks/{team}/{source}`
/// into the CloudEvent kite stores. Errors are 400s (413 for size) with stable codes.
pub fn build_event(
    hook: Hook<'_>,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<IncomingEvent, ApiError> {
    let federated = hook.source == FEDERATION_SOURCE;
    // A signed source's `ce-*` headers are not signed: only the body speaks for it.
    let cloudevent = is_structured(headers)
        || (headers.contains_key("ce-specversion") && (federated || hook.scheme.is_none()));
    if !cloudevent {
        if federated {
            return Err(invalid_ce(
                "federated events must be structured CloudEvents (application/cloudevents+json)",
            ));
        }
        return build_webhook(hook, headers, body, now);
    }
    let (mut event, data) = build_cloudevent(hook, headers, body)?;
    let fed_info = FedInfo::read(&event).map_err(|e| {
        ApiError::new(Code::InvalidExtension, e.to_string()).with("field", json!(e.field))
    })?;
    fed::strip(&mut event);
    // The extension names the event's context; a peer's request header is only its own.
    let trace = crate::trace::take(&mut event)
        .or_else(|| (!federated).then(|| header_trace(headers)).flatten());
    // Only a federated event can carry an origin signature in; one entering the federation
    // here is signed here.
    let origin_sig = if federated {
        crate::provenance::take(&mut event).map_err(|e| {
            ApiError::new(Code::InvalidExtension, e.to_string())
                .with("field", json!(crate::provenance::EXT_SIG))
        })?
    } else {
        crate::provenance::strip(&mut event);
        None
    };
    let get = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(ce_source), Some(ty)) = (get("id"), get("source"), get("type")) else {
        return Err(invalid_ce("id, source and type are required"));
    };
    check_attribute("id", &id, MAX_ID_LEN)?;
    check_attribute("source", &ce_source, MAX_SOURCE_LEN)?;
    check_attribute("type", &ty, MAX_ID_LEN)?;
    // `kite.*` are kite's own operational events: nobody else speaks for them.
    if is_operational_type(&ty) {
        return Err(ApiError::new(
            Code::InvalidAttribute,
            format!(
                "CloudEvent type {ty:?}: types kite.* (and com.kite.*) are kite's own operational events"
            ),
        )
        .with("field", json!("type")));
    }
    let text = with_data(event, data);
    // Data decoded from base64 was not in the body's depth.
    check_depth(text.as_bytes(), MAX_DEPTH + 1)?;
    // The copy forwarded must fit a peer's limit: a new event keeps room for the longest
    // chain it can collect, a federated one for the extensions this instance adds.
    let room = if federated {
        fed::forward_suffix(&fed_info, hook.instance_id).len()
            + 1
            + origin_sig.as_ref().map_or(0, |s| s.members().len() + 1)
            + crate::trace::MAX_MEMBERS_BYTES
            + 1
    } else {
        NEW_EVENT_ROOM
    };
    check_size(&text, room)?;
    Ok(IncomingEvent {
        id,
        source: ce_source,
        ty,
        text,
        fed: fed_info,
        origin_sig,
        trace,
    })
}

/// The bytes a stored or forwarded event carries as its data: the original JSON text of
/// `data`, verbatim (a JSON string's text when the data is not JSON), or `data_base64`
/// decoded; `None` for an event without data or text that is not an event.
pub fn data_bytes(event_text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let fields: std::collections::HashMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(event_text).ok()?;
    if let Some(b64) = fields.get("data_base64") {
        let b64: String = serde_json::from_str(b64.get()).ok()?;
        return base64::engine::general_purpose::STANDARD.decode(b64).ok();
    }
    let data = fields.get("data")?.get();
    let json_type = fields
        .get("datacontenttype")
        .and_then(|c| serde_json::from_str::<String>(c.get()).ok())
        .is_none_or(|c| c.contains("json"));
    if !json_type && data.starts_with('"') {
        return serde_json::from_str::<String>(data)
            .ok()
            .map(String::into_bytes);
    }
    Some(data.as_bytes().to_vec())
}

/// A binary-mode request's headers (`ce-*` and `content-type`) and body.
pub type BinaryMode = (Vec<(String, String)>, Vec<u8>);

/// An event as the CloudEvents HTTP binding's binary mode sends it: each context
/// attribute and extension with a scalar value as a `ce-{name}` header (its text
/// percent-encoded where the binding asks: space, `"`, `%` and anything outside printable
/// ASCII), `datacontenttype` as `content-type`, and the data's bytes as the body (for a
/// webhook, the provider's body as it came). `None` for text that is not an event.
pub fn binary_mode(event_text: &str) -> Option<BinaryMode> {
    let fields: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(event_text).ok()?;
    let mut headers = Vec::with_capacity(fields.len());
    let mut content_type = None;
    for (name, raw) in &fields {
        let value = match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        match *name {
            "data" | "data_base64" => {}
            "datacontenttype" => content_type = Some(value),
            _ => headers.push((format!("ce-{name}"), percent_encode(&value))),
        }
    }
    let data = if fields.contains_key("data") || fields.contains_key("data_base64") {
        data_bytes(event_text)?
    } else {
        Vec::new()
    };
    let ct = content_type.unwrap_or_else(|| "application/json".to_owned());
    headers.push(("content-type".to_owned(), ct));
    Some((headers, data))
}

/// A header value as the CloudEvents HTTP binding writes one.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The provider an event first came from: the `{source}` of its CloudEvent source
/// `/hooks/{team}/{source}` (kept across federation), if it has that form.
pub fn provider_of(ce_source: &str) -> Option<&str> {
    ce_source
        .strip_prefix("/hooks/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, source)| source)
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
