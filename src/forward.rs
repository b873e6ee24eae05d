//! `kite listen --forward-to`: POST each event to a local URL, signed with a local signing
//! secret, the way `stripe listen --forward-to` does.
//!
//! - The secret (`whsec_...`) is printed at start; with `--client-id` it is kept in the config
//!   file (`[forward_secrets]`), so it stays the same across runs.
//! - Every forward carries Standard Webhooks headers signed with it. With `--raw`, the body is
//!   the provider's original bytes, and an event that came through a `stripe`, `github` or
//!   `slack` source is also signed in that provider's own scheme, so the local app verifies it
//!   with the provider's official library and the printed secret.
//! - A non-2xx answer or a connection error is printed and retried a bounded number of times
//!   (`--forward-retries`), then the stream moves on.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use kite_wire::provider::{self, Scheme};
use serde_json::Value;

/// Headers of the original request not replayed with `--raw`: credentials, hop-by-hop ones,
/// the provider signatures (signed anew) and the caller's trace context (the event's, which
/// continues it, is sent instead).
const NOT_REPLAYED: &[&str] = &[
    "traceparent",
    "tracestate",
    "authorization",
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept-encoding",
];

/// Posts events to a local URL.
pub struct Forwarder {
    url: reqwest::Url,
    raw: bool,
    retries: u32,
    secret: String,
    http: reqwest::Client,
}

impl Forwarder {
    /// A forwarder to `url` (an absolute http(s) URL, refused otherwise), signing with
    /// `secret`.
    pub fn new(url: &str, raw: bool, retries: u32, secret: String) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        let Some(url) = parsed else {
            bail!("--forward-to needs an absolute http(s) URL such as http://localhost:3000/webhooks, got {url:?}");
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            url,
            raw,
            retries,
            secret,
            http,
        })
    }

    /// The request for one event: its JSON text (or with `--raw` its original body and
    /// headers), signed.
    fn request(&self, text: &str, ev: &Value) -> reqwest::RequestBuilder {
        let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or_default();
        let msg_id = kite_wire::signature::message_id(s("source"), s("id"));
        let now = chrono::Utc::now().timestamp();
        let mut req = self.http.post(self.url.clone());
        let body: Vec<u8> = if self.raw {
            let original: serde_json::Map<String, Value> = ev
                .get(kite_wire::event::EXT_ORIGINAL_HEADERS)
                .and_then(Value::as_str)
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default();
            for (k, v) in &original {
                let name = k.to_ascii_lowercase();
                if NOT_REPLAYED.contains(&name.as_str())
                    || provider::SIGNATURE_HEADERS.contains(&name.as_str())
                {
                    continue;
                }
                if let Some(v) = v.as_str() {
                    req = req.header(k.as_str(), v);
                }
            }
            let body = kite_wire::event::data_bytes(text).unwrap_or_default();
            let scheme = kite_wire::event::provider_of(s("source")).and_then(Scheme::parse);
            if let Some(scheme) = scheme {
                for (k, v) in provider::sign_as(scheme, &self.secret, now, &body) {
                    req = req.header(k, v);
                }
            }
            body
        } else {
            req = req.header("content-type", "application/cloudevents+json");
            text.as_bytes().to_vec()
        };
        // The event's trace context (the span that took it in), for the app's own spans.
        let trace = kite_wire::trace::TraceContext::parse(
            s(kite_wire::trace::EXT_TRACEPARENT),
            ev.get(kite_wire::trace::EXT_TRACESTATE)
                .and_then(Value::as_str),
        );
        for (k, v) in trace.iter().flat_map(|t| t.headers()) {
            req = req.header(k, v);
        }
        let signature = provider::sign_standard(&[&self.secret], &msg_id, now, &body);
        req.header("webhook-id", msg_id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
    }

    /// Forwards one event: up to 1 + `retries` attempts with backoff, each answer printed
    /// with its attempt's number of the whole (`attempt 2/4`); never more, so a failing
    /// target never stalls the events after it.
    pub async fn forward(&self, seq: i64, text: &str, ev: &Value) {
        let id = ev.get("id").and_then(Value::as_str).unwrap_or("-");
        let mut delay = Duration::from_millis(500);
        let total = self.retries + 1;
        for n in 1..=total {
            let then = if n == total {
                format!("giving up after {total} attempts")
            } else {
                "retrying".to_owned()
            };
            match self.request(text, ev).send().await {
                Ok(r) if r.status().is_success() => {
                    eprintln!(
                        "[{}] POST {} seq={seq} id={id} (attempt {n}/{total})",
                        r.status().as_u16(),
                        self.url
                    );
                    return;
                }
                Ok(r) => eprintln!(
                    "[{}] POST {} seq={seq} id={id} (attempt {n}/{total}); {then}",
                    r.status().as_u16(),
                    self.url,
                ),
                Err(e) => eprintln!(
                    "[error] POST {} seq={seq} id={id}: {} (attempt {n}/{total}); {then}",
                    self.url,
                    causes(&e),
                ),
            }
            if n < total {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// An error with its causes (`error sending request: ... Connection refused`).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = c.source();
    }
    out
}

/// The local signing secret of `--forward-to`: with a client id, the one kept for it in
/// the config file (made and saved on first use); without one, a new secret for this run.
/// Answers the secret and whether it is kept.
pub fn signing_secret(config: &Path, client_id: Option<&str>) -> (String, bool) {
    let fresh = kite_wire::token::mint_federation_token;
    let Some(id) = client_id else {
        return (fresh(), false);
    };
    match kept_secret(config, id) {
        Ok(s) => (s, true),
        Err(e) => {
            eprintln!("kite listen: cannot keep a signing secret in {}: {e:#}; using one for this run only", config.display());
            (fresh(), false)
        }
    }
}

fn kept_secret(config: &Path, id: &str) -> anyhow::Result<String> {
    let mut table: toml::Table = match std::fs::read_to_string(config) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("reading {}", config.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let secrets = table
        .entry("forward_secrets")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(secrets) = secrets.as_table_mut() else {
        bail!("forward_secrets is not a table");
    };
    if let Some(s) = secrets.get(id).and_then(toml::Value::as_str) {
        return Ok(s.to_owned());
    }
    let secret = kite_wire::token::mint_federation_token();
    secrets.insert(id.to_owned(), toml::Value::String(secret.clone()));
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(&table)?;
    write_private(config, &text)?;
    Ok(secret)
}

/// Writes a file only its owner can read (it holds secrets).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme() {
        let s = || "whsec_x".to_string();
        assert!(Forwarder::new("localhost:3000/hooks", false, 3, s()).is_err());
        assert!(Forwarder::new("ftp://h/x", false, 3, s()).is_err());
        assert!(Forwarder::new("http://127.0.0.1:3000/hooks", false, 3, s()).is_ok());
    }
}
