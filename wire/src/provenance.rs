//! Origin signatures: the instance where an event enters the federation signs it once with its
//! identity key, so every later receiver can tell who made it, not only who handed it over.
//! The signature is Ed25519 over the RFC 8785 canonical JSON of the event without `kiteseq`,
//! `kitefedchain`, `kitefedhops`, `kitefedsig`, `kitefedsigkey`, `traceparent` and
//! `tracestate` (the parts that change on the way), base64url in `kitefedsig`; `kitefedsigkey` names the signing server and key id
//! (`{server_name} {key_id}`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::fed::{self, EXT_CHAIN, EXT_HOPS, EXT_SEQ};
use crate::identity::{PublicKey, SecretKey};

/// The origin signature.
pub const EXT_SIG: &str = "kitefedsig";
/// The signing server and key id, `{server_name} {key_id}`.
pub const EXT_SIGKEY: &str = "kitefedsigkey";
/// Room an origin signature takes in a forwarded event (both members, the longest server
/// name and key id).
pub const MAX_SIG_BYTES: usize = 400;

/// Why an event's origin signature could not be read, made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    /// The event is not a JSON object.
    #[error("the event is not a JSON object")]
    NotAnObject,
    /// `kitefedsig` or `kitefedsigkey` is malformed, or only one is present.
    #[error("malformed origin signature: {0}")]
    Malformed(&'static str),
}

/// An event's origin signature as it carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginSig {
    /// The server that signed.
    pub server_name: String,
    /// The key it signed with.
    pub key_id: String,
    /// The 64-byte signature.
    pub signature: Vec<u8>,
}

/// The bytes an origin signature covers: the canonical JSON of the event without the members
/// that change on the way.
pub fn signed_content(event: &Map<String, Value>) -> Vec<u8> {
    let mut covered = event.clone();
    for k in [
        EXT_SEQ,
        EXT_CHAIN,
        EXT_HOPS,
        EXT_SIG,
        EXT_SIGKEY,
        crate::trace::EXT_TRACEPARENT,
        crate::trace::EXT_TRACESTATE,
    ] {
        covered.remove(k);
    }
    // A map of JSON values always serializes.
    serde_json_canonicalizer::to_vec(&covered).unwrap_or_default()
}

/// Reads an event's origin signature; None when it carries none.
pub fn read(event: &Map<String, Value>) -> Result<Option<OriginSig>, ProvenanceError> {
    let (sig, key) = match (event.get(EXT_SIG), event.get(EXT_SIGKEY)) {
        (None, None) => return Ok(None),
        (Some(Value::String(s)), Some(Value::String(k))) => (s, k),
        _ => {
            return Err(ProvenanceError::Malformed(
                "kitefedsig and kitefedsigkey are strings and come together",
            ))
        }
    };
    let (server_name, key_id) = key
        .split_once(' ')
        .filter(|(s, k)| fed::valid_instance_id(s) && !k.is_empty() && k.len() <= 128)
        .ok_or(ProvenanceError::Malformed(
            "kitefedsigkey is `{server_name} {key_id}`",
        ))?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or(ProvenanceError::Malformed(
            "kitefedsig is base64url of 64 bytes",
        ))?;
    Ok(Some(OriginSig {
        server_name: server_name.to_string(),
        key_id: key_id.to_string(),
        signature,
    }))
}

/// An origin signature as carried (`kitefedsig`, `kitefedsigkey`), kept beside a stored event
/// and spliced back into the copies sent to handshake peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigText {
    /// `kitefedsig`.
    pub sig: String,
    /// `kitefedsigkey`.
    pub key: String,
}

impl SigText {
    /// The two members as JSON object members to splice in.
    pub fn members(&self) -> String {
        format!(
            "{}:{},{}:{}",
            Value::from(EXT_SIG),
            Value::from(self.sig.as_str()),
            Value::from(EXT_SIGKEY),
            Value::from(self.key.as_str())
        )
    }
}

/// Takes an event's origin signature out of it (checking its form); None when it has none.
pub fn take(event: &mut Map<String, Value>) -> Result<Option<SigText>, ProvenanceError> {
    if read(event)?.is_none() {
        return Ok(None);
    }
    let mut text = |k: &str| match event.remove(k) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    Ok(Some(SigText {
        sig: text(EXT_SIG),
        key: text(EXT_SIGKEY),
    }))
}

/// Checks an origin signature with the origin's key.
pub fn verify(event: &Map<String, Value>, sig: &OriginSig, key: &PublicKey) -> bool {
    key.verify(&signed_content(event), &sig.signature)
}

/// Signs a forwarded event's text as its origin: answers the text with `kitefedsig` and
/// `kitefedsigkey` spliced in (the rest of the text, `data` included, untouched).
pub fn sign_text(
    text: &str,
    server_name: &str,
    key_id: &str,
    key: &SecretKey,
) -> Result<String, ProvenanceError> {
    let event: Map<String, Value> =
        serde_json::from_str(text).map_err(|_| ProvenanceError::NotAnObject)?;
    let sig = SigText {
        sig: URL_SAFE_NO_PAD.encode(key.sign(&signed_content(&event))),
        key: format!("{server_name} {key_id}"),
    };
    fed::splice(text, &sig.members()).map_err(|_| ProvenanceError::NotAnObject)
}

/// Removes an origin signature (an event entering the federation here is signed here).
pub fn strip(event: &mut Map<String, Value>) {
    event.remove(EXT_SIG);
    event.remove(EXT_SIGKEY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_signed_event_verifies_until_what_it_covers_changes() {
        let key = SecretKey::generate();
        let text = r#"{"id":"1","source":"/s","type":"t","kitefedorigin":"a","kitefedchain":"[\"a\"]","kitefedhops":1,"data":{"b":1.50,"a":2}}"#;
        let signed = sign_text(text, "a", "ed25519:1", &key).unwrap();
        assert!(signed.starts_with(&text[..text.len() - 1]), "{signed}");
        let ev = obj(&signed);
        let sig = read(&ev).unwrap().unwrap();
        assert_eq!(
            (sig.server_name.as_str(), sig.key_id.as_str()),
            ("a", "ed25519:1")
        );
        assert!(verify(&ev, &sig, &key.public()));
        // Hops, chain, seq and the trace context may change on the way; key order and
        // spacing do not matter.
        let moved = obj(&signed.replace(
            r#""kitefedhops":1"#,
            r#""kitefedhops":2, "kiteseq":9, "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01""#,
        ));
        assert!(verify(&moved, &sig, &key.public()));
        // The data, the origin or any attribute may not.
        for (from, to) in [
            (r#""a":2"#, r#""a":3"#),
            (r#""kitefedorigin":"a""#, r#""kitefedorigin":"b""#),
            (r#""type":"t""#, r#""type":"u""#),
        ] {
            let altered = obj(&signed.replace(from, to));
            assert!(!verify(&altered, &sig, &key.public()), "{from}");
        }
        assert!(!verify(&ev, &sig, &SecretKey::generate().public()));
    }

    #[test]
    fn malformed_signatures_are_refused() {
        assert_eq!(read(&obj(r#"{"id":"1"}"#)), Ok(None));
        for bad in [
            r#"{"kitefedsig":"x"}"#,
            r#"{"kitefedsig":"x","kitefedsigkey":"nospace"}"#,
            r#"{"kitefedsig":"!!","kitefedsigkey":"a k"}"#,
            r#"{"kitefedsig":1,"kitefedsigkey":"a k"}"#,
        ] {
            assert!(read(&obj(bad)).is_err(), "{bad}");
        }
    }
}
