//! The receiving end of the benchmark: a federation peer that verifies, counts and times events.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::stats::LatencySummary;

/// The instance id the sink answers with in `X-Kite-Instance-Id`.
pub const SINK_INSTANCE_ID: &str = "bench-sink";

/// The key in an event's `data` object that marks a warm-up probe: probes are counted apart
/// and never enter `received`, `unique`, `duplicates` or the latency samples.
pub const PROBE_KEY: &str = "bench_probe";

/// Counters shared by the sink's handlers and whoever reads the results.
#[derive(Debug)]
pub struct SinkState {
    token: Option<String>,
    /// The most events a batch may carry (offered in `X-Kite-Batch` as a kite peer does);
    /// 0: one event a request, as a Kite peer takes them.
    batch: usize,
    received: AtomicU64,
    probes: AtomicU64,
    rejected: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<String>,
    duplicates: u64,
    latencies_us: Vec<u64>,
    first_unique_at: Option<Instant>,
    last_unique_at: Option<Instant>,
}

/// A cheap snapshot of the sink's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCounts {
    /// Authenticated, well-formed events taken, alone or in a batch (probes excluded).
    pub received: u64,
    /// Distinct CloudEvent ids among them.
    pub unique: u64,
    /// Deliveries of an id already seen.
    pub duplicates: u64,
    /// Warm-up probe events (see [`PROBE_KEY`]).
    pub probes: u64,
    /// Requests refused (401 bad token or signature, 400 unparsable event).
    pub rejected: u64,
    /// When the first new id arrived.
    pub first_unique_at: Option<Instant>,
    /// When the last new id arrived.
    pub last_unique_at: Option<Instant>,
}

impl SinkState {
    /// A sink that checks the bearer token and `X-Kite-Signature` when `token` is set, and
    /// offers batches of up to `batch` events (0: none).
    pub fn new(token: Option<String>, batch: usize) -> Arc<Self> {
        Arc::new(Self {
            token,
            batch: batch.min(kite_wire::batch::MAX_EVENTS),
            received: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current counters (cheap: no sorting).
    pub fn counts(&self) -> SinkCounts {
        let inner = self.lock();
        SinkCounts {
            received: self.received.load(Ordering::Relaxed),
            unique: inner.seen.len() as u64,
            duplicates: inner.duplicates,
            probes: self.probes.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            first_unique_at: inner.first_unique_at,
            last_unique_at: inner.last_unique_at,
        }
    }

    /// Percentiles of the end-to-end latency of first deliveries (sorts a copy of the samples).
    pub fn latency(&self) -> LatencySummary {
        let mut samples = self.lock().latencies_us.clone();
        LatencySummary::from_micros(&mut samples)
    }

    /// The `GET /stats` document.
    pub fn stats_json(&self) -> Value {
        let c = self.counts();
        let l = self.latency();
        json!({
            "received": c.received,
            "unique": c.unique,
            "duplicates": c.duplicates,
            "probes": c.probes,
            "rejected": c.rejected,
            "p50_ms": l.p50_ms,
            "p99_ms": l.p99_ms,
            "max_ms": l.max_ms,
        })
    }

    fn record(&self, id: &str, sent_at_us: Option<u64>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let latency = sent_at_us.map(|sent| crate::now_micros().saturating_sub(sent));
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.seen.contains(id) {
            inner.duplicates += 1;
            return;
        }
        inner.seen.insert(id.to_owned());
        inner.first_unique_at.get_or_insert(now);
        inner.last_unique_at = Some(now);
        if let Some(us) = latency {
            inner.latencies_us.push(us);
        }
    }

    /// Checks the bearer token and the HMAC signature over the raw body.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        let Some(token) = self.token.as_deref() else {
            return Ok(());
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("unknown_sender")?;
        if !ct_eq(bearer.trim().as_bytes(), token.as_bytes()) {
            return Err("unknown_sender");
        }
        let sig = headers
            .get("x-kite-signature")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .ok_or("invalid_signature")?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(token.as_bytes()).map_err(|_| "invalid_signature")?;
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| "invalid_signature")
    }
}

/// Constant-time byte comparison (length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the sink needs from a structured CloudEvent: its id, `data.sent_at_us`, and whether
/// it is a warm-up probe. `data` may be a JSON object or a string holding one. Only those
/// fields are read (borrowed, the rest skipped): the sink shares the CPU with what it
/// measures.
fn parse_event(body: &[u8]) -> Option<(String, Option<u64>, bool)> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Data {
        sent_at_us: Option<serde_json::Number>,
        /// [`PROBE_KEY`] (`probe_key_is_the_field_read` ties the two).
        bench_probe: Option<bool>,
    }
    let event: Event = serde_json::from_slice(body).ok()?;
    let data = event
        .data
        .map(|raw| raw.get())
        .and_then(|raw| {
            if raw.starts_with('"') {
                let text = serde_json::from_str::<String>(raw).ok()?;
                serde_json::from_str::<Data>(&text).ok()
            } else {
                serde_json::from_str::<Data>(raw).ok()
            }
        })
        .unwrap_or_default();
    let sent_at = data
        .sent_at_us
        .and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)));
    Some((
        event.id.into_owned(),
        sent_at,
        data.bench_probe.unwrap_or(false),
    ))
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

/// `POST /p/{peer}/hooks/{team}/kite`: the same, for one of several peers (a delivery counts
/// once per peer).
async fn peer_hook(
    State(state): State<Arc<SinkState>>,
    axum::extract::Path((peer, _team)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(&state, Some(&peer), &headers, &body)
}

async fn hook(State(state): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, None, &headers, &body)
}

fn receive(state: &SinkState, peer: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Response {
    use kite_wire::batch;
    if let Err(code) = state.authenticate(headers, body) {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::UNAUTHORIZED, code);
    }
    let answer = if batch::is_batch(headers) {
        if state.batch == 0 {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "batch_not_offered");
        }
        let Ok(items) = batch::split(body, state.batch) else {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, "invalid_batch");
        };
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            results.push(if take(state, peer, item.get().as_bytes()) {
                r#"{"status":"accepted"}"#
            } else {
                r#"{"status":"rejected","http_status":400,"error":{"code":"invalid_event","message":"invalid_event"}}"#
            });
        }
        format!(r#"{{"results":[{}]}}"#, results.join(","))
    } else if take(state, peer, body) {
        r#"{"status":"ok"}"#.to_string()
    } else {
        return error(StatusCode::BAD_REQUEST, "invalid_event");
    };
    let mut r = (
        StatusCode::OK,
        [
            (
                "x-kite-instance-id",
                HeaderValue::from_static(SINK_INSTANCE_ID),
            ),
            (
                header::CONTENT_TYPE.as_str(),
                HeaderValue::from_static("application/json"),
            ),
        ],
        answer,
    )
        .into_response();
    if state.batch > 0 {
        r.headers_mut()
            .insert(batch::OFFER_HEADER, HeaderValue::from(state.batch));
    }
    r
}

/// Counts one event (a probe apart); false when it is not one the sink can read.
fn take(state: &SinkState, peer: Option<&str>, event: &[u8]) -> bool {
    let Some((id, sent_at_us, probe)) = parse_event(event) else {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    if probe {
        state.probes.fetch_add(1, Ordering::Relaxed);
    } else {
        match peer {
            Some(p) => state.record(&format!("{p}/{id}"), sent_at_us),
            None => state.record(&id, sent_at_us),
        }
    }
    true
}

async fn stats(State(state): State<Arc<SinkState>>) -> Json<Value> {
    Json(state.stats_json())
}

/// The sink's routes: `POST /hooks/{team}/kite`, `POST /p/{peer}/hooks/{team}/kite` and
/// `GET /stats`.
pub fn router(state: Arc<SinkState>) -> Router {
    Router::new()
        .route("/hooks/{team}/kite", post(hook))
        .route("/p/{peer}/hooks/{team}/kite", post(peer_hook))
        .route("/stats", get(stats))
        .with_state(state)
}

/// A sink serving in a background task.
#[derive(Debug)]
pub struct RunningSink {
    /// The bound address (useful when listening on port 0).
    pub addr: SocketAddr,
    /// The shared counters.
    pub state: Arc<SinkState>,
    /// The server task; abort it to stop the sink.
    pub task: JoinHandle<()>,
}

/// Binds `listen` and serves the sink in a background task.
pub async fn spawn(listen: SocketAddr, token: Option<String>, batch: usize) -> Result<RunningSink> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the sink to {listen}"))?;
    let addr = listener
        .local_addr()
        .context("reading the sink's address")?;
    let state = SinkState::new(token, batch);
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("kite-bench sink: server error: {e}");
        }
    });
    Ok(RunningSink { addr, state, task })
}

/// `kite-bench sink`: serves until Ctrl-C, then prints the final stats.
pub async fn run_standalone(listen: SocketAddr, token: Option<String>, batch: usize) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the sink to {listen}"))?;
    let addr = listener
        .local_addr()
        .context("reading the sink's address")?;
    let state = SinkState::new(token.clone(), batch);
    println!(
        "kite-bench sink listening on http://{addr} (hooks: /hooks/{{team}}/kite, stats: /stats, auth: {}, batches: {})",
        if token.is_some() { "bearer + signature" } else { "off" },
        if batch > 0 { format!("up to {batch} events") } else { "none".to_string() }
    );
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the sink")?;
    println!("{}", state.stats_json());
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_object_and_string() {
        let (id, at, probe) =
            parse_event(br#"{"id":"e1","data":{"sent_at_us":12,"x":1}}"#).expect("parses");
        assert_eq!((id.as_str(), at, probe), ("e1", Some(12), false));
        let (_, at, _) =
            parse_event(br#"{"id":"e2","data":"{\"sent_at_us\":34}"}"#).expect("parses");
        assert_eq!(at, Some(34));
        let (_, at, probe) =
            parse_event(br#"{"id":"e3","data":{"bench_probe":true}}"#).expect("parses");
        assert_eq!((at, probe), (None, true));
        assert!(parse_event(br#"{"data":{}}"#).is_none());
        let (id, at, _) =
            parse_event(br#"{"specversion":"1.0","id":"e4","data":{"sent_at_us":5.0,"n":[1]}}"#)
                .expect("parses");
        assert_eq!((id.as_str(), at), ("e4", Some(5)));
        assert!(parse_event(b"nope").is_none());
    }

    #[test]
    fn probe_key_is_the_field_read() {
        let body = format!(r#"{{"id":"p","data":{{"{PROBE_KEY}":true}}}}"#);
        let (_, _, probe) = parse_event(body.as_bytes()).expect("parses");
        assert!(probe);
    }

    #[test]
    fn counts_duplicates() {
        let s = SinkState::new(None, 0);
        s.record("a", Some(crate::now_micros()));
        s.record("a", None);
        s.record("b", None);
        let c = s.counts();
        assert_eq!((c.received, c.unique, c.duplicates), (3, 2, 1));
        assert_eq!(s.latency().count, 1);
    }

    #[test]
    fn verifies_signature() {
        let s = SinkState::new(Some("tok".into()), 0);
        let body = br#"{"id":"x"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"tok").expect("key");
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        h.insert(
            "x-kite-signature",
            HeaderValue::from_str(&format!("sha256={sig}")).expect("header"),
        );
        assert_eq!(s.authenticate(&h, body), Ok(()));
        assert_eq!(s.authenticate(&h, b"other"), Err("invalid_signature"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bad"),
        );
        assert_eq!(s.authenticate(&h, body), Err("unknown_sender"));
    }
}
