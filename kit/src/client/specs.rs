//! The request models of the admin client: what a verb sends, each field only when set.

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

/// A peer to create (`POST /api/federation/peers`).
#[derive(Debug, Clone, Default)]
pub struct PeerSpec {
    /// Its name, unique in the team.
    pub name: String,
    /// Where events go: the peer's `/hooks/{team}/kite`.
    pub url: String,
    /// The token minted on the peer for this direction.
    pub token: String,
    /// Event type globs; empty: the API's default (`*`).
    pub scopes: Vec<String>,
    /// Events with this many hops or more are not forwarded (API default 3).
    pub max_hops: Option<u32>,
    /// Key id sent as `X-Kite-Key-Id` (none: the token goes as a bearer).
    pub key_id: Option<String>,
    /// `active` (the default) or `paused`.
    pub status: Option<String>,
    /// The token the peer signs its events to this side with (the Kite guide's
    /// `inbound_token`).
    pub inbound_token: Option<String>,
}

/// Changes to a peer (`PATCH`): each field left `None` stays as it is.
#[derive(Debug, Clone, Default)]
pub struct PeerChanges {
    /// New name.
    pub name: Option<String>,
    /// New hook URL.
    pub url: Option<String>,
    /// New token (the old one stays valid for the overlap).
    pub token: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// New hop limit.
    pub max_hops: Option<u32>,
    /// New key id.
    pub key_id: Option<String>,
    /// `active`, `paused` or `revoked`.
    pub status: Option<String>,
    /// New inbound token.
    pub inbound_token: Option<String>,
}

impl PeerChanges {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.body().as_object().is_none_or(Map::is_empty)
    }

    pub(super) fn body(&self) -> Value {
        Body::default()
            .opt("name", self.name.clone())
            .opt("peer_hook_url", self.url.clone())
            .opt("outbound_token", self.token.clone())
            .opt("scopes", self.scopes.clone())
            .opt("max_hops", self.max_hops)
            .opt("key_id", self.key_id.clone())
            .opt("status", self.status.clone())
            .opt("inbound_token", self.inbound_token.clone())
            .value()
    }
}

/// A trusted sender to create (`POST /api/federation/trusted-senders`).
#[derive(Debug, Clone, Default)]
pub struct SenderSpec {
    /// Its name, unique in the team.
    pub name: String,
    /// The token the sender holds (minted here with `POST /api/federation/tokens`).
    pub token: String,
    /// The key id it names in `X-Kite-Key-Id` (default: the id of the minted token).
    pub key_id: Option<String>,
    /// Accept the body-only `X-Kite-Signature` from it.
    pub legacy_signature: bool,
}

/// Changes to a trusted sender (`PATCH`): each field left `None` stays as it is.
#[derive(Debug, Clone, Default)]
pub struct SenderChanges {
    /// New name.
    pub name: Option<String>,
    /// New token (the old one stays valid for the overlap).
    pub token: Option<String>,
    /// Accept the body-only signature or not.
    pub legacy_signature: Option<bool>,
}

/// A signed provider source to create (`POST /api/sources`).
#[derive(Debug, Clone, Default)]
pub struct SourceSpec {
    /// The `{source}` of `/hooks/{team}/{source}`.
    pub name: String,
    /// `stripe`, `github`, `slack`, `standard-webhooks` or `hmac-sha256`.
    pub scheme: String,
    /// The provider's signing secret.
    pub secret: String,
    /// The signature header of the `hmac-sha256` scheme.
    pub header: Option<String>,
}

/// Filters of an outbox listing (`GET /api/federation/outbox`).
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Only this peer's rows.
    pub peer_id: Option<String>,
    /// Only rows in this state (`pending`, `delivered`, `dead`, `cancelled`, `skipped`).
    pub status: Option<String>,
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
    use serde_json::json;

    #[test]
    fn bodies_carry_only_what_is_set() {
        assert!(PeerChanges::default().is_empty());
        let c = PeerChanges {
            status: Some("paused".into()),
            max_hops: Some(2),
            ..PeerChanges::default()
        };
        assert_eq!(c.body(), json!({"status": "paused", "max_hops": 2}));
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
