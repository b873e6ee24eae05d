//! `event::build_event` on arbitrary webhooks.
//!
//! Input layout (text-friendly so seeds and dictionaries work):
//!   byte 0            selector: bits 0-1 pick the hook source (kite, stripe, github, acme),
//!                     (byte >> 2) % 3 picks the mode: 0 = only the headers given,
//!                     1 = add `content-type: application/cloudevents+json` (structured),
//!                     2 = add ce-specversion/ce-id/ce-source/ce-type (binary mode)
//!   then              `name: value` header lines, ended by an empty line ("\n\n");
//!                     without an empty line everything after byte 0 is the body
//!   rest              the body
//! Headers given in the input replace the mode's defaults of the same name; repeats append.
//!
//! Invariants on an accepted event: the limits `build_event` promises, no local `kiteseq`,
//! federation info that re-reads identically, and the federation path: the event forwarded
//! with `fed::forward` and posted to a peer as a structured CloudEvent is accepted there
//! with the same id/source/type and the advanced federation info, and stored unchanged
//! (binary `data_base64` may come back as the equivalent JSON `data`).
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use kite_protocol::event::{build_event, MAX_BODY_BYTES};
use kite_protocol::fed::{self, FedInfo, EXT_SEQ, MAX_CHAIN_LEN, MAX_HOPS_ACCEPTED};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SOURCES: [&str; 4] = ["kite", "stripe", "github", "acme"];
const SELF_ID: &str = "fuzz-self";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn headers(mode: u8, block: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    match mode {
        1 => {
            h.insert(
                "content-type",
                HeaderValue::from_static("application/cloudevents+json"),
            );
        }
        2 => {
            h.insert("ce-specversion", HeaderValue::from_static("1.0"));
            h.insert("ce-id", HeaderValue::from_static("fuzz-1"));
            h.insert("ce-source", HeaderValue::from_static("/fuzz"));
            h.insert("ce-type", HeaderValue::from_static("com.fuzz.thing"));
        }
        _ => {}
    }
    let mut seen: Vec<HeaderName> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(trim(&line[..colon])) else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(trim(&line[colon + 1..])) else {
            continue;
        };
        if seen.contains(&name) {
            h.append(name, value);
        } else {
            seen.push(name.clone());
            h.insert(name, value);
        }
    }
    h
}

/// The payload of a structured CloudEvent: `data` as JSON, or `data_base64` decoded.
enum Payload<'a> {
    None,
    Json(&'a Value),
    Bytes(Vec<u8>),
}

fn payload(ev: &Map<String, Value>) -> Option<Payload<'_>> {
    match (ev.get("data"), ev.get("data_base64")) {
        (None, None) => Some(Payload::None),
        (Some(d), None) => Some(Payload::Json(d)),
        (None, Some(Value::String(b))) => STANDARD.decode(b).ok().map(Payload::Bytes),
        _ => None,
    }
}

/// JSON equality, except that floats may differ in their last bits: serde_json (without its
/// `float_roundtrip` feature, as in the workspace) parses floats to within 1-2 ULP, so a
/// large float can move by an ULP on every hop. That is reported, not asserted.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x != y && (x.is_f64() || y.is_f64()) => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => close_maps(x, y),
        _ => a == b,
    }
}

fn close_maps(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| close(v, w)))
}

/// True if the peer's copy carries the same attributes and extensions and an equivalent
/// payload: binary data (`data_base64`) may come back as the JSON value or string it holds.
fn same_event(sent: &Map<String, Value>, stored: &Map<String, Value>) -> bool {
    let strip = |m: &Map<String, Value>| {
        let mut m = m.clone();
        m.remove("data");
        m.remove("data_base64");
        m
    };
    if !close_maps(&strip(sent), &strip(stored)) {
        return false;
    }
    match (payload(sent), payload(stored)) {
        (Some(Payload::None), Some(Payload::None)) => true,
        (Some(Payload::Json(a)), Some(Payload::Json(b))) => close(a, b),
        (Some(Payload::Bytes(a)), Some(Payload::Bytes(b))) => a == b,
        (Some(Payload::Bytes(a)), Some(Payload::Json(b))) => {
            serde_json::from_slice::<Value>(&a).is_ok_and(|v| close(&v, b))
                || b.as_str().is_some_and(|s| s.as_bytes() == a)
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let source = SOURCES[usize::from(sel & 3)];
    let mode = (sel >> 2) % 3;
    let (block, body) = match find(rest, b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&[][..], rest),
    };
    if body.len() > MAX_BODY_BYTES {
        return;
    }
    let h = headers(mode, block);

    let Ok(e) = build_event("team", source, &h, body, now()) else {
        return;
    };

    // What build_event promises about an accepted event.
    assert!(e.id.len() <= 256 && e.source.len() <= 1024 && e.ty.len() <= 256);
    assert_eq!(
        e.event.get("id").and_then(Value::as_str),
        Some(e.id.as_str())
    );
    assert_eq!(
        e.event.get("source").and_then(Value::as_str),
        Some(e.source.as_str())
    );
    assert_eq!(
        e.event.get("type").and_then(Value::as_str),
        Some(e.ty.as_str())
    );
    assert!(!e.event.contains_key(EXT_SEQ), "kiteseq survived ingestion");
    assert!(i64::from(e.fed.hops) <= MAX_HOPS_ACCEPTED);
    assert!(e.fed.chain.len() <= MAX_CHAIN_LEN);
    assert_eq!(FedInfo::read(&e.event).as_ref(), Ok(&e.fed));

    // Forwarding an accepted event never fails (its extensions were already validated).
    let mut fwd = e.event.clone();
    fed::forward(&mut fwd, SELF_ID).expect("forward of an accepted event");
    let within_limits =
        e.fed.chain.len() < MAX_CHAIN_LEN && i64::from(e.fed.hops) < MAX_HOPS_ACCEPTED;
    let reread = FedInfo::read(&fwd);
    if !within_limits {
        assert!(reread.is_err(), "limits not enforced after forward");
        return;
    }
    let info = reread.expect("forwarded extensions re-read");
    let mut chain = e.fed.chain.clone();
    chain.push(SELF_ID.to_string());
    assert_eq!(info.chain, chain);
    assert_eq!(info.hops, e.fed.hops + 1);
    assert_eq!(
        info.origin.as_deref(),
        Some(e.fed.origin.as_deref().unwrap_or(SELF_ID))
    );

    // The peer receives the forwarded copy as a structured CloudEvent on source "kite".
    let wire = serde_json::to_vec(&Value::Object(fwd.clone())).expect("serialize");
    let mut ce = HeaderMap::new();
    ce.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json"),
    );
    match build_event("peer", "kite", &ce, &wire, now()) {
        Ok(p) => {
            assert_eq!((&p.id, &p.source, &p.ty), (&e.id, &e.source, &e.ty));
            assert_eq!(p.fed, info);
            assert!(
                same_event(&fwd, &p.event),
                "the peer stored a different event\nsent:   {}\nstored: {}",
                Value::Object(fwd),
                Value::Object(p.event)
            );
        }
        Err(err) => panic!(
            "forwarded event refused by the peer: {err}\nwire: {}",
            String::from_utf8_lossy(&wire)
        ),
    }
});
