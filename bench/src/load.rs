//! The load generator: Stripe-like webhooks at a fixed offered rate (open loop), with a bound
//! on requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::stats::LatencySummary;

/// How to drive load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the kite instance, e.g. `http://127.0.0.1:7700`.
    pub url: String,
    /// Team in the hook path.
    pub team: String,
    /// Source in the hook path (`stripe`: the body's `id` becomes the CloudEvent id).
    pub source: String,
    /// Offered events per second.
    pub rate: u64,
    /// How long to offer load.
    pub duration: Duration,
    /// Most requests in flight at once.
    pub concurrency: usize,
}

/// What the load generator saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Events the schedule called for (rate × duration).
    pub offered: u64,
    /// Requests actually started (below `offered` when the concurrency bound held them back).
    pub sent: u64,
    /// 202 answers.
    pub accepted: u64,
    /// 200 answers (`duplicate_ignored`).
    pub duplicates: u64,
    /// 503 answers.
    pub rejected: u64,
    /// Any other status, and transport errors.
    pub errors: u64,
    /// Up to five examples of errors.
    pub error_samples: Vec<String>,
    /// When the first request was started.
    pub started: Option<Instant>,
    /// From the first request started to the last answer received.
    pub elapsed: Duration,
    /// Response time of accepted (202) requests.
    pub ingress_latency: LatencySummary,
}

impl LoadReport {
    /// Accepted events a second over [`LoadReport::elapsed`].
    pub fn accept_throughput(&self) -> f64 {
        per_second(self.accepted, self.elapsed)
    }

    /// Prints the ingress figures as a table.
    pub fn print(&self, rate: u64, duration: Duration) {
        let rows = self.rows(rate, duration);
        print_table(&rows);
    }

    /// The ingress figures as label/value rows.
    pub fn rows(&self, rate: u64, duration: Duration) -> Vec<(String, String)> {
        let mut rows = vec![
            row("offered rate", format!("{rate} events/s")),
            row("duration", format!("{:.1} s", duration.as_secs_f64())),
            row("offered", self.offered.to_string()),
            row("sent", self.sent.to_string()),
            row("accepted (202)", self.accepted.to_string()),
            row("duplicate (200)", self.duplicates.to_string()),
            row("rejected (503)", self.rejected.to_string()),
            row("errors", self.errors.to_string()),
            row(
                "ingress accept throughput",
                format!("{:.0} events/s", self.accept_throughput()),
            ),
            row(
                "ingress response p50/p99/max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    self.ingress_latency.p50_ms,
                    self.ingress_latency.p99_ms,
                    self.ingress_latency.max_ms
                ),
            ),
        ];
        for (i, e) in self.error_samples.iter().enumerate() {
            rows.push(row(&format!("error sample {}", i + 1), e.clone()));
        }
        rows
    }
}

/// Builds a table row.
pub fn row(label: &str, value: impl Into<String>) -> (String, String) {
    (label.to_owned(), value.into())
}

/// Prints label/value rows as an aligned two-column table.
pub fn print_table(rows: &[(String, String)]) {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let rule = "-".repeat(width + 2 + rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0));
    println!("{rule}");
    for (label, value) in rows {
        println!("{label:<width$}  {value}");
    }
    println!("{rule}");
}

/// `n` over `d` per second, 0 for an empty interval.
pub fn per_second(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// An HTTP client suited to driving load: keep-alive pool as large as the concurrency.
pub fn client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

/// How kite answered one webhook POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202: stored.
    Accepted,
    /// 200 (`duplicate_ignored`): the id was stored before.
    Duplicate,
    /// 503: kite cannot take it now.
    Unavailable,
    /// Any other status, with the first 200 characters of the body.
    Status(StatusCode, String),
    /// No HTTP answer (connection refused or reset, timeout).
    Transport(String),
}

/// A JSON webhook POST of `body` to `endpoint` (a parsed URL is not parsed again).
pub fn webhook_request(
    client: &reqwest::Client,
    endpoint: impl reqwest::IntoUrl,
    body: Bytes,
) -> reqwest::RequestBuilder {
    client
        .post(endpoint)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
}

/// Sends a webhook request and classifies the answer. Reads the whole answer so the
/// connection goes back to the pool.
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            match status {
                StatusCode::ACCEPTED => Answer::Accepted,
                StatusCode::OK => Answer::Duplicate,
                StatusCode::SERVICE_UNAVAILABLE => Answer::Unavailable,
                other => Answer::Status(other, text.chars().take(200).collect()),
            }
        }
        Err(e) => Answer::Transport(error_chain(&e)),
    }
}

/// An error and its sources, joined with `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// The webhook body for event number `n` of run `run_id`, stamped with the current time.
pub fn webhook_body(run_id: &str, n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"evt_{run_id}_{n}","object":"event","type":"payment_intent.succeeded","data":{{"object":{{"id":"pi_x","amount":1000}}}},"sent_at_us":{}}}"#,
        crate::now_micros()
    ))
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    error_samples: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < 5 {
            samples.push(what);
        }
    }
}

/// Offers `cfg.rate` events a second for `cfg.duration` to `POST {url}/hooks/{team}/{source}`.
///
/// Pacing is open loop: every millisecond the generator starts as many requests as the
/// schedule says are due, whatever the answers so far, but never more than `concurrency` at
/// once; when that bound holds it back, it catches up in a burst, and stops at the deadline.
pub async fn run_load(client: &reqwest::Client, cfg: &LoadConfig) -> Result<LoadReport> {
    if cfg.rate == 0 || cfg.concurrency == 0 || cfg.duration.is_zero() {
        bail!("rate, concurrency and duration must all be above zero");
    }
    let endpoint = format!(
        "{}/hooks/{}/{}",
        cfg.url.trim_end_matches('/'),
        cfg.team,
        cfg.source
    );
    // Parsed once: the generator shares the CPU with what it measures.
    let endpoint = reqwest::Url::parse(&endpoint).with_context(|| format!("url {endpoint}"))?;
    let run_id = crate::random_hex(12);
    let offered = (cfg.rate as f64 * cfg.duration.as_secs_f64()).round() as u64;
    let counters = Arc::new(Counters::default());
    let semaphore = Arc::new(Semaphore::new(cfg.concurrency));
    let permits = u32::try_from(cfg.concurrency).context("concurrency too large")?;

    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent = 0u64;
    'schedule: while sent < offered {
        ticker.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= cfg.duration {
            break;
        }
        // +1: the first event is due at t = 0.
        let due = ((elapsed.as_secs_f64() * cfg.rate as f64) as u64 + 1).min(offered);
        while sent < due {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .context("load semaphore closed")?;
            if start.elapsed() >= cfg.duration {
                break 'schedule;
            }
            let request = webhook_request(client, endpoint.clone(), webhook_body(&run_id, sent));
            let counters = counters.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                match send(request).await {
                    Answer::Accepted => {
                        counters.accepted.fetch_add(1, Ordering::Relaxed);
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        counters
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(us);
                    }
                    Answer::Duplicate => {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::Unavailable => {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::Status(status, snippet) => {
                        counters.error(format!("HTTP {status}: {snippet}"));
                    }
                    Answer::Transport(e) => counters.error(format!("transport: {e}")),
                }
                drop(permit);
            });
            sent += 1;
        }
    }
    // Wait for every request in flight to finish.
    let _all = semaphore
        .acquire_many(permits)
        .await
        .context("load semaphore closed")?;
    let elapsed = start.elapsed();

    let mut latencies = std::mem::take(
        &mut *counters
            .latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let error_samples = counters
        .error_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(LoadReport {
        offered,
        sent,
        accepted: counters.accepted.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        error_samples,
        started: Some(start),
        elapsed,
        ingress_latency: LatencySummary::from_micros(&mut latencies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_stamp() {
        let b = webhook_body("abc", 7);
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["id"], "evt_abc_7");
        assert_eq!(v["type"], "payment_intent.succeeded");
        assert!(v["sent_at_us"].as_u64().expect("stamp") > 0);
    }
}
