//! `fed::parse_chain` and `fed::FedInfo::read` on arbitrary text.
//!
//! The input is used as a `kitefedchain` value; when it is also a JSON object it is read as
//! a CloudEvent's extensions. Invariants: an accepted chain holds 0..=MAX_CHAIN_LEN valid
//! ids, re-serializes to a chain that parses the same, and round-trips through
//! `fed::forward` (self appended, origin set once, hops + 1) unless that exceeds the limits.
#![no_main]

use kite_wire::fed::{
    self, parse_chain, FedInfo, EXT_CHAIN, EXT_SEQ, MAX_CHAIN_LEN, MAX_HOPS_ACCEPTED,
    MAX_INSTANCE_ID_LEN,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SELF_ID: &str = "fuzz-self";

/// Forwards `ev` (whose extensions read as `before`) and checks the result.
fn check_forward(mut ev: Map<String, Value>, before: &FedInfo) {
    fed::forward(&mut ev, SELF_ID).expect("forward of readable extensions");
    assert!(!ev.contains_key(EXT_SEQ));
    let after = FedInfo::read(&ev);
    if before.chain.len() >= MAX_CHAIN_LEN || i64::from(before.hops) >= MAX_HOPS_ACCEPTED {
        assert!(after.is_err(), "limits not enforced after forward: {ev:?}");
        return;
    }
    let after = after.expect("forwarded extensions re-read");
    let mut chain = before.chain.clone();
    chain.push(SELF_ID.to_string());
    assert_eq!(after.chain, chain);
    assert_eq!(after.hops, before.hops + 1);
    assert_eq!(
        after.origin.as_deref(),
        Some(before.origin.as_deref().unwrap_or(SELF_ID))
    );
    assert!(after.visited(SELF_ID));
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);

    if let Ok(chain) = parse_chain(&s) {
        assert!(chain.len() <= MAX_CHAIN_LEN);
        for id in &chain {
            assert!(!id.is_empty() && id.len() <= MAX_INSTANCE_ID_LEN);
            assert!(!id.chars().any(char::is_control));
        }
        let again = Value::from(chain.clone()).to_string();
        assert_eq!(parse_chain(&again).as_ref(), Ok(&chain));

        let mut ev = Map::new();
        ev.insert(EXT_CHAIN.into(), Value::String(s.to_string()));
        let info = FedInfo::read(&ev).expect("a parsed chain reads");
        assert_eq!(info.chain, chain);
        assert_eq!((info.origin.as_deref(), info.hops), (None, 0));
        check_forward(ev, &info);
    }

    if let Ok(Value::Object(ev)) = serde_json::from_str::<Value>(&s) {
        if let Ok(info) = FedInfo::read(&ev) {
            assert!(i64::from(info.hops) <= MAX_HOPS_ACCEPTED);
            assert!(info.chain.len() <= MAX_CHAIN_LEN);
            if let Some(o) = &info.origin {
                assert!(!o.is_empty() && o.len() <= MAX_INSTANCE_ID_LEN);
            }
            check_forward(ev, &info);
        }
    }
});
