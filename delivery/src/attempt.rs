//! One signed POST of an outbox row to its peer, classified.

use chrono::Utc;
use kite_store::outbox::{DeliveryRow, PeerAuth};
use kite_store::types::PeerAnswer;
use kite_wire::ids::{OutboxId, PeerId};
use kite_wire::trace::otel;
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
    pub(crate) error: Option<AttemptError>,
    pub(crate) instance_id: Option<String>,
    /// The team and the peer's name (metric labels).
    pub(crate) team: String,
    pub(crate) peer: String,
    /// When its event was received (end-to-end latency).
    pub(crate) received_at: Option<chrono::DateTime<Utc>>,
    /// How long the request took.
    pub(crate) took: std::time::Duration,
    /// What the peer said it did with the event, when it took it.
    pub(crate) answer: Option<PeerAnswer>,
    /// The retry schedule of its peer (the peer's policy over the instance's).
    pub(crate) retry: crate::RetryPolicy,
    /// Its peer was `active` when the row was loaded (not degraded by failures, of this
    /// process or another).
    pub(crate) peer_was_active: bool,
    /// Its peer's rows are claimed (`crate::claimed`): a retry is found by its due time,
    /// with no message through the retry queues.
    pub(crate) claimed: bool,
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
            team: row.team_id.to_string(),
            peer: row
                .peer
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            received_at: row.received_at(),
            took: std::time::Duration::ZERO,
            answer: None,
            retry: row.peer.as_ref().map_or(self.cfg.retry, |p| {
                crate::gate::retry_policy(&self.cfg, &p.delivery)
            }),
            peer_was_active: row
                .peer
                .as_ref()
                .is_some_and(|p| p.health == kite_store::types::PeerHealth::Active),
            claimed: row
                .peer
                .as_ref()
                .is_some_and(|p| crate::gate::claimed(&p.delivery, p.ordered)),
        };
        let Some(peer) = row.peer else {
            out.error = Some(AttemptError::NoPeer);
            return Err(out);
        };
        let event = match row.event {
            Ok(e) => e,
            Err(e) => {
                out.error = Some(AttemptError::Forward(e));
                return Err(out);
            }
        };
        // The attempt's span (only while spans are exported), a child of the span that took
        // the event in; the copy forwarded carries its context.
        let span = if otel::enabled() {
            tracing::info_span!(
                target: otel::TARGET,
                "kite.deliver",
                otel.kind = "client",
                cloudevents.event_id = %event.id,
                cloudevents.event_type = %event.ty,
                kite.team = %row.team_id,
                kite.peer = %peer.name,
                kite.attempt = row.attempts + 1,
                http.response.status_code = tracing::field::Empty,
                kite.outcome = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let trace = otel::continue_in(&span, event.trace.as_ref());
        // A handshake peer gets the origin signature (this server's, for an event entering
        // the federation here); a Kite token peer the event as before.
        let forwarded = match &peer.auth {
            PeerAuth::Server { .. } => {
                self.fed
                    .forward_signed(&event.rest, &event.fed, event.origin_sig.as_ref())
                    .await
            }
            PeerAuth::Token { .. } => {
                fed::forward_text(&event.rest, &event.fed, &self.cfg.instance_id)
            }
        };
        let forwarded = match forwarded.and_then(|f| fed::splice(&f, &trace.members())) {
            Ok(b) => b,
            Err(e) => {
                out.error = Some(AttemptError::Forward(e.to_string()));
                return Err(out);
            }
        };
        // Binary content mode (a token peer only: a kite server takes structured events):
        // the attributes as `ce-*` headers, the body the provider's bytes.
        let (body, binary) = match (&peer.auth, peer.content_mode) {
            (PeerAuth::Token { .. }, kite_api::types::ContentMode::Binary) => {
                match kite_wire::event::binary_mode(&forwarded) {
                    Some((headers, data)) => (bytes::Bytes::from(data), Some(headers)),
                    None => {
                        out.error = Some(AttemptError::Forward(
                            "the event cannot be sent in binary mode".into(),
                        ));
                        return Err(out);
                    }
                }
            }
            _ => (bytes::Bytes::from(forwarded), None),
        };
        if body.len() > kite_wire::event::MAX_BODY_BYTES {
            out.error = Some(AttemptError::TooLarge(body.len()));
            return Err(out);
        }
        let dest = self.dest(&peer.hook_url);
        if !self.cfg.allow_private_peers && dest.forbidden {
            out.outcome = Outcome::PeerFailure;
            out.error = Some(AttemptError::Forbidden);
            return Err(out);
        }
        Ok(Ready {
            message_id: signature::message_id(&event.source, &event.id),
            timeout: crate::gate::timeout(&self.cfg, &peer.delivery),
            gate: self
                .gates
                .of(row.peer_id, &peer.delivery, self.cfg.max_in_flight),
            binary,
            trace,
            span,
            auth: peer.auth,
            peer_id: row.peer_id,
            url: peer.hook_url,
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
    ) -> Result<Vec<(&'static str, String)>, AttemptError> {
        let mut h = match &r.auth {
            // A handshake peer: signed with this server's identity key for the peer's server
            // and the hook's path, no shared secret.
            PeerAuth::Server { server_name } => {
                let path = r.dest.url.as_ref().map_or("/", |u| u.path());
                let target = kite_wire::identity::Target {
                    method: "POST",
                    destination: server_name,
                    path,
                };
                self.fed
                    .signed_headers(&target, message_id, body)
                    .await
                    .map_err(|e| AttemptError::Sign(e.to_string()))?
            }
            PeerAuth::Token {
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

    /// The headers of a binary-mode request for `r`: its `ce-*` headers and content type,
    /// and Standard Webhooks headers signing the body with the peer's secrets (no bearer:
    /// an ordinary endpoint checks the signature).
    fn binary_headers(
        r: &Ready,
        ce: &[(String, String)],
        body: &[u8],
    ) -> Vec<(reqwest::header::HeaderName, String)> {
        use reqwest::header::HeaderName;
        let mut h: Vec<(HeaderName, String)> = ce
            .iter()
            .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v.clone())))
            .collect();
        if let PeerAuth::Token {
            token,
            previous,
            inbound,
            ..
        } = &r.auth
        {
            let mut secrets = vec![token.as_str()];
            secrets.extend(
                [previous.as_deref(), inbound.as_deref()]
                    .into_iter()
                    .flatten(),
            );
            let ts = Utc::now().timestamp();
            h.push((HeaderName::from_static("webhook-id"), r.message_id.clone()));
            h.push((HeaderName::from_static("webhook-timestamp"), ts.to_string()));
            h.push((
                HeaderName::from_static("webhook-signature"),
                kite_wire::provider::sign_standard(&secrets, &r.message_id, ts, body),
            ));
        }
        h
    }

    /// POSTs `body` signed to where `r` goes; answers the status, the headers and the body
    /// of the answer, and how long it took.
    async fn post<N>(
        &self,
        r: &Ready,
        headers: Vec<(N, String)>,
        body: bytes::Bytes,
    ) -> (Result<Answer, reqwest::Error>, std::time::Duration)
    where
        reqwest::header::HeaderName: TryFrom<N>,
        <reqwest::header::HeaderName as TryFrom<N>>::Error: Into<http::Error>,
    {
        let mut req = match &r.dest.url {
            Some(parsed) => self.http.post(parsed.clone()),
            None => self.http.post(&r.url),
        };
        for (name, value) in headers {
            match reqwest::header::HeaderValue::from_str(&value) {
                Ok(v) => {
                    req = req.header(name, v);
                }
                Err(_) => tracing::debug!("a header value that cannot be sent was left out"),
            }
        }
        req = req.timeout(r.timeout);
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
        // A place among the peer's requests in flight first: the request is signed (and
        // dated) once it may go.
        let _pass = match &r.gate {
            Some(g) => Some(g.enter().await),
            None => None,
        };
        // A single event's request carries its trace context as headers too.
        let trace = r.trace.headers();
        let (answer, took) = match &r.binary {
            Some(ce) => {
                let mut headers = Self::binary_headers(&r, ce, &r.body);
                headers.extend(
                    trace
                        .into_iter()
                        .map(|(k, v)| (reqwest::header::HeaderName::from_static(k), v)),
                );
                self.post(&r, headers, r.body.clone()).await
            }
            None => {
                let mut headers = match self
                    .sign(&r, &r.message_id, &r.body, SINGLE_CONTENT_TYPE)
                    .await
                {
                    Ok(h) => h,
                    Err(e) => return r.failed(Outcome::PeerFailure, e),
                };
                headers.extend(trace);
                self.post(&r, headers, r.body.clone()).await
            }
        };
        let binary = r.binary();
        let span = r.span;
        let mut out = r.out;
        out.took = took;
        match answer {
            Ok(a) => {
                // An ordinary endpoint in binary mode is never sent batches, whatever it says.
                if (200..300).contains(&a.status) && !binary {
                    self.learn_offer(r.peer_id, &r.url, a.offer);
                }
                out.instance_id = a.instance_id;
                out.status = Some(i32::from(a.status));
                (out.outcome, out.error) = judge(a.status, &a.text);
                out.answer = single_answer(a.status, &a.text);
            }
            Err(e) => (out.outcome, out.error) = transport_failure(&e),
        }
        close_span(&span, &out);
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
        let pass = match &first.gate {
            Some(g) => Some(g.enter().await),
            None => None,
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
                drop(pass);
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
        if let Ok(a) = &answer {
            if (200..300).contains(&a.status) {
                self.learn_offer(first.peer_id, &first.url, a.offer);
            }
        }
        let mut each = batch_results(&answer, n);
        let instance = answer.as_ref().ok().and_then(|a| a.instance_id.clone());
        rows.into_iter()
            .zip(each.drain(..))
            .map(|(r, (outcome, error, status, answer))| {
                let mut out = r.out;
                out.took = took;
                out.answer = answer;
                out.outcome = outcome;
                out.error = error;
                out.status = status;
                out.instance_id = instance.clone();
                close_span(&r.span, &out);
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

/// A row ready to send.
pub(crate) struct Ready {
    /// Its attempt as it stands before a request.
    pub(crate) out: Attempt,
    /// The event as forwarded.
    pub(crate) body: bytes::Bytes,
    message_id: String,
    auth: PeerAuth,
    peer_id: PeerId,
    url: String,
    dest: Dest,
    /// How long its request may take.
    timeout: std::time::Duration,
    /// What its peer's requests pass through (None only if the gates' lock was poisoned).
    gate: Option<std::sync::Arc<crate::gate::Gate>>,
    /// In binary mode: its `ce-*` headers and content type (the body is then the data).
    binary: Option<Vec<(String, String)>>,
    /// The trace context the forwarded copy carries (also sent as `traceparent` headers).
    trace: kite_wire::trace::TraceContext,
    /// The attempt's span (disabled while spans are not exported), ended with the attempt.
    span: tracing::Span,
}

impl Ready {
    /// Whether it goes in binary mode (never in a batch).
    pub(crate) fn binary(&self) -> bool {
        self.binary.is_some()
    }
}

impl Ready {
    fn failed(self, outcome: Outcome, error: AttemptError) -> Attempt {
        let mut out = self.out;
        out.outcome = outcome;
        out.error = Some(error);
        close_span(&self.span, &out);
        out
    }
}

/// Records an attempt's result on its span (which ends when it is dropped).
fn close_span(span: &tracing::Span, out: &Attempt) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = out.status {
        span.record("http.response.status_code", status);
    }
    span.record("kite.outcome", tracing::field::debug(out.outcome));
    if out.outcome != Outcome::Delivered {
        span.record("otel.status_code", "ERROR");
        if let Some(e) = &out.error {
            span.record("otel.status_description", tracing::field::display(e));
        }
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

/// The peer's `X-Kite-Instance-Id`, when it is an instance id (anything else is not kept).
fn instance_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(signature::INSTANCE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| kite_wire::fed::valid_instance_id(v))
        .map(str::to_string)
}

/// What the answer to a batch of `n` events means for each of them: the peer's result for
/// each, or the answer's own meaning for all when it is not one result per event.
fn batch_results(answer: &Result<Answer, reqwest::Error>, n: usize) -> Vec<ItemOutcome> {
    match answer {
        Ok(a) if (200..300).contains(&a.status) => {
            match serde_json::from_slice::<batch::BatchAnswer>(&a.text) {
                Ok(b) if b.results.len() == n => b.results.iter().map(item_result).collect(),
                _ => {
                    let e = AttemptError::BatchAnswer {
                        status: a.status,
                        n,
                    };
                    vec![
                        (
                            Outcome::MessageFailure,
                            Some(e),
                            Some(i32::from(a.status)),
                            None
                        );
                        n
                    ]
                }
            }
        }
        Ok(a) => {
            let (outcome, error) = judge(a.status, &a.text);
            vec![(outcome, error, Some(i32::from(a.status)), None); n]
        }
        Err(e) => {
            let (outcome, error) = transport_failure(e);
            vec![(outcome, error, None, None); n]
        }
    }
}

/// What an answer meant for one event: the outcome, its error, the HTTP status and what
/// the peer did with it.
type ItemOutcome = (
    Outcome,
    Option<AttemptError>,
    Option<i32>,
    Option<PeerAnswer>,
);

/// What a peer's hook status says it did with an event it took.
fn answer_of(status: batch::HookStatus) -> Option<PeerAnswer> {
    match status {
        batch::HookStatus::Accepted => Some(PeerAnswer::Accepted),
        batch::HookStatus::DuplicateIgnored => Some(PeerAnswer::DuplicateIgnored),
        batch::HookStatus::LoopIgnored => Some(PeerAnswer::LoopIgnored),
        batch::HookStatus::Rejected | batch::HookStatus::Unknown => None,
    }
}

/// What the 2xx answer to a single POST says the peer did (`{"status": ...}`), when it says.
fn single_answer(status: u16, text: &[u8]) -> Option<PeerAnswer> {
    #[derive(serde::Deserialize)]
    struct Said {
        status: batch::HookStatus,
    }
    if !(200..300).contains(&status) {
        return None;
    }
    serde_json::from_slice::<Said>(text)
        .ok()
        .and_then(|s| answer_of(s.status))
}

/// What one result of a batch answer means for its event.
fn item_result(item: &batch::ItemResult) -> ItemOutcome {
    let (status, code) = item.as_single();
    let (outcome, error) = match &item.error {
        Some(e) if !(200..300).contains(&status) => (
            classify_refusal(status, code),
            Some(AttemptError::refused(status, &e.code, &e.message)),
        ),
        _ => (classify_status(status), None),
    };
    (
        outcome,
        error,
        Some(i32::from(status)),
        answer_of(item.status),
    )
}

/// What an answer with `status` and body `text` means for the event it answers.
fn judge(status: u16, text: &[u8]) -> (Outcome, Option<AttemptError>) {
    let outcome = classify_status(status);
    if outcome == Outcome::Delivered {
        return (outcome, None);
    }
    let refusal = kite_federation::error_of(text);
    let outcome = classify_refusal(status, refusal.as_ref().map(|r| r.0.as_str()));
    let error = match refusal {
        // The peer's own error code first, so `last_error` names it.
        Some((code, message)) => AttemptError::refused(status, &code, &message),
        None => AttemptError::Status {
            status,
            snippet: String::from_utf8_lossy(text).chars().take(300).collect(),
        },
    };
    (outcome, Some(error))
}

/// A request that got no answer.
fn transport_failure(e: &reqwest::Error) -> (Outcome, Option<AttemptError>) {
    let error = if e.is_builder() {
        AttemptError::Unsendable(root_cause(e))
    } else if e.is_timeout() {
        AttemptError::Timeout
    } else if e.is_connect() {
        AttemptError::Connect(root_cause(e))
    } else {
        AttemptError::Request(root_cause(e))
    };
    (classify_error(e), Some(error))
}

/// Why an attempt failed; its text is what `last_error` and the event's story keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The peer was deleted.
    #[error("peer has no url")]
    NoPeer,
    /// The event could not be read or forwarded.
    #[error("cannot forward: {0}")]
    Forward(String),
    /// The event forwarded is over the body limit.
    #[error("event is {0} bytes forwarded, over the {max} a peer accepts", max = kite_wire::event::MAX_BODY_BYTES)]
    TooLarge(usize),
    /// The peer's URL names a loopback or private address and they are not allowed.
    #[error("forbidden destination: a loopback or private address")]
    Forbidden,
    /// This server's identity key could not sign.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// The peer refused with an error code of its own.
    #[error("{code}: HTTP {status}: {message}")]
    Refused {
        /// The status it answered.
        status: u16,
        /// Its code.
        code: String,
        /// Its message (cut to 300 characters).
        message: String,
    },
    /// The peer answered a failing status without a code of its own.
    #[error("HTTP {status}: {snippet}")]
    Status {
        /// The status it answered.
        status: u16,
        /// The start of its answer.
        snippet: String,
    },
    /// The peer's answer to a batch was not one result per event.
    #[error("HTTP {status}: the answer to a batch of {n} is not one result per event")]
    BatchAnswer {
        /// The status it answered.
        status: u16,
        /// The events in the batch.
        n: usize,
    },
    /// The request could not be made.
    #[error("cannot send: {0}")]
    Unsendable(String),
    /// No answer in time.
    #[error("timeout")]
    Timeout,
    /// No connection.
    #[error("connect error: {0}")]
    Connect(String),
    /// The request failed on the way.
    #[error("request error: {0}")]
    Request(String),
}

impl AttemptError {
    /// A refusal with the peer's code (its message cut to 300 characters).
    fn refused(status: u16, code: &str, message: &str) -> Self {
        AttemptError::Refused {
            status,
            code: code.to_string(),
            message: message
                .chars()
                .take(kite_federation::MAX_PEER_MESSAGE_CHARS)
                .collect(),
        }
    }
}
