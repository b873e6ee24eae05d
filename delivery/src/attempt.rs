//! One signed POST of an outbox row to its peer, classified.

use chrono::Utc;
use kite_store::outbox::DeliveryRow;
use kite_wire::ids::{OutboxId, PeerId};
use kite_wire::{batch, fed, signature};

use crate::outcome::{classify_error, classify_refusal, classify_status, Outcome};
use crate::Ctx;
use kite_federation::{literal_forbidden, root_cause};

/// The result of one attempt.
pub(crate) struct Attempt {
    pub(crate) row_id: OutboxId,
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

/// The most of a peer's answer a delivery reads: enough for an error body or a batch's
/// results (64 of them); a longer answer's rest is discarded and its connection closed.
pub const ANSWER_MAX: usize = 256 * 1024;

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

    /// One attempt of one row: a single signed POST.
    pub(crate) async fn attempt(&self, row: DeliveryRow) -> Attempt {
        match self.prepare(row).await {
            Ok(ready) => self.send_one(ready).await,
            Err(failed) => failed,
        }
    }

    /// Makes a row ready to send (its forwarded body, where it goes), or answers the
    /// attempt that failed before any request.
    pub(crate) async fn prepare(&self, row: DeliveryRow) -> Result<Ready, Attempt> {
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
            return Err(out);
        };
        // A handshake peer gets the origin signature (this server's, for an event entering
        // the federation here); a Kite token peer the event as before.
        let forwarded = match (&row.event_rest, &row.server_name) {
            (Ok(rest), Some(_)) => self
                .fed
                .forward_signed(rest, &row.fed, row.origin_sig.as_ref())
                .await
                .map_err(|e| e.to_string()),
            (Ok(rest), None) => {
                fed::forward_text(rest, &row.fed, &self.cfg.instance_id).map_err(|e| e.to_string())
            }
            (Err(e), _) => Err(e.clone()),
        };
        let body = match forwarded {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                out.error = Some(format!("cannot forward: {e}"));
                return Err(out);
            }
        };
        if body.len() > kite_wire::event::MAX_BODY_BYTES {
            out.error = Some(format!(
                "event is {} bytes forwarded, over the {} a peer accepts",
                body.len(),
                kite_wire::event::MAX_BODY_BYTES
            ));
            return Err(out);
        }
        let dest = self.dest(&url);
        if !self.cfg.allow_private_peers && dest.forbidden {
            out.outcome = Outcome::PeerFailure;
            out.error = Some("forbidden destination: a loopback or private address".into());
            return Err(out);
        }
        Ok(Ready {
            message_id: signature::message_id(&row.event_source, &row.event_id),
            signer: match row.server_name {
                Some(destination) => Signer::Server { destination },
                None => Signer::Token {
                    token,
                    previous: row.previous_token,
                    inbound: row.inbound_token,
                    key_id: row.key_id,
                },
            },
            peer_id: row.peer_id,
            url,
            dest,
            body,
            out,
        })
    }

    /// The headers that sign `body` for the peer `r` goes to, with its content type.
    async fn sign(
        &self,
        r: &Ready,
        message_id: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let mut h = match &r.signer {
            // A handshake peer: signed with this server's identity key for the peer's server
            // and the hook's path, no shared secret.
            Signer::Server { destination } => {
                let path = r.dest.url.as_ref().map_or("/", |u| u.path());
                let target = kite_wire::identity::Target {
                    method: "POST",
                    destination,
                    path,
                };
                self.fed
                    .signed_headers(&target, message_id, body)
                    .await
                    .map_err(|e| format!("cannot sign: {e}"))?
            }
            Signer::Token {
                token,
                previous,
                inbound,
                key_id,
            } => signature::federation_headers(
                token,
                &[previous.as_deref(), inbound.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
                key_id.as_deref(),
                message_id,
                Utc::now().timestamp(),
                body,
            ),
        };
        h.retain(|(name, _)| *name != "content-type");
        h.push(("content-type", content_type.to_string()));
        Ok(h)
    }

    /// POSTs `body` signed to where `r` goes; answers the status, the headers and the
    /// body of the answer, and how long it took.
    async fn post(
        &self,
        r: &Ready,
        headers: Vec<(&'static str, String)>,
        body: bytes::Bytes,
    ) -> (Result<Answer, reqwest::Error>, std::time::Duration) {
        let mut req = match &r.dest.url {
            Some(parsed) => self.http.post(parsed.clone()),
            None => self.http.post(&r.url),
        };
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let started = std::time::Instant::now();
        let answer = async {
            let resp = req.body(body).send().await?;
            let status = resp.status().as_u16();
            let instance_id = instance_id(resp.headers());
            let offer = batch::offered(resp.headers());
            // Read to the end (so the connection goes back to the pool for the next), but no
            // more than ANSWER_MAX: the rest of a longer answer is discarded unread.
            let text = kite_federation::read_prefix(resp, ANSWER_MAX).await;
            Ok(Answer {
                status,
                instance_id,
                offer,
                text,
            })
        }
        .await;
        (answer, started.elapsed())
    }

    /// Sends one ready row on its own.
    pub(crate) async fn send_one(&self, r: Ready) -> Attempt {
        let headers = match self
            .sign(&r, &r.message_id, &r.body, SINGLE_CONTENT_TYPE)
            .await
        {
            Ok(h) => h,
            Err(e) => return r.failed(Outcome::PeerFailure, e),
        };
        let (answer, took) = self.post(&r, headers, r.body.clone()).await;
        let mut out = r.out;
        out.took = took;
        match answer {
            Ok(a) => {
                if (200..300).contains(&a.status) {
                    self.learn_offer(r.peer_id, &r.url, a.offer);
                }
                out.instance_id = a.instance_id;
                out.status = Some(i32::from(a.status));
                (out.outcome, out.error) = judge(a.status, &a.text);
            }
            Err(e) => (out.outcome, out.error) = transport_failure(&e),
        }
        out
    }

    /// Sends ready rows of one peer as one batch (the peer offered batches); answers one
    /// attempt per row, as the peer answered for each. A peer that refuses the batch itself
    /// (404, 405, 413 or 415: it no longer takes batches, or not this large) is sent the rows
    /// one by one instead, and no more batches until it offers them again.
    pub(crate) async fn send_batch(&self, rows: Vec<Ready>) -> Vec<Attempt> {
        let Some(first) = rows.first() else {
            return Vec::new();
        };
        let body = bytes::Bytes::from(batch::body(
            &rows.iter().map(|r| &r.body[..]).collect::<Vec<_>>(),
        ));
        let id = batch::message_id(rows.iter().map(|r| r.message_id.as_str()));
        let headers = match self.sign(first, &id, &body, batch::CONTENT_TYPE).await {
            Ok(h) => h,
            Err(e) => {
                return rows
                    .into_iter()
                    .map(|r| r.failed(Outcome::PeerFailure, e.clone()))
                    .collect()
            }
        };
        let (answer, took) = self.post(first, headers, body).await;
        let n = rows.len();
        let answer = match answer {
            // The peer no longer takes batches, or not this large: one by one now; its next
            // 2xx says what it offers.
            Ok(a) if matches!(a.status, 404 | 405 | 413 | 415) => {
                tracing::info!(peer = %first.peer_id, status = a.status, "the peer refused a batch; sending its events one a request");
                self.learn_offer(first.peer_id, &first.url, None);
                let mut out = Vec::with_capacity(n);
                for r in rows {
                    out.push(self.send_one(r).await);
                }
                return out;
            }
            other => other,
        };
        {
            use kite_wire::metrics as m;
            let (team, peer) = (first.out.team.clone(), first.out.peer.clone());
            metrics::counter!(m::BATCHES, "team" => team.clone(), "peer" => peer.clone())
                .increment(1);
            metrics::counter!(m::BATCHED_EVENTS, "team" => team, "peer" => peer)
                .increment(n as u64);
        }
        let mut each: Vec<(Outcome, Option<String>, Option<i32>)> = match &answer {
            Ok(a) if (200..300).contains(&a.status) => {
                self.learn_offer(first.peer_id, &first.url, a.offer);
                match serde_json::from_slice::<batch::BatchAnswer>(&a.text) {
                    Ok(b) if b.results.len() == n => b
                        .results
                        .iter()
                        .map(|item| {
                            let (status, code) = item.as_single();
                            let (outcome, error) = match &item.error {
                                Some(e) if !(200..300).contains(&status) => (
                                    classify_refusal(status, code),
                                    Some(refusal_text(status, &e.code, &e.message)),
                                ),
                                _ => (classify_status(status), None),
                            };
                            (outcome, error, Some(i32::from(status)))
                        })
                        .collect(),
                    _ => {
                        let e = format!(
                            "HTTP {}: the answer to a batch of {n} is not one result per event",
                            a.status
                        );
                        vec![(Outcome::MessageFailure, Some(e), Some(i32::from(a.status))); n]
                    }
                }
            }
            Ok(a) => {
                let (outcome, error) = judge(a.status, &a.text);
                vec![(outcome, error, Some(i32::from(a.status))); n]
            }
            Err(e) => {
                let (outcome, error) = transport_failure(e);
                vec![(outcome, error, None); n]
            }
        };
        let instance = answer.as_ref().ok().and_then(|a| a.instance_id.clone());
        rows.into_iter()
            .zip(each.drain(..))
            .map(|(r, (outcome, error, status))| {
                let mut out = r.out;
                out.took = took;
                out.outcome = outcome;
                out.error = error;
                out.status = status;
                out.instance_id = instance.clone();
                out
            })
            .collect()
    }

    /// Sends rows of one peer that offered batches of up to `max` events: as few batches
    /// as the count and the body limit allow, as many at once as a batch makes attempts;
    /// answers one attempt per row.
    pub(crate) async fn send_batched(&self, rows: Vec<DeliveryRow>, max: usize) -> Vec<Attempt> {
        use futures::StreamExt;
        let limit = kite_wire::event::MAX_BODY_BYTES;
        let mut out = Vec::with_capacity(rows.len());
        let mut groups: Vec<Vec<Ready>> = Vec::new();
        let mut group: Vec<Ready> = Vec::new();
        for row in rows {
            let r = match self.prepare(row).await {
                Ok(r) => r,
                Err(failed) => {
                    out.push(failed);
                    continue;
                }
            };
            let len = batch::body_len(group.iter().map(|g| g.body.len()).chain([r.body.len()]));
            if !group.is_empty() && (group.len() >= max || len > limit) {
                groups.push(std::mem::take(&mut group));
            }
            group.push(r);
        }
        if !group.is_empty() {
            groups.push(group);
        }
        let sent: Vec<Vec<Attempt>> = futures::stream::iter(groups)
            .map(|mut g| async move {
                if g.len() > 1 {
                    return self.send_batch(g).await;
                }
                match g.pop() {
                    Some(one) => vec![self.send_one(one).await],
                    None => Vec::new(),
                }
            })
            .buffer_unordered(self.cfg.attempts_in_flight.max(1))
            .collect()
            .await;
        out.extend(sent.into_iter().flatten());
        out
    }

    /// Notes whether the peer at `url` takes batches, and of how many events.
    fn learn_offer(&self, peer: PeerId, url: &str, offer: Option<usize>) {
        if let Ok(mut m) = self.batching.lock() {
            match offer {
                Some(n) => {
                    if m.get(&peer).is_none_or(|(u, k)| u != url || *k != n) {
                        m.insert(peer, (url.to_string(), n));
                    }
                }
                None => {
                    m.remove(&peer);
                }
            }
        }
    }

    /// How many events one batch to this peer at `url` may carry, if it offered batches.
    pub(crate) fn batch_offer(&self, peer: PeerId, url: Option<&str>) -> Option<usize> {
        let m = self.batching.lock().ok()?;
        let (u, n) = m.get(&peer)?;
        (Some(u.as_str()) == url).then_some(*n)
    }
}

/// The content type of one event.
const SINGLE_CONTENT_TYPE: &str = "application/cloudevents+json";

/// How a row is signed for its peer.
pub(crate) enum Signer {
    /// With this server's identity key, for the peer's server (a handshake peer).
    Server {
        /// The peer's server name: the request's destination.
        destination: String,
    },
    /// With the peer's shared secret (a token peer).
    Token {
        token: String,
        previous: Option<String>,
        inbound: Option<String>,
        key_id: Option<String>,
    },
}

/// A row ready to send.
pub(crate) struct Ready {
    /// Its attempt as it stands before a request.
    pub(crate) out: Attempt,
    /// The event as forwarded.
    pub(crate) body: bytes::Bytes,
    message_id: String,
    signer: Signer,
    peer_id: PeerId,
    url: String,
    dest: Dest,
}

impl Ready {
    fn failed(self, outcome: Outcome, error: String) -> Attempt {
        let mut out = self.out;
        out.outcome = outcome;
        out.error = Some(error);
        out
    }
}

/// What a peer answered.
struct Answer {
    status: u16,
    /// Its `X-Kite-Instance-Id`.
    instance_id: Option<String>,
    /// The batches it offers ([`batch::OFFER_HEADER`]).
    offer: Option<usize>,
    text: bytes::Bytes,
}

fn instance_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(signature::INSTANCE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What an answer with `status` and body `text` means for the event it answers.
fn judge(status: u16, text: &[u8]) -> (Outcome, Option<String>) {
    let outcome = classify_status(status);
    if outcome == Outcome::Delivered {
        return (outcome, None);
    }
    let refusal = kite_federation::error_of(text);
    let outcome = classify_refusal(status, refusal.as_ref().map(|r| r.0.as_str()));
    let error = match refusal {
        // The peer's own error code first, so `last_error` names it.
        Some((code, message)) => refusal_text(status, &code, &message),
        None => {
            let snippet: String = String::from_utf8_lossy(text).chars().take(300).collect();
            format!("HTTP {status}: {snippet}")
        }
    };
    (outcome, Some(error))
}

/// A refusal as `last_error` keeps it: the peer's code, the status, its message (cut).
fn refusal_text(status: u16, code: &str, message: &str) -> String {
    let message: String = message.chars().take(300).collect();
    format!("{code}: HTTP {status}: {message}")
}

/// A request that got no answer.
fn transport_failure(e: &reqwest::Error) -> (Outcome, Option<String>) {
    let error = if e.is_builder() {
        format!("cannot send: {}", root_cause(e))
    } else if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        format!("connect error: {}", root_cause(e))
    } else {
        format!("request error: {}", root_cause(e))
    };
    (classify_error(e), Some(error))
}
