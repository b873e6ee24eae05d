//! Encryption of secrets at rest (ChaCha20-Poly1305 with a 32-byte key).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

const PREFIX: &str = "enc:v1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A problem with the key or a stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    /// The key is not 32 bytes of base64.
    #[error(
        "KITE_SECRET_KEY must be 32 bytes, base64-encoded (make one with `kite admin secret-key`)"
    )]
    BadKey,
    /// A stored value does not decrypt with this key.
    #[error("a stored secret does not decrypt with this KITE_SECRET_KEY")]
    Undecryptable,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box from a base64 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, SecretBoxError> {
        let bytes = B64.decode(key.trim()).map_err(|_| SecretBoxError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretBoxError::BadKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// A new random key, base64-encoded.
    pub fn generate_key() -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        B64.encode(k)
    }

    /// True if `stored` is a sealed value.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seals a secret: `enc:v1:` and base64 of nonce and ciphertext.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Opens a sealed secret.
    pub fn open(&self, stored: &str) -> Result<String, SecretBoxError> {
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .ok_or(SecretBoxError::Undecryptable)?;
        if raw.len() < 12 {
            return Err(SecretBoxError::Undecryptable);
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SecretBoxError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretBoxError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_wrong_key() {
        let b = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let s = b.seal("kfed_secret");
        assert!(SecretBox::is_sealed(&s) && !s.contains("kfed_secret"));
        assert_ne!(b.seal("kfed_secret"), s, "random nonce");
        assert_eq!(b.open(&s).unwrap(), "kfed_secret");
        let other = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        assert_eq!(other.open(&s), Err(SecretBoxError::Undecryptable));
        assert_eq!(
            SecretBox::from_base64("short").unwrap_err(),
            SecretBoxError::BadKey
        );
    }
}
