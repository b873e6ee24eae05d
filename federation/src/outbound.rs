//! Requests this server makes to other servers: signed as this server for their
//! destination, method and path, answers read up to a bound, and refusals read for their
//! error code.

use chrono::Utc;
use kite_store::StoreError;
use kite_wire::identity::{self, Target};
use kite_wire::peering::{self, ServerDescriptor};
use uuid::Uuid;

use crate::client::{literal_forbidden, read_capped, read_prefix, ReadError};
use crate::{FedError, Federation};

/// The longest error message of a peer's kept (in `last_error`, an event's story, logs).
pub const MAX_PEER_MESSAGE_CHARS: usize = 300;

/// The error code and message of a kite error body (`{"error":{"code","message"}}`), as far
/// as a peer's word is kept: a code is 1 to 64 of `a-z`, `0-9` and `_` (anything else is
/// `error`), and the message at most [`MAX_PEER_MESSAGE_CHARS`] characters, so what a peer
/// answers never grows what is stored about it.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let code = e.get("code")?.as_str()?;
    let plausible = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    Some((
        if plausible { code } else { "error" }.to_string(),
        e.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .chars()
            .take(MAX_PEER_MESSAGE_CHARS)
            .collect(),
    ))
}

impl Federation {
    /// The headers signing `body` as this server (`webhook-*` with `kite1`, `X-Kite-Key-Id`,
    /// `X-Kite-Server`, `X-Kite-Destination`) under the message id `id`, for `target`.
    pub async fn signed_headers(
        &self,
        target: &Target<'_>,
        id: &str,
        body: &[u8],
    ) -> Result<Vec<(&'static str, String)>, StoreError> {
        let snap = self.snap.get().await?;
        Ok(identity::signed_headers(
            &self.cfg.server_name,
            &snap.signing.key_id,
            &snap.signing.key,
            target,
            id,
            Utc::now().timestamp(),
            body,
        ))
    }

    /// POSTs a JSON body signed as this server for `destination` (the server at `url`);
    /// answers the body of a 2xx, read up to `max` bytes (a longer answer is refused), else
    /// why not.
    pub async fn post_signed(
        &self,
        url: &str,
        destination: &str,
        body: Vec<u8>,
        max: usize,
    ) -> Result<Vec<u8>, FedError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| FedError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let id = format!("msg_{}", Uuid::now_v7().simple());
        let target = Target {
            method: "POST",
            destination,
            path: parsed.path(),
        };
        let mut req = self
            .http
            .post(parsed.clone())
            .header("content-type", "application/json");
        for (k, v) in self.signed_headers(&target, &id, &body).await? {
            req = req.header(k, v);
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        };
        let resp = req.body(body).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return read_capped(resp, max)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| self.unreadable(url, e));
        }
        let bytes = read_prefix(resp, peering::MAX_ANSWER_BYTES).await;
        let (code, message) = error_of(&bytes).unwrap_or_else(|| {
            (
                format!("http_{status}"),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            )
        });
        Err(FedError::Refused {
            url: url.to_string(),
            status,
            code,
            message,
        })
    }

    /// Why an answer could not be read: too large, or the connection failed.
    fn unreadable(&self, url: &str, e: ReadError) -> FedError {
        match e {
            ReadError::TooLarge { .. } => FedError::BadAnswer(format!("{url}: {e}")),
            ReadError::Http(e) => FedError::Unreachable {
                url: url.to_string(),
                reason: root_cause(&e),
            },
        }
    }

    /// Fetches a server's descriptor from its base URL: read up to
    /// [`peering::MAX_ANSWER_BYTES`] and checked whole (its name, at most
    /// [`peering::MAX_KEYS`] well-formed keys).
    pub async fn fetch_descriptor(&self, base_url: &str) -> Result<ServerDescriptor, FedError> {
        let url = peering::descriptor_url(base_url);
        if !self.cfg.allow_private_peers && literal_forbidden(&url) {
            return Err(FedError::Unreachable {
                url,
                reason: "forbidden destination: a loopback or private address".into(),
            });
        }
        let unreachable = |e: reqwest::Error| FedError::Unreachable {
            url: url.clone(),
            reason: root_cause(&e),
        };
        let resp = self.http.get(&url).send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FedError::BadAnswer(format!(
                "{url} answered {status}, not a server descriptor"
            )));
        }
        let bytes = read_capped(resp, peering::MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.unreadable(&url, e))?;
        peering::read(&bytes, peering::MAX_ANSWER_BYTES)
            .map_err(|e| FedError::BadAnswer(format!("{url}: {e}")))
    }
}

/// The innermost cause of an error (what a failed HTTP call says went wrong).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_code() {
        assert_eq!(
            error_of(br#"{"error":{"code":"peer_revoked","message":"no"}}"#),
            Some(("peer_revoked".into(), "no".into()))
        );
        assert_eq!(error_of(b"<html>"), None);
        // A peer's word is kept within bounds: a code that is no code, a long message.
        let long = format!(
            r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
            "x".repeat(10_000),
            "m".repeat(10_000)
        );
        let (code, message) = error_of(long.as_bytes()).expect("an error body");
        assert_eq!(code, "error");
        assert_eq!(message.chars().count(), MAX_PEER_MESSAGE_CHARS);
        let odd = br#"{"error":{"code":"Bad Code\u0007","message":"m"}}"#;
        assert_eq!(error_of(odd).map(|e| e.0), Some("error".into()));
    }
}
