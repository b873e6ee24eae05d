//! One signed POST of an outbox row to its peer, classified.

use chrono::Utc;
use kite_protocol::{fed, signature};
use kite_store::outbox::DeliveryRow;

use crate::outcome::{classify_error, classify_refusal, classify_status, Outcome};
use crate::Ctx;
use kite_federation::{literal_forbidden, root_cause};

/// The result of one attempt.
pub(crate) struct Attempt {
    pub(crate) row_id: i64,
    pub(crate) attempts: i32,
    pub(crate) outcome: Outcome,
    pub(crate) status: Option<i32>,
    pub(crate) error: Option<String>,
    pub(crate) instance_id: Option<String>,
    /// The team and the peer's name (metric labels).
    pub(crate) team: String,
    pub(crate) peer: String,
    /// When its event was received (end-to-end latency).
    pub(crate) received_at: Option<chrono::DateTime<Utc>>,
    /// How long the request took.
    pub(crate) took: std::time::Duration,
}

/// A peer URL as parsed once for all its deliveries.
#[derive(Clone)]
pub(crate) struct Dest {
    /// The URL requests go to; `None` if it does not parse (the request then fails as
    /// reqwest refuses it).
    url: Option<reqwest::Url>,
    /// It names a loopback or private address literal.
    forbidden: bool,
}

/// Parsed peer URLs kept at most; past that the cache starts over (URLs of peers since
/// changed or deleted are not kept forever).
const DESTS_KEPT: usize = 1024;

impl Ctx {
    /// The peer URL parsed, from the cache when it was parsed before.
    fn dest(&self, url: &str) -> Dest {
        if let Some(d) = self.dests.lock().ok().and_then(|c| c.get(url).cloned()) {
            return d;
        }
        let d = Dest {
            url: reqwest::Url::parse(url).ok(),
            forbidden: literal_forbidden(url),
        };
        if let Ok(mut cache) = self.dests.lock() {
            if cache.len() >= DESTS_KEPT {
                cache.clear();
            }
            cache.insert(url.to_string(), d.clone());
        }
        d
    }

    pub(crate) async fn attempt(&self, row: DeliveryRow) -> Attempt {
        let mut out = Attempt {
            row_id: row.id,
            attempts: row.attempts,
            outcome: Outcome::MessageFailure,
            status: None,
            error: None,
            instance_id: None,
            team: row.team_id.clone(),
            peer: row.peer_name.clone().unwrap_or_default(),
            received_at: row.received_at,
            took: std::time::Duration::ZERO,
        };
        let (Some(url), Some(token)) = (row.peer_hook_url, row.outbound_token) else {
            out.error = Some("peer has no url".into());
            return out;
        };
        // A handshake peer gets the origin signature (this server's, for an event entering
        // the federation here); a Kite token peer the event as before.
        let forwarded = match (&row.event_rest, &row.server_name) {
            (Ok(rest), Some(_)) => {
                self.fed
                    .forward_signed(rest, &row.fed, row.origin_sig.as_ref())
                    .await
            }
            (Ok(rest), None) => {
                fed::forward_text(rest, &row.fed, &self.cfg.instance_id).map_err(|e| e.to_string())
            }
            (Err(e), _) => Err(e.clone()),
        };
        let body = match forwarded {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                out.error = Some(format!("cannot forward: {e}"));
                return out;
            }
        };
        if body.len() > kite_protocol::event::MAX_BODY_BYTES {
            out.error = Some(format!(
                "event is {} bytes forwarded, over the {} a peer accepts",
                body.len(),
                kite_protocol::event::MAX_BODY_BYTES
            ));
            return out;
        }
        let dest = self.dest(&url);
        if !self.cfg.allow_private_peers && dest.forbidden {
            out.outcome = Outcome::PeerFailure;
            out.error = Some("forbidden destination: a loopback or private address".into());
            return out;
        }
        let message_id = signature::message_id(&row.event_source, &row.event_id);
        let headers = if row.server_name.is_some() {
            // A handshake peer: signed with this server's identity key, no shared secret.
            match self.fed.signed_headers(&message_id, &body).await {
                Ok(mut h) => {
                    h.push(("content-type", "application/cloudevents+json".to_string()));
                    h
                }
                Err(e) => {
                    out.outcome = Outcome::PeerFailure;
                    out.error = Some(format!("cannot sign: {e}"));
                    return out;
                }
            }
        } else {
            signature::federation_headers(
                &token,
                row.previous_token.as_deref(),
                row.key_id.as_deref(),
                &message_id,
                Utc::now().timestamp(),
                &body,
            )
        };
        let mut req = match dest.url {
            Some(parsed) => self.http.post(parsed),
            None => self.http.post(&url),
        };
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let started = std::time::Instant::now();
        let res = req.body(body).send().await;
        match res {
            Ok(resp) => {
                out.took = started.elapsed();
                let status = resp.status();
                out.status = Some(i32::from(status.as_u16()));
                out.instance_id = resp
                    .headers()
                    .get(signature::INSTANCE_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                out.outcome = classify_status(status.as_u16());
                if out.outcome == Outcome::Delivered {
                    // Read to the end, so the connection goes back to the pool for the next.
                    let _ = resp.bytes().await;
                } else {
                    let text = resp.bytes().await.unwrap_or_default();
                    let refusal = kite_federation::error_of(&text);
                    out.outcome =
                        classify_refusal(status.as_u16(), refusal.as_ref().map(|r| r.0.as_str()));
                    out.error = Some(match refusal {
                        // The peer's own error code first, so `last_error` names it.
                        Some((code, message)) => {
                            let message: String = message.chars().take(300).collect();
                            format!("{code}: HTTP {}: {message}", status.as_u16())
                        }
                        None => {
                            let snippet: String =
                                String::from_utf8_lossy(&text).chars().take(300).collect();
                            format!("HTTP {}: {snippet}", status.as_u16())
                        }
                    });
                }
            }
            Err(e) => {
                out.took = started.elapsed();
                out.outcome = classify_error(&e);
                out.error = Some(if e.is_builder() {
                    format!("cannot send: {}", root_cause(&e))
                } else if e.is_timeout() {
                    "timeout".to_string()
                } else if e.is_connect() {
                    format!("connect error: {}", root_cause(&e))
                } else {
                    format!("request error: {}", root_cause(&e))
                });
            }
        }
        out
    }
}
