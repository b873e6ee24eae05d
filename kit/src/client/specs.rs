//! What the admin client builds by hand: path segments, query strings and the few bodies
//! whose request type the server reads from another shape.

use serde_json::{Map, Value};

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON object of the fields that are set.
#[derive(Default)]
pub(super) struct Body(Map<String, Value>);

impl Body {
    pub(super) fn set(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.0.insert(k.to_string(), v.into());
        self
    }

    pub(super) fn opt<T: Into<Value>>(self, k: &str, v: Option<T>) -> Self {
        match v {
            Some(v) => self.set(k, v),
            None => self,
        }
    }

    pub(super) fn value(self) -> Value {
        Value::Object(self.0)
    }
}

/// Filters of an outbox listing (`GET /api/federation/outbox`).
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Only this peer's rows.
    pub peer_id: Option<String>,
    /// Only rows in this state.
    pub status: Option<kite_api::types::OutboxState>,
    /// Page size (API default 100, at most 1,000).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// A query string of the parameters that are set (`""` when none is).
pub(super) fn query(params: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_only_what_is_set() {
        assert_eq!(query(&[("a", None), ("b", None)]), "");
        assert_eq!(
            query(&[
                ("status", Some("dead".into())),
                ("cursor", Some("7".into()))
            ]),
            "?status=dead&cursor=7"
        );
        assert_eq!(enc("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }
}
