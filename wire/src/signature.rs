//! The Kite federation signature: `X-Kite-Signature: sha256=<hex HMAC-SHA256(token, body)>`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Header carrying the body signature.
pub const SIGNATURE_HEADER: &str = "x-kite-signature";
/// Header naming the sender's key instead of sending the secret as a bearer.
pub const KEY_ID_HEADER: &str = "x-kite-key-id";
/// Header a receiver answers with its instance id.
pub const INSTANCE_ID_HEADER: &str = "x-kite-instance-id";
/// Header naming the tokens a federation POST is signed with by their hints
/// ([`token_hint`]), so a receiver finds its sender among those its bearer does not name
/// without trying every secret it holds.
pub const TOKEN_HINTS_HEADER: &str = "x-kite-token-hints";
/// The most hints a receiver reads.
pub const MAX_TOKEN_HINTS: usize = 4;

/// A token's hint: the first 8 bytes of its SHA-256, hex. It names the token without
/// telling anything of it.
pub fn token_hint(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

/// The hints a request names (at most [`MAX_TOKEN_HINTS`]).
pub fn token_hints(headers: &http::HeaderMap) -> Vec<&str> {
    headers
        .get(TOKEN_HINTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_whitespace().take(MAX_TOKEN_HINTS).collect())
        .unwrap_or_default()
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// The header value signing `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Checks a header value against `body` in constant time. Malformed headers fail.
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// The headers of one federation POST: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature` with one signature for `token` and one for each of `also`: the token
/// it replaced, in rotation, and the token the peer minted for this side, so a receiver
/// told either takes it), the body-only `X-Kite-Signature` for peers running Kite, and who
/// signs: `X-Kite-Key-Id` when the peer has a key id, else the token as a bearer.
/// [`verify_federation`] is the other side.
pub fn federation_headers(
    token: &str,
    also: &[&str],
    key_id: Option<&str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut secrets = vec![token];
    secrets.extend(also.iter().copied().filter(|s| *s != token));
    let hints = secrets
        .iter()
        .map(|s| token_hint(s))
        .collect::<Vec<_>>()
        .join(" ");
    let mut h = vec![
        ("content-type", "application/cloudevents+json".to_string()),
        (SIGNATURE_HEADER, sign(token, body)),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            crate::provider::sign_standard(&secrets, id, timestamp, body),
        ),
        (TOKEN_HINTS_HEADER, hints),
    ];
    match key_id {
        Some(k) => h.push((KEY_ID_HEADER, k.to_string())),
        None => h.push(("authorization", format!("Bearer {token}"))),
    }
    h
}

/// The `webhook-id` of an event: unique per message, as Standard Webhooks receivers
/// deduplicate by it, so derived from the event's whole identity (its CloudEvent `source` and
/// `id`; two sources may use the same id), and the same on every retry.
pub fn message_id(source: &str, id: &str) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    format!("msg_{}", hex::encode(&h.finalize()[..16]))
}

/// The longest ordering key kept as it is; a longer one (or one with a NUL) is kept as
/// `sha256:` and its digest's hex, so any attribute value makes a key Postgres can index.
pub const ORDERING_KEY_MAX: usize = 200;

/// An ordered peer's key for an attribute's value (see [`ORDERING_KEY_MAX`]).
pub fn ordering_key(value: &str) -> String {
    use sha2::Digest;
    if value.len() <= ORDERING_KEY_MAX && !value.contains('\0') {
        return value.to_owned();
    }
    format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
}

/// Why a federation request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FederationSigError {
    /// Missing or wrong.
    #[error("signature missing or invalid")]
    Invalid,
    /// The signed timestamp is too far from now.
    #[error("the signed timestamp is more than 5 minutes from now")]
    Stale,
    /// Only the body-only `X-Kite-Signature` was sent, and this sender may not use it.
    #[error("this sender must sign with webhook-signature (legacy X-Kite-Signature is not enabled for it)")]
    LegacyNotAllowed,
}

/// Checks a federation request signed by one of `secrets` (the sender's, in rotation):
/// Standard Webhooks headers, or the body-only `X-Kite-Signature` when `legacy` allows it.
pub fn verify_federation(
    secrets: &[&str],
    legacy: bool,
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), FederationSigError> {
    if headers.contains_key("webhook-signature") {
        return crate::provider::verify_standard(
            secrets,
            headers,
            body,
            now,
            crate::provider::DEFAULT_TOLERANCE_SECS,
        )
        .map_err(|e| match e {
            crate::provider::SigError::Invalid => FederationSigError::Invalid,
            crate::provider::SigError::Stale => FederationSigError::Stale,
        });
    }
    match headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) {
        Some(sig) if legacy => {
            if secrets.iter().any(|s| verify(s, body, sig)) {
                Ok(())
            } else {
                Err(FederationSigError::Invalid)
            }
        }
        Some(_) => Err(FederationSigError::LegacyNotAllowed),
        None => Err(FederationSigError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordering_keys_are_short_and_without_nul() {
        assert_eq!(ordering_key("cus_1"), "cus_1");
        assert_eq!(ordering_key(""), "");
        let long = ordering_key(&"x".repeat(100_000));
        assert!(long.starts_with("sha256:") && long.len() == 71, "{long}");
        assert_ne!(ordering_key("a\0b"), "a\0b");
        assert_eq!(
            ordering_key(&"y".repeat(300)),
            ordering_key(&"y".repeat(300))
        );
    }

    #[test]
    fn message_ids_name_the_whole_identity() {
        let a = message_id("/hooks/t/stripe", "evt_1");
        assert_eq!(a, message_id("/hooks/t/stripe", "evt_1"));
        assert_ne!(a, message_id("/hooks/t/github", "evt_1"));
        assert_ne!(message_id("/a", "b/c"), message_id("/a/b", "c"));
        assert!(a.starts_with("msg_") && a.len() == 4 + 32);
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    proptest! {
        #[test]
        fn sign_then_verify(secret in "[a-zA-Z0-9_-]{1,64}", body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let h = sign(&secret, &body);
            prop_assert!(verify(&secret, &body, &h));
            let mut other = body.clone();
            other.push(1);
            prop_assert!(!verify(&secret, &other, &h));
            let wrong = format!("{secret}x");
            prop_assert!(!verify(&wrong, &body, &h));
        }

        #[test]
        fn verify_never_panics(h in "\\PC{0,80}") {
            let _ = verify("s", b"body", &h);
        }
    }

    #[test]
    fn federation_headers_verify_on_the_other_side() {
        let body = br#"{"id":"e1"}"#;
        let now = 1_700_000_000;
        let mut h = http::HeaderMap::new();
        for (k, v) in federation_headers("new", &["old"], Some("a-key"), "e1", now, body) {
            h.insert(k, v.parse().unwrap());
        }
        assert_eq!(h["x-kite-key-id"], "a-key");
        // A receiver that still holds only the old secret verifies too (rotation).
        assert_eq!(verify_federation(&["old"], false, &h, body, now), Ok(()));
        assert_eq!(
            verify_federation(&["other"], false, &h, body, now),
            Err(FederationSigError::Invalid)
        );
        assert_eq!(
            verify_federation(&["new"], false, &h, body, now + 3600),
            Err(FederationSigError::Stale)
        );
        h.remove("webhook-signature");
        assert_eq!(
            verify_federation(&["new"], false, &h, body, now),
            Err(FederationSigError::LegacyNotAllowed)
        );
        assert_eq!(verify_federation(&["new"], true, &h, body, now), Ok(()));
    }
}
