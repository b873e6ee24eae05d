//! kite-delivery: one consumer per active peer on `{prefix}.deliver.{peer_id}`; signed POSTs
//! in the Kite wire format; outbox state in Postgres; retries through TTL tier queues;
//! `dead` after the last attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kite_bus::{BasicAckOptions, Batch, Bus, Delivery, Outgoing};
use kite_protocol::{fed, signature};
use kite_store::outbox::{DeliveryRow, DeliveryUpdate};
use kite_store::peers::PeerOutcome;
use kite_store::Store;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Backoff settings: `base`, doubling, capped at `max_delay`, `max_attempts` failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub base: Duration,
    /// Cap on any delay.
    pub max_delay: Duration,
    /// Failed attempts after which a row is dead.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`, before jitter: base·2^(failures−1), capped.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    /// The delay with jitter: between 80 % and 100 % of [`RetryPolicy::delay`].
    pub fn jittered(&self, failures: u32) -> Duration {
        let d = self.delay(failures);
        d.mul_f64(rand::rng().random_range(0.8..=1.0))
    }

    /// Number of retry tier queues needed.
    pub fn tiers(&self) -> u32 {
        self.max_attempts.saturating_sub(1).max(1)
    }
}

/// How one delivery attempt ended. Every attempt is classified here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered 2xx.
    Delivered,
    /// The peer is failing (transport error, timeout, 408, 429, 5xx, a refused
    /// destination): counts toward `unreachable`, parking and probing.
    PeerFailure,
    /// This message fails (any other 4xx, or a local failure such as an event that cannot
    /// be sent): attempts + 1 and backoff, `dead` after the last attempt; the peer is not
    /// parked for it.
    MessageFailure,
    /// 410 Gone: the peer no longer takes deliveries; it is paused.
    Gone,
}

/// Classifies an HTTP status the peer answered.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        408 | 429 => Outcome::PeerFailure,
        400..=499 => Outcome::MessageFailure,
        // 1xx and 3xx (redirects are never followed) and 5xx: the peer is not working.
        _ => Outcome::PeerFailure,
    }
}

/// Classifies a request that got no answer: building it locally (an unencodable header)
/// is the message's failure; anything on the way to the peer is the peer's.
pub fn classify_error(e: &reqwest::Error) -> Outcome {
    if e.is_builder() {
        Outcome::MessageFailure
    } else {
        Outcome::PeerFailure
    }
}

/// Rows a probe may settle as message failures before it waits for the next probe.
const PROBE_ROWS: usize = 20;

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// This instance's id (appended to forwarded chains).
    pub instance_id: String,
    /// Backoff.
    pub retry: RetryPolicy,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Messages in flight per peer consumer.
    pub prefetch: u16,
    /// Failures in a row after which a peer is `unreachable` and its deliveries are parked.
    pub failure_threshold: i32,
    /// How often an unreachable peer is probed.
    pub probe_interval: Duration,
    /// Deliver to loopback and private addresses (otherwise refused at connect time).
    pub allow_private_peers: bool,
    /// PEM file of an extra CA to trust for peers' TLS certificates.
    pub peer_ca: Option<std::path::PathBuf>,
}

struct Ctx {
    store: Store,
    bus: Arc<Bus>,
    http: reqwest::Client,
    cfg: DeliveryConfig,
}

/// A delivery failure that leaves the message for later.
#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error(transparent)]
    Store(#[from] kite_store::StoreError),
    #[error(transparent)]
    Bus(#[from] kite_bus::BusError),
}

/// Resolves peer host names, refusing forbidden addresses at connect time, so a name that
/// resolved to a public address when the peer was created cannot be rebound to a private one.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs
                .iter()
                .any(|a| kite_protocol::ssrf::is_forbidden(a.ip()))
            {
                return Err(format!(
                    "forbidden destination: {} resolves to a private address",
                    name.as_str()
                )
                .into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer CA file could not be read or parsed.
    #[error("KITE_PEER_CA: {0}")]
    PeerCa(String),
    /// reqwest refused the configuration.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Builds the process' one outbound HTTP client: timeouts, no redirects, keep-alive pools,
/// certificate verification (plus `peer_ca`), and the SSRF guard unless private peers are
/// allowed.
pub fn http_client(
    timeout: Duration,
    allow_private: bool,
    peer_ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .user_agent(concat!("kite/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    if let Some(path) = peer_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::PeerCa(format!("{}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::PeerCa(format!("{}: {e}", path.display())))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b.build()?)
}

/// True if the URL names a forbidden IP address literal (host names are checked when they
/// are resolved).
fn literal_forbidden(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_ok_and(kite_protocol::ssrf::is_forbidden)
}

/// Runs the delivery role until `shutdown` turns true: keeps one consumer per active peer.
pub async fn run(
    store: Store,
    bus: Arc<Bus>,
    mut config_generation: watch::Receiver<u64>,
    cfg: DeliveryConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let http = http_client(
        cfg.request_timeout,
        cfg.allow_private_peers,
        cfg.peer_ca.as_deref(),
    )?;
    let ctx = Arc::new(Ctx {
        store,
        bus,
        http,
        cfg,
    });
    let mut workers: HashMap<Uuid, Worker> = HashMap::new();
    loop {
        match ctx.store.all_peers().await {
            Ok(peers) => {
                let wanted: HashMap<Uuid, Kind> = peers
                    .iter()
                    .filter(|p| p.status == "active")
                    .map(|p| {
                        let kind = if p.health == "unreachable" {
                            Kind::Probe
                        } else {
                            Kind::Deliver
                        };
                        (p.id, kind)
                    })
                    .collect();
                workers.retain(|id, w| {
                    let keep = wanted.get(id) == Some(&w.kind) && !w.handle.is_finished();
                    if !keep {
                        let _ = w.stop.send(true);
                    }
                    keep
                });
                for (id, kind) in wanted {
                    if workers.contains_key(&id) {
                        continue;
                    }
                    let (stop, rx) = watch::channel(false);
                    let handle = match kind {
                        Kind::Deliver => {
                            tokio::spawn(peer_worker(ctx.clone(), id, rx, shutdown.clone()))
                        }
                        Kind::Probe => tokio::spawn(prober(ctx.clone(), id, rx, shutdown.clone())),
                    };
                    workers.insert(id, Worker { kind, stop, handle });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot load peers"),
        }
        tokio::select! {
            _ = config_generation.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    for (_, w) in workers {
        let _ = w.stop.send(true);
        let _ = w.handle.await;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deliver,
    Probe,
}

struct Worker {
    kind: Kind,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// While a peer is unreachable its deliveries stay parked in its queue; this task tries the
/// oldest pending one every probe interval until one gets through. A peer failure costs the
/// row no attempt; a message failure is that row's own (attempts + 1, or dead) and the probe
/// moves on to the next row.
async fn prober(
    ctx: Arc<Ctx>,
    peer_id: Uuid,
    stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    tracing::warn!(peer = %peer_id, "peer unreachable; deliveries parked, probing");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.probe_interval) => {}
            _ = either_stopped(stop.clone(), shutdown.clone()) => return,
        }
        match ctx.probe(peer_id).await {
            Ok(true) => {
                tracing::info!(peer = %peer_id, "peer reachable again; parked deliveries resume");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(peer = %peer_id, error = %e, "probe bookkeeping failed"),
        }
    }
}

async fn either_stopped(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) {
    tokio::select! {
        _ = a.wait_for(|s| *s) => {}
        _ = b.wait_for(|s| *s) => {}
    }
}

async fn peer_worker(
    ctx: Arc<Ctx>,
    peer_id: Uuid,
    stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let queue = ctx.bus.names().peer_queue(&peer_id.to_string());
    if let Err(e) = ctx.bus.declare_peer(&peer_id.to_string()).await {
        tracing::warn!(peer = %peer_id, error = %e, "cannot declare peer queue");
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    }
    let (paused_tx, paused_rx) = watch::channel(false);
    let tag = format!("kite-delivery-{peer_id}");
    match ctx.bus.consume(&queue, &tag, ctx.cfg.prefetch).await {
        Ok((channel, consumer)) => {
            tracing::info!(peer = %peer_id, "delivery consuming");
            let end = async {
                tokio::select! {
                    _ = either_stopped(stop.clone(), shutdown.clone()) => {}
                    _ = async { let mut p = paused_rx.clone(); let _ = p.wait_for(|s| *s).await; } => {}
                }
            };
            consumer
                .take_until(end)
                .for_each_concurrent(16, |d| {
                    let ctx = ctx.clone();
                    let paused_tx = paused_tx.clone();
                    async move {
                        match d {
                            Ok(d) => {
                                if ctx.handle(d).await != Handled::Done {
                                    let _ = paused_tx.send(true);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "delivery consumer error"),
                        }
                    }
                })
                .await;
            // Unacknowledged messages go back to the queue when the channel closes.
            let _ = channel.close(200, "bye".into()).await;
        }
        Err(e) => {
            tracing::warn!(peer = %peer_id, error = %e, "cannot consume; supervisor will retry");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Handled {
    /// Processed; ack.
    Done,
    /// Processed, and the peer just became unreachable or was paused; ack and stop
    /// consuming.
    Parked,
    /// The peer is paused or parked; hand the message back and stop consuming.
    PeerNotActive,
}

struct Attempt {
    row_id: i64,
    attempts: i32,
    outcome: Outcome,
    status: Option<i32>,
    error: Option<String>,
    instance_id: Option<String>,
}

impl Ctx {
    async fn handle(&self, d: Delivery) -> Handled {
        let Some(batch) = Batch::parse(&d.data) else {
            tracing::warn!("dropping malformed delivery message");
            let _ = d.ack(BasicAckOptions::default()).await;
            return Handled::Done;
        };
        let peer_id = d.routing_key.as_str().parse::<Uuid>().ok();
        match self.deliver(peer_id, &batch.ids).await {
            Ok(h @ (Handled::Done | Handled::Parked)) => {
                let _ = d.ack(BasicAckOptions::default()).await;
                h
            }
            Ok(Handled::PeerNotActive) => {
                kite_bus::requeue(&d).await;
                Handled::PeerNotActive
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery bookkeeping failed; message requeued");
                tokio::time::sleep(Duration::from_millis(500)).await;
                kite_bus::requeue(&d).await;
                Handled::Done
            }
        }
    }

    async fn deliver(&self, peer_hint: Option<Uuid>, ids: &[i64]) -> Result<Handled, DeliverError> {
        let rows = self.store.delivery_rows(ids).await?;
        let mut to_send = Vec::new();
        let mut cancel = Vec::new();
        for row in rows {
            if row.state != "pending" {
                continue;
            }
            match row.peer_status.as_deref() {
                Some("active") if row.peer_health.as_deref() == Some("unreachable") => {
                    return Ok(Handled::PeerNotActive)
                }
                Some("active") => to_send.push(row),
                Some("paused") => return Ok(Handled::PeerNotActive),
                _ => cancel.push(row.id),
            }
        }
        if !cancel.is_empty() {
            self.store.cancel_rows(&cancel).await?;
        }
        if to_send.is_empty() {
            return Ok(Handled::Done);
        }
        let peer_id = peer_hint.unwrap_or(to_send[0].peer_id);
        let attempts: Vec<Attempt> = futures::stream::iter(to_send)
            .map(|row| self.attempt(row))
            .buffer_unordered(32)
            .collect()
            .await;
        let health = self.record(peer_id, attempts, true).await?;
        Ok(if health == "unreachable" || health == "paused" {
            Handled::Parked
        } else {
            Handled::Done
        })
    }

    /// Tries the oldest pending delivery of an unreachable peer; answers whether the probe
    /// is over (the peer took it, or it is paused now). A row the peer refuses for good is
    /// settled as its own failure and the next one is tried.
    async fn probe(&self, peer_id: Uuid) -> Result<bool, DeliverError> {
        let mut after = 0;
        for _ in 0..PROBE_ROWS {
            let Some(id) = self.store.oldest_pending_after(peer_id, after).await? else {
                self.store.mark_peer_reachable(peer_id).await?;
                return Ok(true);
            };
            after = id;
            let Some(row) = self.store.delivery_rows(&[id]).await?.into_iter().next() else {
                continue;
            };
            let a = self.attempt(row).await;
            match a.outcome {
                Outcome::MessageFailure => {
                    // Its parked message is still queued: no retry message is added.
                    self.record(peer_id, vec![a], false).await?;
                }
                // A parked row spends no attempt on the peer being down.
                Outcome::PeerFailure => {
                    let outcome = PeerOutcome {
                        failures: 1,
                        last_error: a.error,
                        last_status_code: a.status,
                        ..PeerOutcome::default()
                    };
                    self.store
                        .record_peer_outcome(peer_id, &outcome, self.cfg.failure_threshold)
                        .await?;
                    return Ok(false);
                }
                Outcome::Delivered | Outcome::Gone => {
                    let health = self.record(peer_id, vec![a], false).await?;
                    if health != "paused" {
                        self.store.mark_peer_reachable(peer_id).await?;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn attempt(&self, row: DeliveryRow) -> Attempt {
        let mut out = Attempt {
            row_id: row.id,
            attempts: row.attempts,
            outcome: Outcome::MessageFailure,
            status: None,
            error: None,
            instance_id: None,
        };
        let (Some(url), Some(token)) = (row.peer_hook_url, row.outbound_token) else {
            out.error = Some("peer has no url".into());
            return out;
        };
        let body = match row.event_rest.and_then(|rest| {
            fed::forward_text(&rest, &row.fed, &self.cfg.instance_id).map_err(|e| e.to_string())
        }) {
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
        if !self.cfg.allow_private_peers && literal_forbidden(&url) {
            out.outcome = Outcome::PeerFailure;
            out.error = Some("forbidden destination: a loopback or private address".into());
            return out;
        }
        let id = row.event_id;
        let ts = Utc::now().timestamp();
        // Standard Webhooks signature (id, timestamp, body), by every secret in rotation; the
        // body-only X-Kite-Signature is kept for peers running Kite.
        let mut secrets = vec![token.as_str()];
        secrets.extend(row.previous_token.as_deref());
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .header(signature::SIGNATURE_HEADER, signature::sign(&token, &body))
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                kite_protocol::provider::sign_standard(&secrets, &id, ts, &body),
            );
        req = match &row.key_id {
            Some(k) => req.header(signature::KEY_ID_HEADER, k),
            None => req.header("authorization", format!("Bearer {token}")),
        };
        let res = req.body(body).send().await;
        match res {
            Ok(resp) => {
                let status = resp.status();
                out.status = Some(i32::from(status.as_u16()));
                out.instance_id = resp
                    .headers()
                    .get(signature::INSTANCE_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                out.outcome = classify_status(status.as_u16());
                if out.outcome != Outcome::Delivered {
                    let text = resp.text().await.unwrap_or_default();
                    let snippet: String = text.chars().take(300).collect();
                    out.error = Some(format!("HTTP {}: {snippet}", status.as_u16()));
                }
            }
            Err(e) => {
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

    /// Writes attempts' results and the peer's health; schedules retries through the tier
    /// queues when `schedule` (a probe's rows keep their parked message instead). Answers
    /// the peer's health, or `paused` when a 410 paused it.
    async fn record(
        &self,
        peer_id: Uuid,
        attempts: Vec<Attempt>,
        schedule: bool,
    ) -> Result<String, DeliverError> {
        let policy = self.cfg.retry;
        let now = Utc::now();
        let mut updates = Vec::with_capacity(attempts.len());
        let mut retries: Vec<(u32, i64, u64)> = Vec::new();
        let mut outcome = PeerOutcome::default();
        let mut gone: Option<String> = None;
        for a in attempts {
            match a.outcome {
                Outcome::Delivered => {
                    outcome.success = true;
                    outcome.failures = 0;
                    outcome.last_status_code = a.status.or(outcome.last_status_code);
                    outcome.instance_id = a.instance_id.clone().or(outcome.instance_id);
                    updates.push(DeliveryUpdate {
                        id: a.row_id,
                        state: "delivered",
                        attempts: a.attempts,
                        next_attempt_at: now,
                        last_error: None,
                        last_status_code: a.status,
                    });
                    continue;
                }
                // The row waits, unspent, for the peer to be resumed.
                Outcome::Gone => {
                    gone = Some(a.error.clone().unwrap_or_else(|| "HTTP 410".into()));
                    continue;
                }
                Outcome::PeerFailure => {
                    outcome.failures += 1;
                    outcome.last_error = a.error.clone();
                    outcome.last_status_code = a.status.or(outcome.last_status_code);
                }
                Outcome::MessageFailure => {}
            }
            let failures = (a.attempts.max(0) as u32) + 1;
            let (state, delay) = if failures >= policy.max_attempts {
                ("dead", Duration::ZERO)
            } else {
                ("pending", policy.jittered(failures))
            };
            if state == "pending" {
                retries.push((failures, a.row_id, delay.as_millis() as u64));
            }
            updates.push(DeliveryUpdate {
                id: a.row_id,
                state,
                attempts: failures as i32,
                next_attempt_at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                last_error: a.error,
                last_status_code: a.status,
            });
        }
        self.store.apply_delivery(&updates).await?;
        if let Some(error) = &gone {
            tracing::warn!(peer = %peer_id, "peer answered 410 Gone; pausing it");
            self.store
                .pause_gone_peer(
                    peer_id,
                    &format!("paused: the peer answered 410 Gone ({error}); resume it once it takes deliveries again"),
                )
                .await?;
        }
        let health = if outcome == PeerOutcome::default() {
            None
        } else {
            match self
                .store
                .record_peer_outcome(peer_id, &outcome, self.cfg.failure_threshold)
                .await
            {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(peer = %peer_id, error = %e, "cannot record peer health");
                    None
                }
            }
        };
        if schedule {
            // One message a row: each carries its own jittered expiration.
            let msgs: Vec<Outgoing> = retries
                .into_iter()
                .map(|(tier, id, ms)| Outgoing {
                    exchange: self.bus.names().retry_tier(tier.min(policy.tiers())),
                    routing_key: peer_id.to_string(),
                    payload: Batch { ids: vec![id] }.to_bytes(),
                    expiration_ms: Some(ms.max(1)),
                })
                .collect();
            self.bus.publish(&msgs).await?;
        }
        if gone.is_some() {
            return Ok("paused".to_string());
        }
        Ok(health.unwrap_or_else(|| "active".to_string()))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
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
    fn outcomes_are_classified_once() {
        for (status, want) in [
            (200, Outcome::Delivered),
            (204, Outcome::Delivered),
            (400, Outcome::MessageFailure),
            (401, Outcome::MessageFailure),
            (413, Outcome::MessageFailure),
            (422, Outcome::MessageFailure),
            (408, Outcome::PeerFailure),
            (429, Outcome::PeerFailure),
            (410, Outcome::Gone),
            (500, Outcome::PeerFailure),
            (503, Outcome::PeerFailure),
            (302, Outcome::PeerFailure),
        ] {
            assert_eq!(classify_status(status), want, "{status}");
        }
    }

    #[test]
    fn backoff_doubles_to_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=10).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        for n in 1..=10 {
            let j = p.jittered(n);
            assert!(j <= p.delay(n) && j >= p.delay(n).mul_f64(0.79));
        }
        assert_eq!(p.tiers(), 9);
    }
}
