//! `scope::ScopeSet::compile` then `.matches` on arbitrary pattern lists and event types.
//!
//! Invariants: the error kind follows the list (empty, too many, or an invalid pattern);
//! an accepted list only holds 1..=MAX_SCOPE_LEN printable patterns; a plain pattern
//! (only `A-Z a-z 0-9 . _ -`) matches itself and its `com.` form; `*` matches everything.
#![no_main]

use arbitrary::Arbitrary;
use kite_wire::scope::{ScopeError, ScopeSet, MAX_SCOPES, MAX_SCOPE_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    patterns: Vec<String>,
    types: Vec<String>,
}

fn plain(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fuzz_target!(|input: Input| {
    let Input { patterns, types } = input;
    match ScopeSet::compile(&patterns) {
        Err(ScopeError::Empty) => assert!(patterns.is_empty()),
        Err(ScopeError::TooMany) => assert!(patterns.len() > MAX_SCOPES),
        Err(ScopeError::Invalid { .. }) => {
            assert!(!patterns.is_empty() && patterns.len() <= MAX_SCOPES)
        }
        Ok(set) => {
            assert!(!patterns.is_empty() && patterns.len() <= MAX_SCOPES);
            for p in &patterns {
                assert!(!p.is_empty() && p.len() <= MAX_SCOPE_LEN);
                assert!(!p.chars().any(char::is_control));
                if plain(p) {
                    assert!(set.matches(p), "plain pattern {p:?} does not match itself");
                    assert!(
                        set.matches(&format!("com.{p}")),
                        "plain pattern {p:?} does not match com.{p}"
                    );
                }
            }
            let star = patterns.iter().any(|p| p == "*");
            for t in &types {
                let m = set.matches(t);
                if star {
                    assert!(m, "* does not match {t:?}");
                }
            }
        }
    }
});
