//! Turning an incoming webhook into a structured CloudEvent (a JSON object).

use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::fed::{FedInfo, EXT_SEQ};

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The hook source that carries events from peer instances.
pub const FEDERATION_SOURCE: &str = "kite";
/// Original headers kept on the event, minus these (credentials, never stored).
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-kite-signature",
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
        Err(ApiError::bad_request(
            "invalid_source",
            "source must be 1-64 characters of a-z, 0-9, '_' or '-'",
        )
        .with("field", json!("source")))
    }
}

/// An event ready to store: its identity and the structured CloudEvent JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// CloudEvent `id`.
    pub id: String,
    /// CloudEvent `source`.
    pub source: String,
    /// CloudEvent `type`.
    pub ty: String,
    /// The whole structured CloudEvent.
    pub event: Map<String, Value>,
    /// Its federation extensions.
    pub fed: FedInfo,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn is_cloudevent(h: &HeaderMap) -> bool {
    header(h, "content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/cloudevents+json")
    }) || h.contains_key("ce-specversion")
}

fn invalid_ce(msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_cloudevent", format!("invalid CloudEvent: {msg}"))
}

fn into_object(ev: cloudevents::Event) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(&ev) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid_ce("not an object")),
        Err(e) => Err(invalid_ce(e)),
    }
}

fn original_headers(h: &HeaderMap) -> String {
    let mut m = Map::new();
    for (k, v) in h {
        let name = k.as_str();
        if DROPPED_HEADERS.contains(&name) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            m.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(m).to_string()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Maps a webhook (or a structured/binary CloudEvent) posted to `/hooks/{team}/{source}`
/// into the CloudEvent kite stores. Errors are 400s with stable codes.
pub fn build_event(
    team: &str,
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<IncomingEvent, ApiError> {
    let mut event = if is_cloudevent(headers) {
        let ev =
            cloudevents::binding::http::to_event(headers, body.to_vec()).map_err(invalid_ce)?;
        let obj = into_object(ev)?;
        // What is stored must parse again where it is forwarded (a `ce-data` header, say,
        // would otherwise sit beside `data_base64`).
        if obj.contains_key("data") && obj.contains_key("data_base64") {
            return Err(invalid_ce("an event cannot have both data and data_base64"));
        }
        obj
    } else {
        if source == FEDERATION_SOURCE {
            return Err(invalid_ce(
                "federated events must be structured CloudEvents (application/cloudevents+json)",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("invalid_encoding", "body must be UTF-8"))?;
        // JSON bodies (or bodies without a content type) must parse; other text bodies, such
        // as Slack's form posts, are kept as a string.
        let content_type = header(headers, "content-type")
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_ascii_lowercase())
            .filter(|c| !c.contains("json"));
        let data: Value = match &content_type {
            None => serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("malformed JSON: {e}"))
            })?,
            Some(_) => Value::String(text.to_string()),
        };
        let data_type = content_type.unwrap_or_else(|| "application/json".to_string());
        let (name, id, summary) = match source {
            "stripe" => {
                let name = str_field(&data, "type").unwrap_or("event").to_string();
                let obj_id = data
                    .pointer("/data/object/id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let summary = format!("{name} {obj_id}").trim().to_string();
                (name, str_field(&data, "id").map(str::to_string), summary)
            }
            "github" => {
                let name = header(headers, "x-github-event")
                    .unwrap_or("event")
                    .to_string();
                let repo = data
                    .pointer("/repository/full_name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let summary = format!("{name} {repo}").trim().to_string();
                (
                    name,
                    header(headers, "x-github-delivery").map(str::to_string),
                    summary,
                )
            }
            _ => {
                let name = str_field(&data, "type")
                    .or_else(|| str_field(&data, "event"))
                    .unwrap_or("event")
                    .to_string();
                (name.clone(), None, name)
            }
        };
        let id = id
            .or_else(|| header(headers, "webhook-id").map(str::to_string))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let ev = EventBuilderV10::new()
            .id(clip(&id, 256))
            .source(format!("/hooks/{team}/{source}"))
            .ty(clip(&format!("com.{source}.{name}"), 256))
            .time(now)
            .data(data_type, data)
            .extension("kitesummary", clip(&summary, 200))
            .extension("kiteoriginalheaders", original_headers(headers))
            .build()
            .map_err(invalid_ce)?;
        into_object(ev)?
    };
    event.remove(EXT_SEQ);
    let fed = FedInfo::read(&event).map_err(|e| {
        ApiError::bad_request("invalid_extension", e.to_string()).with("field", json!(e.field))
    })?;
    let get = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(ce_source), Some(ty)) = (get("id"), get("source"), get("type")) else {
        return Err(invalid_ce("id, source and type are required"));
    };
    if id.len() > 256 || ce_source.len() > 1024 || ty.len() > 256 {
        return Err(invalid_ce("id, source or type too long"));
    }
    Ok(IncomingEvent {
        id,
        source: ce_source,
        ty,
        event,
        fed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn stripe_maps_type_and_id() {
        let body =
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#;
        let h = headers(&[
            ("content-type", "application/json"),
            ("authorization", "Bearer x"),
        ]);
        let e = build_event("t", "stripe", &h, body, Utc::now()).unwrap();
        assert_eq!(e.ty, "com.stripe.payment_intent.succeeded");
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.source, "/hooks/t/stripe");
        assert_eq!(e.event["data"]["data"]["object"]["id"], "pi_1");
        assert_eq!(e.event["kitesummary"], "payment_intent.succeeded pi_1");
        let oh = e.event["kiteoriginalheaders"].as_str().unwrap();
        assert!(!oh.contains("authorization"));
    }

    #[test]
    fn github_uses_headers() {
        let h = headers(&[("x-github-event", "push"), ("x-github-delivery", "d-1")]);
        let e = build_event("t", "github", &h, b"{}", Utc::now()).unwrap();
        assert_eq!(e.ty, "com.github.push");
        assert_eq!(e.id, "d-1");
    }

    #[test]
    fn structured_cloudevent_keeps_attributes() {
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let body = br#"{"specversion":"1.0","id":"x1","source":"/elsewhere","type":"com.acme.thing","kitefedhops":2,"kitefedchain":"[\"a\",\"b\"]","kitefedorigin":"a","data":{"k":1}}"#;
        let e = build_event("t", "kite", &h, body, Utc::now()).unwrap();
        assert_eq!((e.id.as_str(), e.source.as_str()), ("x1", "/elsewhere"));
        assert_eq!(e.fed.hops, 2);
        assert_eq!(e.fed.chain, vec!["a", "b"]);
    }

    #[test]
    fn bad_inputs_get_codes() {
        let h = headers(&[]);
        assert_eq!(
            build_event("t", "x", &h, b"{nope", Utc::now())
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert_eq!(
            build_event("t", "x", &h, &[0xff, 0xfe], Utc::now())
                .unwrap_err()
                .code,
            "invalid_encoding"
        );
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let e = build_event("t", "slack", &form, b"a=1&b=2", Utc::now()).unwrap();
        assert_eq!(e.event["data"], "a=1&b=2");
        assert_eq!(
            e.event["datacontenttype"],
            "application/x-www-form-urlencoded"
        );
        let ce = headers(&[("content-type", "application/cloudevents+json")]);
        assert_eq!(
            build_event("t", "kite", &ce, br#"{"id":"1"}"#, Utc::now())
                .unwrap_err()
                .code,
            "invalid_cloudevent"
        );
        let body = br#"{"specversion":"1.0","id":"x1","source":"/s","type":"t","kitefedhops":-3}"#;
        assert_eq!(
            build_event("t", "kite", &ce, body, Utc::now())
                .unwrap_err()
                .code,
            "invalid_extension"
        );
        // Found by the cloudevent_parse fuzz target: accepted here, refused by every peer.
        let binary = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-data", "x"),
        ]);
        assert_eq!(
            build_event("t", "acme", &binary, b"}", Utc::now())
                .unwrap_err()
                .code,
            "invalid_cloudevent"
        );
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            build_event("t", "x", &h, deep.as_bytes(), Utc::now())
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert!(validate_source_name("stripe").is_ok());
        assert!(validate_source_name("Bad Name").is_err());
        assert!(validate_source_name("").is_err());
    }
}
