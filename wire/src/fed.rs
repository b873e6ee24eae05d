//! Federation extensions: `kitefedorigin`, `kitefedchain` and `kitefedhops` on a structured
//! CloudEvent (a JSON object), read with validation and advanced when forwarding.

use serde_json::{Map, Value};

/// Instance id of the first forwarder (set once).
pub const EXT_ORIGIN: &str = "kitefedorigin";
/// JSON array string of the instance ids that forwarded the event.
pub const EXT_CHAIN: &str = "kitefedchain";
/// Number of forwards so far.
pub const EXT_HOPS: &str = "kitefedhops";
/// This instance's sequence number; local, never forwarded.
pub const EXT_SEQ: &str = "kiteseq";
/// Highest hop count accepted on input.
pub const MAX_HOPS_ACCEPTED: i64 = 64;

/// A peer's hop limit (`max_hops`): events that travelled this many hops or more are not
/// forwarded to it. The one place its bounds and default live.
pub mod hop_limit {
    /// The lowest limit.
    pub const MIN: i32 = 1;
    /// The highest limit a peer or a peering may have.
    pub const MAX: i32 = 16;
    /// The limit of a peer or an invitation that names none.
    pub const DEFAULT: i32 = 3;

    /// `n` as a hop limit, or why it is not one.
    pub fn check(n: i64) -> Result<i32, String> {
        match i32::try_from(n) {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
            _ => Err(format!("max_hops must be within {MIN}..={MAX}, not {n}")),
        }
    }
}
/// Longest chain accepted on input.
pub const MAX_CHAIN_LEN: usize = 64;
/// Longest instance id accepted in a chain or origin.
pub const MAX_INSTANCE_ID_LEN: usize = 128;

/// A federation extension that is present but malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FedError {
    /// The extension's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> FedError {
    FedError {
        field,
        reason: reason.into(),
    }
}

/// The federation state of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FedInfo {
    /// First forwarder, if the event was ever forwarded.
    pub origin: Option<String>,
    /// Every forwarder so far, in order.
    pub chain: Vec<String>,
    /// How many times it was forwarded.
    pub hops: u32,
}

/// An instance id in an origin or chain: 1..=128 visible ASCII characters other than `"` and
/// `\`, so it needs no escaping and every chain's size is bounded (see [`MAX_SUFFIX_BYTES`]).
pub fn valid_instance_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_INSTANCE_ID_LEN
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

fn valid_id(s: &str) -> bool {
    valid_instance_id(s)
}

/// Most bytes the federation extensions can add to an event: the longest origin, the
/// longest chain (each entry quoted and escaped inside a JSON string) and the hop count.
pub const MAX_SUFFIX_BYTES: usize = {
    let origin = 20 + MAX_INSTANCE_ID_LEN;
    let chain = 20 + (MAX_CHAIN_LEN + 1) * (MAX_INSTANCE_ID_LEN + 5);
    let hops = 20;
    origin + chain + hops
};

impl FedInfo {
    /// Reads and validates the extensions of a structured CloudEvent object.
    pub fn read(ev: &Map<String, Value>) -> Result<Self, FedError> {
        let origin = match ev.get(EXT_ORIGIN) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if valid_id(s) => Some(s.clone()),
            Some(_) => return Err(err(EXT_ORIGIN, "must be a non-empty string")),
        };
        let chain = match ev.get(EXT_CHAIN) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => parse_chain(s)?,
            Some(_) => return Err(err(EXT_CHAIN, "must be a JSON array string")),
        };
        let hops = match ev.get(EXT_HOPS) {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| err(EXT_HOPS, "must be an integer"))?,
            Some(Value::String(s)) => s
                .parse::<i64>()
                .map_err(|_| err(EXT_HOPS, "must be an integer"))?,
            Some(_) => return Err(err(EXT_HOPS, "must be an integer")),
        };
        if !(0..=MAX_HOPS_ACCEPTED).contains(&hops) {
            return Err(err(
                EXT_HOPS,
                format!("must be within 0..={MAX_HOPS_ACCEPTED}"),
            ));
        }
        Ok(Self {
            origin,
            chain,
            hops: hops as u32,
        })
    }

    /// True if `instance_id` already forwarded this event.
    pub fn visited(&self, instance_id: &str) -> bool {
        self.chain.iter().any(|c| c == instance_id)
    }
}

/// Parses a `kitefedchain` value: a JSON array of instance id strings.
pub fn parse_chain(s: &str) -> Result<Vec<String>, FedError> {
    let v: Value = serde_json::from_str(s).map_err(|_| err(EXT_CHAIN, "must be a JSON array"))?;
    let Value::Array(items) = v else {
        return Err(err(EXT_CHAIN, "must be a JSON array"));
    };
    if items.len() > MAX_CHAIN_LEN {
        return Err(err(EXT_CHAIN, format!("at most {MAX_CHAIN_LEN} entries")));
    }
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) if valid_id(&s) => Ok(s),
            _ => Err(err(EXT_CHAIN, "entries must be non-empty strings")),
        })
        .collect()
}

/// Turns a stored event into the copy this instance forwards: origin set once, this
/// instance appended to the chain, hops plus one, local extensions removed.
pub fn forward(ev: &mut Map<String, Value>, self_id: &str) -> Result<(), FedError> {
    let mut info = FedInfo::read(ev)?;
    let origin = info.origin.take().unwrap_or_else(|| self_id.to_string());
    info.chain.push(self_id.to_string());
    ev.remove(EXT_SEQ);
    ev.insert(EXT_ORIGIN.into(), Value::String(origin));
    ev.insert(
        EXT_CHAIN.into(),
        Value::String(serde_json::Value::from(info.chain).to_string()),
    );
    ev.insert(EXT_HOPS.into(), Value::from(info.hops + 1));
    Ok(())
}

/// The extensions of the copy `self_id` forwards, as JSON object members to splice in:
/// origin set once, `self_id` appended to the chain, hops plus one.
pub fn forward_suffix(info: &FedInfo, self_id: &str) -> String {
    let origin = info.origin.as_deref().unwrap_or(self_id);
    let chain: Vec<&str> = info
        .chain
        .iter()
        .map(String::as_str)
        .chain([self_id])
        .collect();
    members(Some(origin), &chain, info.hops + 1)
}

fn members(
    origin: Option<&str>,
    chain: &[impl AsRef<str> + serde::Serialize],
    hops: u32,
) -> String {
    use std::fmt::Write as _;
    // A string serializes without fail; the chain is a JSON array string.
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut out =
        String::with_capacity(64 + chain.iter().map(|c| c.as_ref().len() + 4).sum::<usize>() * 2);
    if let Some(o) = origin {
        let _ = write!(out, "\"{EXT_ORIGIN}\":{}", json(o));
    }
    if !chain.is_empty() {
        let text = serde_json::to_string(chain).unwrap_or_default();
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "\"{EXT_CHAIN}\":{}", json(&text));
    }
    if hops > 0 {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "\"{EXT_HOPS}\":{hops}");
    }
    out
}

/// Appends JSON object members (`"k":v,...`) to a JSON object held as text, without parsing
/// it. Fails if the text does not end like an object.
pub fn splice(object: &str, extra: &str) -> Result<String, FedError> {
    let body = object.trim_end();
    let Some(open) = body.strip_suffix('}') else {
        return Err(err(EXT_SEQ, "stored event is not a JSON object"));
    };
    if extra.is_empty() {
        return Ok(body.to_string());
    }
    let open = open.trim_end();
    let sep = if open.ends_with('{') { "" } else { "," };
    let mut out = String::with_capacity(open.len() + extra.len() + 2);
    out.push_str(open);
    out.push_str(sep);
    out.push_str(extra);
    out.push('}');
    Ok(out)
}

/// The same as [`forward`] for an event held as JSON text: `rest` is the stored event
/// without its federation extensions and `kiteseq` (a JSON object), `info` those extensions.
/// Answers the forwarded event's JSON, without parsing `rest`.
pub fn forward_text(rest: &str, info: &FedInfo, self_id: &str) -> Result<String, FedError> {
    splice(rest, &forward_suffix(info, self_id))
}

/// The whole stored event as readers see it: `rest` with its federation extensions put
/// back and, for the stream, `kiteseq`.
pub fn stored_text(rest: &str, info: &FedInfo, seq: Option<i64>) -> Result<String, FedError> {
    let mut extra = members(info.origin.as_deref(), &info.chain, info.hops);
    if let Some(seq) = seq {
        if !extra.is_empty() {
            extra.push(',');
        }
        extra.push_str(&format!("\"{EXT_SEQ}\":{seq}"));
    }
    splice(rest, &extra)
}

/// Removes the federation extensions and `kiteseq` from an event object.
pub fn strip(ev: &mut Map<String, Value>) {
    for k in [EXT_ORIGIN, EXT_CHAIN, EXT_HOPS, EXT_SEQ] {
        ev.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn forward_sets_origin_once_and_appends() {
        let mut ev = obj(json!({"id":"1","kiteseq":7}));
        forward(&mut ev, "a").unwrap();
        assert_eq!(ev["kitefedorigin"], "a");
        assert_eq!(ev["kitefedchain"], "[\"a\"]");
        assert_eq!(ev["kitefedhops"], 1);
        assert!(ev.get("kiteseq").is_none());
        forward(&mut ev, "b").unwrap();
        let info = FedInfo::read(&ev).unwrap();
        assert_eq!(info.origin.as_deref(), Some("a"));
        assert_eq!(info.chain, vec!["a", "b"]);
        assert_eq!(info.hops, 2);
        assert!(info.visited("a") && !info.visited("c"));
    }

    #[test]
    fn hostile_values_are_refused() {
        for bad in [
            json!({"kitefedhops": -1}),
            json!({"kitefedhops": 1e30}),
            json!({"kitefedhops": "x"}),
            json!({"kitefedhops": [1]}),
            json!({"kitefedchain": "not json"}),
            json!({"kitefedchain": "{\"a\":1}"}),
            json!({"kitefedchain": "[1,2]"}),
            json!({"kitefedchain": ["a"]}),
            json!({"kitefedorigin": 5}),
            json!({"kitefedorigin": ""}),
        ] {
            assert!(FedInfo::read(&obj(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn forward_text_matches_forward() {
        let full = obj(
            json!({"id":"1","type":"t","data":{"a":[1,2]},"kitefedorigin":"a","kitefedchain":"[\"a\"]","kitefedhops":1,"kiteseq":9}),
        );
        let mut expected = full.clone();
        forward(&mut expected, "b").unwrap();
        let info = FedInfo::read(&full).unwrap();
        let mut rest = full.clone();
        strip(&mut rest);
        let text = forward_text(&Value::Object(rest.clone()).to_string(), &info, "b").unwrap();
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(got, Value::Object(expected));
        // A first forward, with no extensions yet, and an empty object.
        let none = FedInfo::default();
        let t = forward_text("{\"id\": \"x\"}", &none, "a").unwrap();
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(
            (v["kitefedorigin"].as_str(), v["kitefedhops"].as_i64()),
            (Some("a"), Some(1))
        );
        assert!(serde_json::from_str::<Value>(&forward_text("{}", &none, "a").unwrap()).is_ok());
        assert!(forward_text("[1]", &none, "a").is_err());
        // Readers get the stored extensions back, and the stream its kiteseq.
        let back = stored_text(&Value::Object(rest).to_string(), &info, Some(9)).unwrap();
        let back: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(back, Value::Object(full));
        let bytes = forward_suffix(
            &FedInfo {
                origin: Some("o".repeat(MAX_INSTANCE_ID_LEN)),
                chain: vec!["c".repeat(MAX_INSTANCE_ID_LEN); MAX_CHAIN_LEN],
                hops: MAX_HOPS_ACCEPTED as u32,
            },
            &"s".repeat(MAX_INSTANCE_ID_LEN),
        )
        .len();
        assert!(bytes <= MAX_SUFFIX_BYTES, "{bytes}");
    }

    proptest! {
        #[test]
        fn chain_roundtrip(ids in proptest::collection::vec("[a-z0-9-]{1,20}", 0..10)) {
            let mut ev = Map::new();
            for id in &ids {
                forward(&mut ev, id).unwrap();
            }
            let info = FedInfo::read(&ev).unwrap();
            prop_assert_eq!(info.hops as usize, ids.len());
            prop_assert_eq!(&info.chain, &ids);
            prop_assert_eq!(info.origin, ids.first().cloned());
        }

        #[test]
        fn parse_chain_never_panics(s in "\\PC{0,64}") {
            let _ = parse_chain(&s);
        }
    }
}
