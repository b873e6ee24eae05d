//! A server's Ed25519 identity: key pairs, key ids, and the Standard Webhooks asymmetric
//! signature (`webhook-signature: v1a,<base64 ed25519 signature>` over
//! `{id}.{timestamp}.{body}`) that signs every request between handshake peers.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use http::HeaderMap;
use rand::RngCore;

use crate::provider::{SigError, DEFAULT_TOLERANCE_SECS};
use crate::signature::KEY_ID_HEADER;

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

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    m.extend_from_slice(id.as_bytes());
    m.push(b'.');
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// The headers of a request signed by a server's identity key: `webhook-id`,
/// `webhook-timestamp`, `webhook-signature: v1a,<base64>`, `X-Kite-Key-Id` and
/// `X-Kite-Server`.
pub fn signed_headers(
    server_name: &str,
    key_id: &str,
    key: &SecretKey,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let sig = key.sign(&signed_content(id, &ts, body));
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts),
        ("webhook-signature", format!("v1a,{}", STANDARD.encode(sig))),
        (KEY_ID_HEADER, key_id.to_string()),
        (SERVER_HEADER, server_name.to_string()),
    ]
}

/// Who a signed server request says it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// `X-Kite-Server`.
    pub server_name: String,
    /// `X-Kite-Key-Id`.
    pub key_id: String,
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
    })
}

/// Checks a request's `v1a` signature with `key`, and that its timestamp is within five
/// minutes of `now`.
pub fn verify_request(
    key: &PublicKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SigError> {
    let id = header(headers, "webhook-id").ok_or(SigError::Invalid)?;
    let ts_raw = header(headers, "webhook-timestamp").ok_or(SigError::Invalid)?;
    let ts: i64 = ts_raw.parse().map_err(|_| SigError::Invalid)?;
    let sigs = header(headers, "webhook-signature").ok_or(SigError::Invalid)?;
    let content = signed_content(id, ts_raw, body);
    let ok = sigs
        .split_whitespace()
        .filter_map(|item| item.strip_prefix("v1a,"))
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

    #[test]
    fn a_signed_request_verifies_with_its_key_only() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let now = 1_700_000_000;
        let h = headers(signed_headers("a", "ed25519:1", &key, "msg_1", now, b"{}"));
        assert_eq!(
            claimed(&h),
            Some(Claimed {
                server_name: "a".into(),
                key_id: "ed25519:1".into()
            })
        );
        assert_eq!(verify_request(&key.public(), &h, b"{}", now), Ok(()));
        assert_eq!(
            verify_request(&other.public(), &h, b"{}", now),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify_request(&key.public(), &h, b"{ }", now),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify_request(&key.public(), &h, b"{}", now + 600),
            Err(SigError::Stale)
        );
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
