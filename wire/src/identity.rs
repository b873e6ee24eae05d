//! A server's Ed25519 identity: key pairs, key ids, server names, and the signature of every
//! request between handshake peers. Like Matrix's `X-Matrix` authorization, a signed request
//! names where it goes: `webhook-signature: kite1,<base64 Ed25519>` over
//! `kite1\n{METHOD}\n{destination}\n{path}\n{webhook-id}\n{webhook-timestamp}\n{body}`, so a
//! request made for one server, method or path is worth nothing anywhere else.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use http::HeaderMap;
use rand::RngCore;

use crate::provider::{SigError, DEFAULT_TOLERANCE_SECS};
use crate::signature::KEY_ID_HEADER;

/// The signature scheme of server-to-server requests, as tagged in `webhook-signature`.
pub const REQUEST_SCHEME: &str = "kite1";
/// Header naming the server a request is for (its `server_name`): part of what is signed.
pub const DESTINATION_HEADER: &str = "x-kite-destination";
/// Longest server name: a DNS name's 253 bytes.
pub const MAX_SERVER_NAME_LEN: usize = 253;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Whether `s` is a server name: a DNS-name-like string of at most 253 bytes, dot-separated
/// labels of 1 to 63 ASCII letters, digits and `-` (not at a label's ends). Server names
/// become peer names, metric labels and log fields, so nothing else is accepted.
pub fn valid_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVER_NAME_LEN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `s` is a key id: 1 to 128 visible ASCII characters other than `"` and `\`
/// (kite makes `ed25519:` and 16 hex digits).
pub fn valid_key_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_ID_LEN
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Header naming the sending server (its `server_name`), so the receiver knows whose pinned
/// keys to check `X-Kite-Key-Id` against.
pub const SERVER_HEADER: &str = "x-kite-server";

/// A private key: the 32-byte Ed25519 seed.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self(SigningKey::from_bytes(&seed))
    }

    /// The seed as base64url (how it is sealed at rest).
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.to_bytes())
    }

    /// Reads a seed written by [`SecretKey::to_base64`].
    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(s.trim()).ok()?.try_into().ok()?;
        Some(Self(SigningKey::from_bytes(&bytes)))
    }

    /// The public half, as published.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// base64url (no padding) of the 32 bytes: the descriptor's `public_key`.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Reads a descriptor's `public_key` (base64url of 32 bytes; padding tolerated).
    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(s.trim().trim_end_matches('='))
            .ok()?
            .try_into()
            .ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(Self)
    }

    /// Checks a 64-byte signature over `message` (strict: no malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(message, &sig).is_ok()
    }
}

/// A new key id: `ed25519:` and 16 random hex digits.
pub fn new_key_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    format!("ed25519:{}", hex::encode(b))
}

/// What a signed server-to-server request is for: its method, the server it goes to and the
/// path it is sent to (the team is in the path). The receiver checks a signature against the
/// request as it arrived and its own server name, so a request relayed elsewhere fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The receiving server's name.
    pub destination: &'a str,
    /// The request's path (no query), as sent.
    pub path: &'a str,
}

fn signed_content(target: &Target<'_>, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "{REQUEST_SCHEME}\n{}\n{}\n{}\n{id}\n{timestamp}\n",
        target.method.to_ascii_uppercase(),
        target.destination,
        target.path
    );
    let mut m = Vec::with_capacity(head.len() + body.len());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(body);
    m
}

/// The headers of a request signed by a server's identity key: `webhook-id`,
/// `webhook-timestamp`, `webhook-signature: kite1,<base64>`, `X-Kite-Key-Id`,
/// `X-Kite-Server` and `X-Kite-Destination`.
pub fn signed_headers(
    server_name: &str,
    key_id: &str,
    key: &SecretKey,
    target: &Target<'_>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let sig = key.sign(&signed_content(target, id, &ts, body));
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts),
        (
            "webhook-signature",
            format!("{REQUEST_SCHEME},{}", STANDARD.encode(sig)),
        ),
        (KEY_ID_HEADER, key_id.to_string()),
        (SERVER_HEADER, server_name.to_string()),
        (DESTINATION_HEADER, target.destination.to_string()),
    ]
}

/// Who a signed server request says it is from, and for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// `X-Kite-Server`.
    pub server_name: String,
    /// `X-Kite-Key-Id`.
    pub key_id: String,
    /// `X-Kite-Destination` (None: the request names no destination).
    pub destination: Option<String>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether a request claims to be signed by a server's identity key (it names a server).
pub fn claimed(headers: &HeaderMap) -> Option<Claimed> {
    Some(Claimed {
        server_name: header(headers, SERVER_HEADER)?.to_string(),
        key_id: header(headers, KEY_ID_HEADER)?.to_string(),
        destination: header(headers, DESTINATION_HEADER).map(str::to_string),
    })
}

/// The request's `webhook-id` and `webhook-timestamp` (what a replay cache remembers).
pub fn request_id(headers: &HeaderMap) -> Option<(&str, i64)> {
    let id = header(headers, "webhook-id")?;
    let ts = header(headers, "webhook-timestamp")?.parse().ok()?;
    Some((id, ts))
}

/// Checks a request's `kite1` signature with `key` for `target` (the request as it arrived,
/// with this server as its destination), and that its timestamp is within five minutes of
/// `now`.
pub fn verify_request(
    key: &PublicKey,
    target: &Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SigError> {
    let id = header(headers, "webhook-id").ok_or(SigError::Invalid)?;
    let ts_raw = header(headers, "webhook-timestamp").ok_or(SigError::Invalid)?;
    let ts: i64 = ts_raw.parse().map_err(|_| SigError::Invalid)?;
    let sigs = header(headers, "webhook-signature").ok_or(SigError::Invalid)?;
    let content = signed_content(target, id, ts_raw, body);
    let tag = format!("{REQUEST_SCHEME},");
    let ok = sigs
        .split_whitespace()
        .filter_map(|item| item.strip_prefix(tag.as_str()))
        .filter_map(|b| STANDARD.decode(b).ok())
        .any(|sig| key.verify(&content, &sig));
    if !ok {
        return Err(SigError::Invalid);
    }
    if now.abs_diff(ts) > DEFAULT_TOLERANCE_SECS.unsigned_abs() {
        return Err(SigError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Vec<(&'static str, String)>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in v {
            h.insert(k, v.parse().unwrap());
        }
        h
    }

    const TO_B: Target<'static> = Target {
        method: "POST",
        destination: "b",
        path: "/federation/v1/teams/t/heartbeat",
    };

    #[test]
    fn a_signed_request_verifies_with_its_key_and_for_its_target_only() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let now = 1_700_000_000;
        let h = headers(signed_headers(
            "a",
            "ed25519:1",
            &key,
            &TO_B,
            "msg_1",
            now,
            b"{}",
        ));
        assert_eq!(
            claimed(&h),
            Some(Claimed {
                server_name: "a".into(),
                key_id: "ed25519:1".into(),
                destination: Some("b".into()),
            })
        );
        assert_eq!(request_id(&h), Some(("msg_1", now)));
        assert_eq!(verify_request(&key.public(), &TO_B, &h, b"{}", now), Ok(()));
        assert_eq!(
            verify_request(&other.public(), &TO_B, &h, b"{}", now),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify_request(&key.public(), &TO_B, &h, b"{ }", now),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify_request(&key.public(), &TO_B, &h, b"{}", now + 600),
            Err(SigError::Stale)
        );
        // Relayed to another server, or to another method or path (another team): invalid.
        for elsewhere in [
            Target {
                destination: "c",
                ..TO_B
            },
            Target {
                method: "PUT",
                ..TO_B
            },
            Target {
                path: "/federation/v1/teams/u/heartbeat",
                ..TO_B
            },
        ] {
            assert_eq!(
                verify_request(&key.public(), &elsewhere, &h, b"{}", now),
                Err(SigError::Invalid),
                "{elsewhere:?}"
            );
        }
    }

    #[test]
    fn server_names_are_dns_like_and_bounded() {
        for good in ["a", "instance-a", "kite.example.com", "ma", "A1-b.c2"] {
            assert!(valid_server_name(good), "{good}");
        }
        let long = "a".repeat(64);
        let too_long = vec!["a".repeat(63); 4].join(".");
        for bad in [
            "",
            "<img src=x onerror=alert(1)>",
            "-a",
            "a-",
            "a..b",
            "a b",
            "a_b",
            "a/b",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert!(!valid_server_name(bad), "{bad}");
        }
        assert!(valid_key_id("ed25519:0123abcd"));
        assert!(!valid_key_id("") && !valid_key_id("a b") && !valid_key_id(&"k".repeat(129)));
    }

    #[test]
    fn keys_round_trip_through_their_text() {
        let key = SecretKey::generate();
        let again = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = key.public().to_base64();
        assert_eq!(public.len(), 43);
        assert_eq!(PublicKey::from_base64(&public), Some(key.public()));
        assert_eq!(PublicKey::from_base64("short"), None);
        assert!(new_key_id().starts_with("ed25519:"));
    }
}
