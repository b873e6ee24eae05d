//! Secret formats: federation tokens and API keys, and their digests.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new federation secret in the Standard Webhooks form: `whsec_` and base64 of 32 random
/// bytes, so a receiver built on the official libraries verifies with it as printed.
/// (Tokens minted before, `kfed_...`, keep working: they are used as they are.)
pub fn mint_federation_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b)
    )
}

/// A new API key: `kite_<8 hex>_<32 hex>`; the first part is its public prefix.
pub fn mint_api_key() -> String {
    let mut p = [0u8; 4];
    let mut s = [0u8; 16];
    rand::rng().fill_bytes(&mut p);
    rand::rng().fill_bytes(&mut s);
    format!("kite_{}_{}", hex::encode(p), hex::encode(s))
}

/// The public prefix of an API key (`kite_<8 hex>`), or the first 12 characters of any other.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(13).collect()
}

/// Lowercase hex SHA-256 of a secret, the form stored for API keys and tokens.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in constant time (for equal lengths).
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = mint_federation_token();
        assert!(t.starts_with("whsec_"));
        assert_eq!(crate::provider::standard_key(&t).len(), 32);
        let k = mint_api_key();
        assert_eq!(k.len(), 5 + 8 + 1 + 32);
        assert_eq!(key_prefix(&k).len(), 13);
        assert_ne!(mint_api_key(), k);
        assert!(secret_eq(&t, &t.clone()));
        assert!(!secret_eq(&t, &mint_federation_token()));
        assert_eq!(digest("a").len(), 64);
    }
}
