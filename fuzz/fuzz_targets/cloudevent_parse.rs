//! The whole ingest path on arbitrary webhooks: headers + body → `event::build_event` → the
//! stored event (`IncomingEvent`) → the bytes forwarded to a peer (`fed::forward_text`) →
//! the peer's copy (`build_event` on its `kite` hook) → the next peer's copy.
//!
//! Input layout (text-friendly so seeds and dictionaries work):
//!   byte 0   selector:
//!            bits 0-1  the hook source: kite, stripe, github, acme
//!            bits 2-3  the mode, (value % 3): 0 = only the headers given,
//!                      1 = add `content-type: application/cloudevents+json` (structured),
//!                      2 = add ce-specversion/ce-id/ce-source/ce-type (binary mode)
//!            bits 4-6  the source's signature scheme: 0, 6, 7 = unsigned; 1..=5 = Stripe,
//!                      Github, Slack, StandardWebhooks, HmacSha256 (the signature itself is
//!                      checked before `build_event` and is not part of this target). The
//!                      `kite` hook is never signed this way: a signed selector on it uses the
//!                      source `shop` instead.
//!            bit 7     inflate the body (below)
//!   then     `name: value` header lines, ended by an empty line ("\n\n");
//!            without an empty line everything after byte 0 is the body
//!   rest     the body. With bit 7 set, every `\0 n l` in it (NUL, then a count byte and a
//!            length byte) stands for the `l` bytes after it repeated `n * 64` times, so a
//!            short input can reach the size limits (the body is cut at MAX_BODY_BYTES + 1).
//! Headers given in the input replace the mode's defaults of the same name; repeats append.
//!
//! Invariants on an accepted event:
//! - `text` is a JSON object without `kitefedorigin`/`kitefedchain`/`kitefedhops`/`kiteseq`;
//!   its id/source/type are the event's and are header-safe; it is at most MAX_DEPTH + 1
//!   deep (and `json_depth` agrees with the parsed depth, for the body as well);
//! - a non-`kite` hook: the source is `/hooks/{team}/{source}`, no federation info, no kite*
//!   extension but kite's own, and room left for the longest federation suffix; the `kite`
//!   hook: room left for the suffix this instance adds;
//! - a signed source (or a structured event): `ce-*` headers change nothing;
//! - `fed::forward_text` fits MAX_BODY_BYTES, parses, and carries the advanced federation
//!   info; `fed::stored_text` gives the whole event back (with `kiteseq`);
//! - a peer's `kite` hook accepts the forwarded copy (unless it is past the hop/chain limits,
//!   or a `kite` event with no room left for the peer's own suffix) with the same
//!   id/source/type, hops + 1, the chain + this instance, and the same event apart from what
//!   the CloudEvent SDK normalises (binary data, `data_base64` or spec 0.3's base64 `data`,
//!   may come back as the JSON `data` it holds);
//! - what the peer stores is a fixed point: a third instance stores the same again.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use kite_wire::event::{
    build_event, header_safe, json_depth, Hook, IncomingEvent, EXT_CLAIMED_SOURCE,
    EXT_ORIGINAL_HEADERS, MAX_BODY_BYTES, MAX_DEPTH, MAX_ID_LEN, MAX_SOURCE_LEN,
};
use kite_wire::fed::{
    self, FedInfo, EXT_CHAIN, EXT_HOPS, EXT_ORIGIN, EXT_SEQ, MAX_CHAIN_LEN, MAX_HOPS_ACCEPTED,
    MAX_SUFFIX_BYTES,
};
use kite_wire::provider::Scheme;
use kite_wire::ApiError;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SOURCES: [&str; 4] = ["kite", "stripe", "github", "acme"];
const SCHEMES: [Scheme; 5] = [
    Scheme::Stripe,
    Scheme::Github,
    Scheme::Slack,
    Scheme::StandardWebhooks,
    Scheme::HmacSha256,
];
const TEAM: &str = "team";
/// The instance that ingests the webhook and forwards it.
const SELF_ID: &str = "fuzz-self";
/// The peer it forwards to, and the one that peer forwards to.
const PEER_ID: &str = "fuzz-peer";
const THIRD_ID: &str = "fuzz-third";
const FED_KEYS: [&str; 4] = [EXT_ORIGIN, EXT_CHAIN, EXT_HOPS, EXT_SEQ];

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

/// The body with every `\0 n l` run expanded (see the layout), cut at MAX_BODY_BYTES + 1.
fn inflate(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() && out.len() <= MAX_BODY_BYTES {
        match body[i..] {
            [0, n, l, ..] => {
                let start = i + 3;
                let end = (start + usize::from(l)).min(body.len());
                let unit = &body[start..end];
                for _ in 0..usize::from(n) * 64 {
                    if out.len() > MAX_BODY_BYTES || unit.is_empty() {
                        break;
                    }
                    out.extend_from_slice(unit);
                }
                i = end;
            }
            _ => {
                out.push(body[i]);
                i += 1;
            }
        }
    }
    out.truncate(MAX_BODY_BYTES + 1);
    out
}

/// What kite treats as a structured CloudEvent (`event::is_structured`).
fn structured(h: &HeaderMap) -> bool {
    h.get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/cloudevents+json")
        })
}

fn parse_object(text: &str, what: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        other => panic!("{what} is not a JSON object: {other:?}\n{text}"),
    }
}

/// Nesting depth of a parsed value (arrays and objects), as `event::json_depth` counts it.
fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The payload of a structured CloudEvent: `data` as JSON, or binary data decoded
/// (`data_base64`, or in spec 0.3 `data` with `datacontentencoding: base64`).
enum Payload<'a> {
    None,
    Json(&'a Value),
    Bytes(Vec<u8>),
}

fn v03(ev: &Map<String, Value>) -> bool {
    ev.get("specversion").and_then(Value::as_str) == Some("0.3")
}

/// True for a spec 0.3 event whose `data` is base64 (`datacontentencoding`).
fn base64_v03(ev: &Map<String, Value>) -> bool {
    v03(ev)
        && ev
            .get("datacontentencoding")
            .and_then(Value::as_str)
            .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
}

/// The names of an event's data members: spec 0.3 has no `data_base64` (there it is an
/// extension like any other).
fn data_keys(ev: &Map<String, Value>) -> &'static [&'static str] {
    if v03(ev) {
        &["data", "datacontentencoding"]
    } else {
        &["data", "data_base64"]
    }
}

fn payload(ev: &Map<String, Value>) -> Option<Payload<'_>> {
    let base64 = if v03(ev) { None } else { ev.get("data_base64") };
    match (ev.get("data"), base64) {
        (None, None) => Some(Payload::None),
        (Some(Value::String(b)), None) if base64_v03(ev) => {
            STANDARD.decode(b).ok().map(Payload::Bytes)
        }
        (Some(d), None) => Some(Payload::Json(d)),
        (None, Some(Value::String(b))) => STANDARD.decode(b).ok().map(Payload::Bytes),
        _ => None,
    }
}

/// JSON equality, except that floats may differ in their last bits (in case serde_json is
/// built without its `float_roundtrip` feature; the workspace enables it).
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
    if close_maps(sent, stored) {
        return true;
    }
    let strip = |m: &Map<String, Value>| {
        let mut m = m.clone();
        for k in data_keys(&m) {
            if *k != "datacontentencoding" || base64_v03(&m) {
                m.remove(*k);
            }
        }
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

/// `m` without the federation extensions and `kiteseq`.
fn without_fed(m: &Map<String, Value>) -> Map<String, Value> {
    let mut m = m.clone();
    for k in FED_KEYS {
        m.remove(k);
    }
    m
}

/// What `build_event` promises about any accepted event; answers its parsed text.
fn check_accepted(e: &IncomingEvent, hook: &Hook<'_>) -> Map<String, Value> {
    let v = parse_object(&e.text, "stored text");
    for k in FED_KEYS {
        assert!(
            !v.contains_key(k),
            "{k} left in the stored text: {}",
            e.text
        );
    }
    assert!(header_safe(&e.id, MAX_ID_LEN), "id {:?}", e.id);
    assert!(
        header_safe(&e.source, MAX_SOURCE_LEN),
        "source {:?}",
        e.source
    );
    assert!(header_safe(&e.ty, MAX_ID_LEN), "type {:?}", e.ty);
    for (k, want) in [("id", &e.id), ("source", &e.source), ("type", &e.ty)] {
        assert_eq!(v.get(k).and_then(Value::as_str), Some(want.as_str()), "{k}");
    }
    let depth = json_depth(e.text.as_bytes(), usize::MAX);
    assert_eq!(depth, value_depth(&Value::Object(v.clone())), "json_depth");
    assert!(
        depth <= MAX_DEPTH + 1,
        "stored text {depth} deep: {}",
        e.text
    );
    assert!(i64::from(e.fed.hops) <= MAX_HOPS_ACCEPTED);
    assert!(e.fed.chain.len() <= MAX_CHAIN_LEN);

    if hook.source == "kite" {
        let room = fed::forward_suffix(&e.fed, hook.instance_id).len() + 1;
        assert!(e.text.len() + room <= MAX_BODY_BYTES, "no room to forward");
    } else {
        assert_eq!(e.source, format!("/hooks/{}/{}", hook.team, hook.source));
        assert_eq!(
            e.fed,
            FedInfo::default(),
            "federation info from a plain hook"
        );
        for k in v.keys().filter(|k| k.starts_with("kite")) {
            assert!(
                ["kitesummary", EXT_ORIGINAL_HEADERS, EXT_CLAIMED_SOURCE].contains(&k.as_str()),
                "extension {k} on a plain hook: {}",
                e.text
            );
        }
        assert!(
            e.text.len() + MAX_SUFFIX_BYTES < MAX_BODY_BYTES,
            "no room for the longest chain"
        );
    }
    v
}

/// The federation info of the copy `self_id` forwards.
fn advanced(info: &FedInfo, self_id: &str) -> FedInfo {
    let mut chain = info.chain.clone();
    chain.push(self_id.to_string());
    FedInfo {
        origin: Some(info.origin.clone().unwrap_or_else(|| self_id.to_string())),
        chain,
        hops: info.hops + 1,
    }
}

fn within_limits(info: &FedInfo) -> bool {
    info.chain.len() < MAX_CHAIN_LEN && i64::from(info.hops) < MAX_HOPS_ACCEPTED
}

/// Forwards `e` from `from` to a peer `to` (its `kite` hook), checking the bytes sent.
/// Answers the peer's answer, or None when the copy is past the federation limits.
fn forward(
    e: &IncomingEvent,
    stored: &Map<String, Value>,
    from: &str,
    to: &str,
) -> Option<(String, Result<IncomingEvent, ApiError>)> {
    let wire = fed::forward_text(&e.text, &e.fed, from).expect("forward_text");
    assert!(
        wire.len() <= MAX_BODY_BYTES,
        "forwarded {} bytes",
        wire.len()
    );
    let sent = parse_object(&wire, "forwarded text");
    assert_eq!(
        &without_fed(&sent),
        stored,
        "forward_text changed the event"
    );
    assert!(!sent.contains_key(EXT_SEQ));
    let info = advanced(&e.fed, from);
    let mut ce = HeaderMap::new();
    ce.insert(
        "content-type",
        HeaderValue::from_static("application/cloudevents+json"),
    );
    let peer = Hook {
        team: "peer",
        source: "kite",
        scheme: None,
        instance_id: to,
    };
    let got = build_event(peer, &ce, wire.as_bytes(), now());
    if !within_limits(&e.fed) {
        assert!(FedInfo::read(&sent).is_err(), "limits not enforced");
        match got {
            Err(err) => assert_eq!(err.code, "invalid_extension"),
            Ok(_) => panic!("a copy past the federation limits was accepted"),
        }
        return None;
    }
    assert_eq!(FedInfo::read(&sent).as_ref(), Ok(&info));
    if let Ok(p) = &got {
        let kept = check_accepted(p, &peer);
        assert_eq!((&p.id, &p.source, &p.ty), (&e.id, &e.source, &e.ty));
        assert_eq!(p.fed, info);
        assert!(
            same_event(stored, &kept),
            "the peer stored a different event\nsent:   {}\nstored: {}",
            e.text,
            p.text
        );
    }
    Some((wire, got))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let scheme = SCHEMES
        .get(usize::from((sel >> 4) & 7).wrapping_sub(1))
        .copied();
    let source = match SOURCES[usize::from(sel & 3)] {
        "kite" if scheme.is_some() => "shop",
        s => s,
    };
    let mode = ((sel >> 2) & 3) % 3;
    let (block, body) = match find(rest, b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&[][..], rest),
    };
    let inflated;
    let body = if sel & 0x80 != 0 {
        inflated = inflate(body);
        &inflated[..]
    } else {
        body
    };
    if body.len() > MAX_BODY_BYTES {
        return;
    }
    let h = headers(mode, block);

    // The depth scanner agrees with the parser wherever the parser answers.
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        assert_eq!(
            json_depth(body, usize::MAX),
            value_depth(&v),
            "json_depth of the body"
        );
    }

    let hook = Hook {
        team: TEAM,
        source,
        scheme,
        instance_id: SELF_ID,
    };
    let result = build_event(hook, &h, body, now());

    // A signed source's identity comes from signed material, and a structured event is its
    // body: either way the `ce-*` headers change nothing.
    if (scheme.is_some() || structured(&h)) && h.keys().any(|k| k.as_str().starts_with("ce-")) {
        let mut plain = h.clone();
        let names: Vec<HeaderName> = plain
            .keys()
            .filter(|k| k.as_str().starts_with("ce-"))
            .cloned()
            .collect();
        for k in names {
            plain.remove(k);
        }
        let again = build_event(hook, &plain, body, now());
        match (&result, &again) {
            (Ok(a), Ok(b)) => {
                assert_eq!((&a.id, &a.source, &a.ty), (&b.id, &b.source, &b.ty));
                assert_eq!(a.fed, b.fed);
                assert_eq!(
                    parse_object(&a.text, "with ce-*"),
                    parse_object(&b.text, "without ce-*")
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.code, b.code, "{a} / {b}"),
            (a, b) => panic!(
                "ce-* headers changed a {} event\nwith:    {a:?}\nwithout: {b:?}",
                if scheme.is_some() {
                    "signed"
                } else {
                    "structured"
                }
            ),
        }
    }

    let Ok(e) = result else {
        return;
    };
    let stored = check_accepted(&e, &hook);

    // Readers get the whole event back; the stream gets its kiteseq too.
    let seq = i64::MAX - i64::try_from(body.len()).expect("small");
    for s in [None, Some(seq)] {
        let whole = fed::stored_text(&e.text, &e.fed, s).expect("stored_text");
        let whole = parse_object(&whole, "stored_text");
        assert_eq!(FedInfo::read(&whole).as_ref(), Ok(&e.fed));
        assert_eq!(whole.get(EXT_SEQ).and_then(Value::as_i64), s);
        assert_eq!(without_fed(&whole), stored);
    }

    // The forwarded copy, on a peer's `kite` hook.
    let Some((wire, got)) = forward(&e, &stored, SELF_ID, PEER_ID) else {
        return;
    };
    let p = match got {
        Ok(p) => p,
        Err(err) if err.status == 413 && source == "kite" => {
            // A `kite` event may come in with too little room for one more hop; not when
            // the peer's normalisation is what made it too large.
            let room = fed::forward_suffix(&advanced(&e.fed, SELF_ID), PEER_ID).len() + 1;
            assert!(
                e.text.len() + room > MAX_BODY_BYTES,
                "the peer grew the event past its limit: {err}"
            );
            return;
        }
        Err(err) => panic!("forwarded event refused by the peer: {err}\nwire: {wire}"),
    };

    // What the peer stored is what every later instance stores.
    let kept = parse_object(&p.text, "peer text");
    let Some((wire, got)) = forward(&p, &kept, PEER_ID, THIRD_ID) else {
        return;
    };
    match got {
        Ok(q) => assert!(
            close(
                &Value::Object(kept),
                &Value::Object(parse_object(&q.text, "third"))
            ),
            "not a fixed point\npeer:  {}\nthird: {}",
            p.text,
            q.text
        ),
        Err(err) if err.status == 413 && source == "kite" => {
            let room = fed::forward_suffix(&advanced(&p.fed, PEER_ID), THIRD_ID).len() + 1;
            assert!(
                p.text.len() + room > MAX_BODY_BYTES,
                "the third instance grew the event past its limit: {err}"
            );
        }
        Err(err) => panic!("second forward refused: {err}\nwire: {wire}"),
    }
});
