//! The Kite federation signature: `X-Kite-Signature: sha256=<hex HMAC-SHA256(token, body)>`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Header carrying the body signature.
pub const SIGNATURE_HEADER: &str = "x-kite-signature";
/// Header naming the sender's key instead of sending the secret as a bearer.
pub const KEY_ID_HEADER: &str = "x-kite-key-id";
/// Header a receiver answers with its instance id.
pub const INSTANCE_ID_HEADER: &str = "x-kite-instance-id";

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
