//! `kite-bench chaos`: instance A (three processes: ingress, router, delivery) federating to
//! instance B (one process), fed a fixed number of events by a retrying webhook provider while
//! faults are injected on a schedule; then counts what reached B's store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::harness::{
    admin_post, cleanup, close_amqp_connections, psql, random_admin_key, resolve_kite_bin,
    spawn_kite, wait_ready, with_database, LogCounts, LogFile,
};
use crate::load::{print_table, row, send, webhook_request, Answer};

/// Settings of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The kite binary; `None` picks `target/release/kite`, else `target/debug/kite`.
    pub kite_bin: Option<PathBuf>,
    /// Events to send (ids `evt_chaos_0` ...).
    pub events: u64,
    /// Events started a second (before retries).
    pub rate: u64,
    /// Events in flight at once (an event holds its slot through its retries).
    pub concurrency: usize,
    /// Time between faults.
    pub fault_every: Duration,
    /// How long to wait, after every event was answered, for B to hold every accepted one.
    pub drain_timeout: Duration,
    /// Postgres server URL; the run makes two databases on it.
    pub database_url: String,
    /// RabbitMQ URL; the run uses two name prefixes on it.
    pub amqp_url: String,
    /// Mix hostile requests of every kind into the stream, one every this long (instead of
    /// faults when `fault_every` is zero); the peer must never be parked by them.
    pub hostile_every: Option<Duration>,
}

const TEAM: &str = "default";
/// First retry delay of the provider; doubles up to [`RETRY_CAP`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest retry delay of the provider.
pub const RETRY_CAP: Duration = Duration::from_secs(2);
/// How long the provider keeps retrying one event.
pub const RETRY_BUDGET: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(500);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: u32 = 5;

/// One kind of fault, in schedule order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL A's router process, then start it again.
    KillRouter,
    /// SIGKILL A's delivery process, then start it again.
    KillDelivery,
    /// Close every AMQP connection of A from the broker side.
    CloseAmqp,
    /// Terminate every Postgres backend connected to A's database.
    TerminateDb,
    /// SIGKILL B, then start it again on the same port.
    KillB,
    /// SIGKILL A's ingress process, then start it again on the same port.
    KillIngress,
}

impl FaultKind {
    /// Every kind, in the order the schedule cycles through them.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::KillRouter,
        FaultKind::KillDelivery,
        FaultKind::CloseAmqp,
        FaultKind::TerminateDb,
        FaultKind::KillB,
        FaultKind::KillIngress,
    ];

    /// The kind of the `i`-th fault (0-based) of a run.
    pub fn nth(i: u64) -> FaultKind {
        Self::ALL[(i % Self::ALL.len() as u64) as usize]
    }

    /// What the fault does, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::KillRouter => "SIGKILL A-router + restart",
            FaultKind::KillDelivery => "SIGKILL A-delivery + restart",
            FaultKind::CloseAmqp => "close A's AMQP connections",
            FaultKind::TerminateDb => "terminate A's Postgres backends",
            FaultKind::KillB => "SIGKILL B + restart (same port)",
            FaultKind::KillIngress => "SIGKILL A-ingress + restart (same port)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the fault injector did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultTally {
    /// Faults injected, by [`FaultKind::index`].
    pub injected: [u64; 6],
    /// Faults that could not be injected (the tool failed), by kind; not in `injected`.
    pub failed: [u64; 6],
    /// AMQP connections closed over all `CloseAmqp` faults.
    pub amqp_connections_closed: u64,
    /// Postgres backends terminated over all `TerminateDb` faults.
    pub db_backends_terminated: u64,
    /// Longest time a killed process took to print its ready line again.
    pub slowest_restart: Duration,
    /// Processes found dead before their fault (they exited on their own).
    pub unexpected_exits: Vec<String>,
}

impl FaultTally {
    /// Records an injected fault.
    pub fn record(&mut self, kind: FaultKind) {
        self.injected[kind.index()] += 1;
    }

    /// Faults injected over all kinds.
    pub fn total(&self) -> u64 {
        self.injected.iter().sum()
    }
}

/// How the provider's attempts at one event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// 202.
    Created,
    /// 200 `duplicate_ignored`: an earlier attempt was stored but its answer was lost.
    Duplicate,
    /// Retried for [`RETRY_BUDGET`] without a 202 or 200.
    GaveUp,
    /// A 4xx answer, which a provider does not retry.
    Refused,
}

/// One event's attempts.
#[derive(Debug, Clone)]
pub struct EventResult {
    /// Event number.
    pub n: u64,
    /// How it ended.
    pub fate: Fate,
    /// Requests made.
    pub attempts: u32,
    /// 503 answers.
    pub unavailable: u32,
    /// Requests without an HTTP answer.
    pub transport: u32,
    /// Other retried statuses (5xx, 408, 429).
    pub server_errors: u32,
    /// The first error seen.
    pub sample: Option<String>,
}

/// The provider's side of the run.
#[derive(Debug, Clone, Default)]
pub struct LoadTally {
    /// Events with at least one request made.
    pub sent: u64,
    /// Events answered 202.
    pub created: u64,
    /// Events answered 200 `duplicate_ignored` (after a retry).
    pub duplicate: u64,
    /// Events given up after [`RETRY_BUDGET`].
    pub gave_up: u64,
    /// Events answered with a 4xx.
    pub refused: u64,
    /// Requests made, retries included.
    pub requests: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Requests without an HTTP answer.
    pub transport_errors: u64,
    /// Other retried statuses.
    pub server_errors: u64,
    /// Up to five distinct error samples.
    pub error_samples: Vec<String>,
    /// Whether event `n` was accepted (202 or 200).
    pub accepted: Vec<bool>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl LoadTally {
    /// An empty tally for `events` events.
    pub fn new(events: u64) -> Self {
        Self {
            accepted: vec![false; usize::try_from(events).unwrap_or(usize::MAX)],
            ..Self::default()
        }
    }

    /// Events accepted (202 or 200).
    pub fn accepted_count(&self) -> u64 {
        self.created + self.duplicate
    }

    /// Adds one event's result.
    pub fn add(&mut self, r: EventResult) {
        self.sent += 1;
        self.requests += u64::from(r.attempts);
        self.unavailable += u64::from(r.unavailable);
        self.transport_errors += u64::from(r.transport);
        self.server_errors += u64::from(r.server_errors);
        match r.fate {
            Fate::Created => self.created += 1,
            Fate::Duplicate => self.duplicate += 1,
            Fate::GaveUp => self.gave_up += 1,
            Fate::Refused => self.refused += 1,
        }
        if matches!(r.fate, Fate::Created | Fate::Duplicate) {
            if let Some(slot) = usize::try_from(r.n)
                .ok()
                .and_then(|i| self.accepted.get_mut(i))
            {
                *slot = true;
            }
        }
        if let Some(s) = r.sample {
            // Keep samples that differ by more than a port number or an id.
            let key: String = s.chars().filter(|c| !c.is_ascii_digit()).collect();
            let seen = self.error_samples.iter().any(|e| {
                e.chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect::<String>()
                    == key
            });
            if !seen && self.error_samples.len() < 5 {
                self.error_samples.push(s);
            }
        }
    }
}

/// The provider's next retry delay after `d`: doubled, at most [`RETRY_CAP`].
pub fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(RETRY_CAP)
}

/// Whether a provider retries an answer with this status.
pub fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// A reqwest error message without its `error sending request for url (...): ` lead.
pub fn without_url(e: &str) -> &str {
    match e.strip_prefix("error sending request for url (") {
        Some(rest) => rest.split_once("): ").map_or(e, |(_, tail)| tail),
        None => e,
    }
}

/// The CloudEvent id of event `n`.
pub fn event_id(n: u64) -> String {
    format!("evt_chaos_{n}")
}

/// Event numbers present in `psql` output of one `ce_id` a line (`evt_chaos_<n>`), as a
/// presence vector of `events` entries, and how many lines named no event below `events`.
pub fn presence(ids: &str, events: u64) -> (Vec<bool>, u64) {
    let mut present = vec![false; usize::try_from(events).unwrap_or(usize::MAX)];
    let mut other = 0;
    for line in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line
            .strip_prefix("evt_chaos_")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| present.get_mut(n))
        {
            Some(slot) => *slot = true,
            None => other += 1,
        }
    }
    (present, other)
}

/// Event numbers accepted but not present.
pub fn lost_events(accepted: &[bool], present: &[bool]) -> Vec<u64> {
    accepted
        .iter()
        .enumerate()
        .filter(|(i, a)| **a && !present.get(*i).copied().unwrap_or(false))
        .map(|(i, _)| i as u64)
        .collect()
}

/// Events present but never accepted (the provider gave up on them, yet one attempt stuck).
pub fn unacknowledged_events(accepted: &[bool], present: &[bool]) -> u64 {
    present
        .iter()
        .enumerate()
        .filter(|(i, p)| **p && !accepted.get(*i).copied().unwrap_or(false))
        .count() as u64
}

/// Everything the table shows.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// Events the run was asked to send.
    pub events: u64,
    /// Events started a second.
    pub rate: u64,
    /// Events in flight at once.
    pub concurrency: usize,
    /// Time between faults.
    pub fault_every: Duration,
    /// The injector's figures.
    pub faults: FaultTally,
    /// The provider's figures.
    pub load: LoadTally,
    /// `evt_chaos_*` rows in A's `events`.
    pub stored_at_a: Option<u64>,
    /// Of those, rows the router has not routed.
    pub unrouted_at_a: Option<u64>,
    /// A's outbox rows of `evt_chaos_*` events, by state.
    pub a_outbox: Vec<(String, u64)>,
    /// `evt_chaos_*` rows in B's `events`.
    pub b_rows: u64,
    /// Distinct `ce_id`s among them.
    pub b_distinct: u64,
    /// Events at B that the provider never got a 202 or 200 for.
    pub at_b_unacknowledged: u64,
    /// Accepted events B does not hold, by number.
    pub lost: Vec<u64>,
    /// How long the drain waited.
    pub drain: Duration,
    /// Whether B held every accepted event before the drain deadline.
    pub drained: bool,
    /// ERROR / WARN / panic lines in the children's logs, by process.
    pub log_counts: BTreeMap<String, LogCounts>,
    /// Where the children's output is.
    pub log_path: String,
    /// The hostile side of a `--hostile` run.
    pub hostile: Option<crate::hostile::HostileTally>,
    /// Stored events at A and B holding the hostile requests' secret (must be 0).
    pub secrets_stored: u64,
}

impl ChaosReport {
    /// Rows in B's store beyond one per id.
    pub fn duplicates(&self) -> u64 {
        self.b_rows.saturating_sub(self.b_distinct)
    }

    /// No accepted event lost and no duplicate in B's store; in a hostile run also every
    /// hostile answer as expected, the peer never parked and no secret stored.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates() == 0
            && self.secrets_stored == 0
            && self.hostile.as_ref().is_none_or(|h| h.passed())
    }

    /// The table as label/value rows.
    pub fn rows(&self) -> Vec<(String, String)> {
        let f = &self.faults;
        let l = &self.load;
        let mut rows = vec![
            row(
                "schedule",
                format!(
                    "{} events at {}/s, {} in flight, a fault every {} ms",
                    self.events,
                    self.rate,
                    self.concurrency,
                    self.fault_every.as_millis()
                ),
            ),
            row("faults injected", f.total().to_string()),
        ];
        for kind in FaultKind::ALL {
            let mut v = f.injected[kind.index()].to_string();
            match kind {
                FaultKind::CloseAmqp => v.push_str(&format!(
                    " ({} connections closed)",
                    f.amqp_connections_closed
                )),
                FaultKind::TerminateDb => v.push_str(&format!(
                    " ({} backends terminated)",
                    f.db_backends_terminated
                )),
                _ => {}
            }
            if f.failed[kind.index()] > 0 {
                v.push_str(&format!(
                    ", {} could not be injected",
                    f.failed[kind.index()]
                ));
            }
            rows.push(row(&format!("  {}", kind.describe()), v));
        }
        rows.push(row(
            "  slowest restart to ready",
            format!("{:.1} s", f.slowest_restart.as_secs_f64()),
        ));
        if !f.unexpected_exits.is_empty() {
            rows.push(row(
                "processes that exited on their own",
                f.unexpected_exits.join("; "),
            ));
        }
        rows.extend([
            row("sent", format!("{} of {}", l.sent, self.events)),
            row(
                "accepted",
                format!(
                    "{} ({} answered 202, {} answered 200 duplicate_ignored on a retry)",
                    l.accepted_count(),
                    l.created,
                    l.duplicate
                ),
            ),
        ]);
        if l.gave_up > 0 || l.refused > 0 {
            rows.push(row(
                "not accepted",
                format!(
                    "{} (gave up after {} s: {}, refused with a 4xx: {})",
                    l.gave_up + l.refused,
                    RETRY_BUDGET.as_secs(),
                    l.gave_up,
                    l.refused
                ),
            ));
        }
        rows.extend([
            row(
                "requests",
                format!(
                    "{} ({} retries: {} answered 503, {} connection errors, {} other 5xx)",
                    l.requests,
                    l.requests.saturating_sub(l.sent),
                    l.unavailable,
                    l.transport_errors,
                    l.server_errors
                ),
            ),
            row("load time", format!("{:.1} s", l.elapsed.as_secs_f64())),
            row(
                "stored at A",
                match (self.stored_at_a, self.unrouted_at_a) {
                    (Some(s), Some(u)) => format!("{s} ({u} not routed)"),
                    (Some(s), None) => s.to_string(),
                    _ => "n/a".to_owned(),
                },
            ),
            row(
                "A outbox",
                if self.a_outbox.is_empty() {
                    "empty".to_owned()
                } else {
                    self.a_outbox
                        .iter()
                        .map(|(s, n)| format!("{s} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            row(
                "delivered at B",
                format!("{} distinct ids, {} rows", self.b_distinct, self.b_rows),
            ),
            row("duplicates in B's store", self.duplicates().to_string()),
        ]);
        if self.at_b_unacknowledged > 0 {
            rows.push(row(
                "at B but never accepted",
                format!(
                    "{} (stored, but the provider never got the answer)",
                    self.at_b_unacknowledged
                ),
            ));
        }
        rows.push(row(
            "lost (accepted, not at B)",
            self.lost.len().to_string(),
        ));
        if !self.lost.is_empty() {
            let sample: Vec<String> = self.lost.iter().take(10).map(|n| event_id(*n)).collect();
            let more = if self.lost.len() > 10 { " ..." } else { "" };
            rows.push(row("  lost ids", format!("{}{more}", sample.join(" "))));
        }
        rows.push(row(
            "drain",
            format!(
                "{:.1} s{}",
                self.drain.as_secs_f64(),
                if self.drained {
                    ""
                } else {
                    " (deadline reached)"
                }
            ),
        ));
        for (i, e) in l.error_samples.iter().enumerate() {
            rows.push(row(&format!("provider error sample {}", i + 1), e.clone()));
        }
        for (name, c) in &self.log_counts {
            let mut v = format!("{} ERROR, {} WARN lines", c.errors, c.warnings);
            if c.panics > 0 {
                v.push_str(&format!(", {} panics", c.panics));
            }
            rows.push(row(&format!("log {name}"), v));
        }
        if let Some(h) = &self.hostile {
            rows.extend(h.rows());
            rows.push(row(
                "stored events holding a hostile secret",
                self.secrets_stored.to_string(),
            ));
        }
        rows.push(row("child logs", self.log_path.clone()));
        rows.push(row(
            "result",
            if self.passed() {
                "PASS (nothing lost, no duplicates)"
            } else {
                "FAIL"
            },
        ));
        rows
    }
}

/// Names the run makes on the shared servers.
struct Names {
    run: String,
    db_a: String,
    db_b: String,
    url_a: String,
    url_b: String,
    admin_url: String,
    prefix_a: String,
    prefix_b: String,
    key_a: String,
    key_b: String,
}

impl Names {
    fn new(database_url: &str) -> Self {
        let run = crate::random_hex(10);
        let db_a = format!("kite_chaos_{run}_a");
        let db_b = format!("kite_chaos_{run}_b");
        Self {
            url_a: with_database(database_url, &db_a),
            url_b: with_database(database_url, &db_b),
            admin_url: with_database(database_url, "postgres"),
            prefix_a: format!("kitechaos.{run}.a"),
            prefix_b: format!("kitechaos.{run}.b"),
            key_a: random_admin_key(),
            key_b: random_admin_key(),
            db_a,
            db_b,
            run,
        }
    }
}

/// The environment of one of the run's processes (`KITE_PORT` is added at start).
fn process_env(
    amqp_url: &str,
    instance_id: &str,
    database_url: &str,
    prefix: &str,
    admin_key: &str,
    roles: &str,
) -> Vec<(String, String)> {
    [
        ("KITE_INSTANCE_ID", instance_id),
        ("KITE_HOST", "127.0.0.1"),
        ("KITE_DATABASE_URL", database_url),
        ("KITE_AMQP_URL", amqp_url),
        ("KITE_AMQP_PREFIX", prefix),
        ("KITE_TEAM_ID", TEAM),
        ("KITE_ADMIN_KEY", admin_key),
        ("KITE_ROLES", roles),
        ("KITE_ALLOW_PRIVATE_PEERS", "true"),
        // A benchmark instance: secrets sealed with the development key, no rate limits.
        ("KITE_DEV", "true"),
        ("KITE_RATE_TEAM_PER_SEC", "0"),
        ("KITE_RATE_SENDER_PER_SEC", "0"),
        ("KITE_RETRY_BASE_MS", "200"),
        ("KITE_RETRY_MAX_DELAY_MS", "2000"),
        ("KITE_RETRY_MAX_ATTEMPTS", "10"),
        ("KITE_SWEEP_INTERVAL_MS", "1000"),
        ("KITE_SWEEP_GRACE_MS", "5000"),
        ("KITE_PEER_PROBE_INTERVAL_MS", "1000"),
        ("RUST_LOG", "warn"),
        ("NO_COLOR", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// One `kite serve` process of the run, which can be killed and started again.
struct Proc {
    name: &'static str,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
    /// Fixed after the first start for a process that serves HTTP.
    port: Option<u16>,
    url: Option<String>,
}

impl Proc {
    fn new(name: &'static str, env: Vec<(String, String)>) -> Self {
        Self {
            name,
            env,
            child: None,
            starts: 0,
            port: None,
            url: None,
        }
    }

    /// Starts the process (on its port once it has one) and waits for its ready line,
    /// retrying a start that fails (a port still taken, say). Answers how long it took.
    async fn start(&mut self, bin: &Path, log: &Arc<LogFile>) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = None;
        for attempt in 1..=START_ATTEMPTS {
            self.starts += 1;
            let label = format!("{}#{}", self.name, self.starts);
            let mut env = self.env.clone();
            env.push(("KITE_PORT".to_owned(), self.port.unwrap_or(0).to_string()));
            let mut child = spawn_kite(bin, &env, Some(log.sink(label.clone())))?;
            match wait_ready(&mut child, log.sink(label.clone())).await {
                Ok(ready) => {
                    if self.port.is_none() {
                        self.port = ready.port();
                        self.url = ready.url;
                    }
                    log.note(&format!("{label} ready (pid {:?})", child.id()));
                    self.child = Some(child);
                    return Ok(t0.elapsed());
                }
                Err(e) => {
                    eprintln!("kite-bench: {label} did not start (attempt {attempt}): {e:#}");
                    log.note(&format!("{label} did not start: {e:#}"));
                    let _ = child.kill().await;
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!("{} did not start", self.name)))
    }

    /// `Some(status)` when the process has exited (without us killing it).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// SIGKILL and reap.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGKILL, then start again; notes an exit that happened before the kill.
    async fn kill_and_restart(
        &mut self,
        bin: &Path,
        log: &Arc<LogFile>,
        tally: &mut FaultTally,
    ) -> Result<()> {
        if let Some(status) = self.exited() {
            tally
                .unexpected_exits
                .push(format!("{}#{} ({status})", self.name, self.starts));
        }
        self.kill().await;
        let took = self.start(bin, log).await?;
        tally.slowest_restart = tally.slowest_restart.max(took);
        Ok(())
    }
}

/// A (three processes) and B (one).
struct Cluster {
    bin: PathBuf,
    log: Arc<LogFile>,
    a_ingress: Proc,
    a_router: Proc,
    a_delivery: Proc,
    b: Proc,
}

impl Cluster {
    fn new(bin: PathBuf, log: Arc<LogFile>, names: &Names, amqp_url: &str) -> Self {
        let a = |roles| {
            process_env(
                amqp_url,
                "chaos-a",
                &names.url_a,
                &names.prefix_a,
                &names.key_a,
                roles,
            )
        };
        Self {
            a_ingress: Proc::new("a-ingress", a("ingress")),
            a_router: Proc::new("a-router", a("router")),
            a_delivery: Proc::new("a-delivery", a("delivery")),
            b: Proc::new(
                "b",
                process_env(
                    amqp_url,
                    "chaos-b",
                    &names.url_b,
                    &names.prefix_b,
                    &names.key_b,
                    "ingress,router,delivery",
                ),
            ),
            bin,
            log,
        }
    }

    fn procs(&mut self) -> [&mut Proc; 4] {
        [
            &mut self.a_ingress,
            &mut self.a_router,
            &mut self.a_delivery,
            &mut self.b,
        ]
    }

    /// Starts every process: B and A-ingress first (A-ingress applies A's migrations), then
    /// A-router and A-delivery.
    async fn start(&mut self) -> Result<()> {
        let (bin, log) = (&self.bin, &self.log);
        tokio::try_join!(self.b.start(bin, log), self.a_ingress.start(bin, log))?;
        tokio::try_join!(
            self.a_router.start(bin, log),
            self.a_delivery.start(bin, log)
        )?;
        Ok(())
    }

    /// Restarts any process that exited on its own, noting it.
    async fn revive(&mut self, tally: &mut FaultTally) -> Result<()> {
        let (bin, log) = (self.bin.clone(), self.log.clone());
        for p in self.procs() {
            if p.exited().is_some() {
                p.kill_and_restart(&bin, &log, tally).await?;
            }
        }
        Ok(())
    }

    async fn kill_all(&mut self) {
        for p in self.procs() {
            p.kill().await;
        }
    }
}

/// Injects one fault; errors only when a killed process cannot be started again.
async fn inject(
    kind: FaultKind,
    cluster: &mut Cluster,
    names: &Names,
    tally: &mut FaultTally,
) -> Result<String> {
    let (bin, log) = (cluster.bin.clone(), cluster.log.clone());
    let proc = match kind {
        FaultKind::KillRouter => Some(&mut cluster.a_router),
        FaultKind::KillDelivery => Some(&mut cluster.a_delivery),
        FaultKind::KillB => Some(&mut cluster.b),
        FaultKind::KillIngress => Some(&mut cluster.a_ingress),
        FaultKind::CloseAmqp | FaultKind::TerminateDb => None,
    };
    if let Some(p) = proc {
        let t0 = Instant::now();
        p.kill_and_restart(&bin, &log, tally).await?;
        tally.record(kind);
        return Ok(format!(
            "{} back in {:.1} s",
            p.name,
            t0.elapsed().as_secs_f64()
        ));
    }
    let done = match kind {
        FaultKind::CloseAmqp => close_amqp_connections(&names.prefix_a, "chaos")
            .await
            .map(|n| {
                tally.amqp_connections_closed += n as u64;
                format!("{n} connections closed")
            }),
        _ => {
            let sql = format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                names.db_a
            );
            psql(&names.admin_url, &sql).await.and_then(|out| {
                let n: u64 = out.parse().context("parsing psql's count")?;
                tally.db_backends_terminated += n;
                Ok(format!("{n} backends terminated"))
            })
        }
    };
    match done {
        Ok(detail) => {
            tally.record(kind);
            Ok(detail)
        }
        Err(e) => {
            tally.failed[kind.index()] += 1;
            Ok(format!("could not be injected: {e:#}"))
        }
    }
}

/// Injects a fault every `every`, cycling through [`FaultKind::ALL`], until `stop` turns true.
/// A fault that overruns its period delays the next one.
async fn inject_faults(
    cluster: &mut Cluster,
    names: &Names,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<FaultTally> {
    let mut tally = FaultTally::default();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut i = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if *stop.borrow() {
            break;
        }
        let kind = FaultKind::nth(i);
        i += 1;
        let detail = inject(kind, cluster, names, &mut tally).await?;
        let line = format!("fault {i}: {}: {detail}", kind.describe());
        eprintln!("kite-bench: {line}");
        cluster.log.note(&line);
    }
    Ok(tally)
}

/// The provider: sends one event until it gets a 202 or 200, retrying 503, 5xx and
/// connection errors with backoff, for [`RETRY_BUDGET`] at most.
async fn send_event(client: &reqwest::Client, endpoint: &str, n: u64) -> EventResult {
    let body = Bytes::from(format!(
        r#"{{"id":"{}","type":"charge.succeeded","data":{{}}}}"#,
        event_id(n)
    ));
    let first = Instant::now();
    let mut backoff = RETRY_FIRST;
    let mut r = EventResult {
        n,
        fate: Fate::GaveUp,
        attempts: 0,
        unavailable: 0,
        transport: 0,
        server_errors: 0,
        sample: None,
    };
    loop {
        r.attempts += 1;
        match send(webhook_request(client, endpoint, body.clone())).await {
            Answer::Accepted => {
                r.fate = Fate::Created;
                return r;
            }
            Answer::Duplicate => {
                r.fate = Fate::Duplicate;
                return r;
            }
            Answer::Unavailable => r.unavailable += 1,
            Answer::Status(status, text) if retryable(status) => {
                r.server_errors += 1;
                r.sample.get_or_insert(format!("HTTP {status}: {text}"));
            }
            Answer::Status(status, text) => {
                r.fate = Fate::Refused;
                r.sample = Some(format!("HTTP {status}: {text}"));
                return r;
            }
            Answer::Transport(e) => {
                r.transport += 1;
                r.sample
                    .get_or_insert_with(|| format!("transport: {}", without_url(&e)));
            }
        }
        if first.elapsed() + backoff > RETRY_BUDGET {
            r.fate = Fate::GaveUp;
            return r;
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

/// Starts event `n` at `n / rate` seconds (later when every slot is busy) with at most
/// `concurrency` events in flight; answers when every event is accepted or given up.
async fn drive_load(client: &reqwest::Client, endpoint: &str, cfg: &ChaosConfig) -> LoadTally {
    let start = tokio::time::Instant::now();
    let rate = cfg.rate as f64;
    let mut results = futures::stream::iter(0..cfg.events)
        .map(|n| async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
            send_event(client, endpoint, n).await
        })
        .buffer_unordered(cfg.concurrency);
    let mut tally = LoadTally::new(cfg.events);
    let mut next_report = start + PROGRESS_EVERY;
    while let Some(r) = results.next().await {
        tally.add(r);
        if tokio::time::Instant::now() >= next_report {
            next_report += PROGRESS_EVERY;
            eprintln!(
                "kite-bench: {} of {} events answered, {} accepted, {} requests",
                tally.sent,
                cfg.events,
                tally.accepted_count(),
                tally.requests
            );
        }
    }
    tally.elapsed = start.elapsed();
    tally
}

/// `(rows, distinct ids)` of `evt_chaos_*` events in a database.
async fn chaos_counts(db_url: &str) -> Result<(u64, u64)> {
    let out = psql(
        db_url,
        "SELECT count(*), count(DISTINCT ce_id) FROM events WHERE ce_id LIKE 'evt\\_chaos\\_%' \
         AND ce_source = '/hooks/default/stripe'",
    )
    .await?;
    let (a, b) = out
        .split_once('|')
        .with_context(|| format!("unexpected psql output {out:?}"))?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

async fn chaos_ids(db_url: &str) -> Result<String> {
    psql(
        db_url,
        "SELECT DISTINCT ce_id FROM events WHERE ce_id LIKE 'evt\\_chaos\\_%' \
         AND ce_source = '/hooks/default/stripe'",
    )
    .await
}

/// A's outbox rows of `evt_chaos_*` events, by state.
async fn outbox_states(db_url: &str) -> Result<Vec<(String, u64)>> {
    let out = psql(
        db_url,
        "SELECT o.state, count(*) FROM outbox o JOIN events e ON e.seq = o.event_seq \
         WHERE e.ce_id LIKE 'evt\\_chaos\\_%' GROUP BY o.state ORDER BY o.state",
    )
    .await?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (s, n) = l
                .split_once('|')
                .with_context(|| format!("unexpected psql output {l:?}"))?;
            Ok((s.to_owned(), n.trim().parse()?))
        })
        .collect()
}

fn outbox_text(states: &[(String, u64)]) -> String {
    states
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends one event outside the counted range and waits until B stores it, so faults start
/// with the whole A→B path known to work.
async fn warm_up(client: &reqwest::Client, a_url: &str, b_db: &str) -> Result<()> {
    let body = Bytes::from_static(br#"{"id":"evt_warmup_0","type":"charge.succeeded","data":{}}"#);
    let endpoint = format!("{a_url}/hooks/{TEAM}/stripe");
    match send(webhook_request(client, &endpoint, body)).await {
        Answer::Accepted | Answer::Duplicate => {}
        other => bail!("warm-up event: expected 202, got {other:?}"),
    }
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    while Instant::now() < deadline {
        let n = psql(
            b_db,
            "SELECT count(*) FROM events WHERE ce_id = 'evt_warmup_0'",
        )
        .await?;
        if n != "0" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the warm-up event did not reach B within {} s",
        WARM_UP_TIMEOUT.as_secs()
    )
}

/// Runs the chaos test, prints its table and cleans up; answers whether it passed.
pub async fn chaos(cfg: &ChaosConfig) -> Result<bool> {
    if cfg.events == 0 || cfg.rate == 0 || cfg.concurrency == 0 {
        bail!("--events, --rate and --concurrency must all be above zero");
    }
    if cfg.fault_every.is_zero() && cfg.hostile_every.is_none() {
        bail!("--fault-every-ms must be above zero (0 is allowed with --hostile)");
    }
    let bin = resolve_kite_bin(cfg.kite_bin.as_deref())?;
    let names = Names::new(&cfg.database_url);
    let log = LogFile::create(std::env::temp_dir().join(format!("kite-chaos-{}.log", names.run)))?;
    eprintln!(
        "kite-bench: chaos run {} with {} (databases {} and {}, AMQP prefixes {} and {}, child logs {})",
        names.run,
        bin.display(),
        names.db_a,
        names.db_b,
        names.prefix_a,
        names.prefix_b,
        log.path().display()
    );
    let mut cluster = Cluster::new(bin, log.clone(), &names, &cfg.amqp_url);

    let outcome = tokio::select! {
        r = run_chaos(cfg, &names, &mut cluster) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    cluster.kill_all().await;
    let passed = match &outcome {
        Ok(report) => {
            let mut report = report.clone();
            report.log_counts = log.counts();
            print_table(&report.rows());
            report.passed()
        }
        Err(_) => false,
    };
    cleanup(
        &cfg.database_url,
        &cfg.amqp_url,
        &[&names.db_a, &names.db_b],
        &[&names.prefix_a, &names.prefix_b],
    )
    .await;
    eprintln!("kite-bench: child logs in {}", log.path().display());
    outcome.map(|_| passed)
}

async fn run_chaos(cfg: &ChaosConfig, names: &Names, cluster: &mut Cluster) -> Result<ChaosReport> {
    cluster.start().await?;
    let a_url = cluster
        .a_ingress
        .url
        .clone()
        .context("A-ingress printed no url")?;
    let b_url = cluster.b.url.clone().context("B printed no url")?;
    eprintln!("kite-bench: A-ingress at {a_url}, B at {b_url}");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let token = admin_post(
        &client,
        &b_url,
        &names.key_b,
        "/api/federation/tokens",
        &json!({"label": "a"}),
    )
    .await?;
    let token = token["token"]
        .as_str()
        .context("B's token answer has no token")?
        .to_owned();
    admin_post(
        &client,
        &b_url,
        &names.key_b,
        "/api/federation/trusted-senders",
        &json!({"name": "instance-a", "inbound_token": token}),
    )
    .await?;
    admin_post(
        &client,
        &a_url,
        &names.key_a,
        "/api/federation/peers",
        &json!({
            "name": "instance-b",
            "peer_hook_url": format!("{b_url}/hooks/{TEAM}/kite"),
            "outbound_token": token,
            "scopes": ["*"],
            "max_hops": 3,
        }),
    )
    .await?;
    warm_up(&client, &a_url, &names.url_b).await?;
    if cfg.hostile_every.is_some() {
        crate::hostile::prepare(&client, &a_url, &names.key_a).await?;
    }
    eprintln!(
        "kite-bench: A→B works; sending {} events at {}/s with a fault every {} ms{}",
        cfg.events,
        cfg.rate,
        cfg.fault_every.as_millis(),
        match cfg.hostile_every {
            Some(d) => format!(" and a hostile request every {} ms", d.as_millis()),
            None => String::new(),
        }
    );

    let endpoint = format!("{a_url}/hooks/{TEAM}/stripe");
    let (stop_tx, stop_rx) = watch::channel(false);
    let load = async {
        let tally = drive_load(&client, &endpoint, cfg).await;
        let _ = stop_tx.send(true);
        Ok::<_, anyhow::Error>(tally)
    };
    // Hostile requests claim the identities of the run's last events before they are sent.
    let claims: Vec<String> = (0..cfg.events.min(200))
        .map(|k| event_id(cfg.events - 1 - k))
        .collect();
    let hostile = async {
        match cfg.hostile_every {
            Some(every) => Some(
                crate::hostile::inject(
                    client.clone(),
                    a_url.clone(),
                    names.key_a.clone(),
                    every,
                    claims,
                    stop_rx.clone(),
                )
                .await,
            ),
            None => None,
        }
    };
    let faults = async {
        if cfg.fault_every.is_zero() {
            Ok(FaultTally::default())
        } else {
            inject_faults(cluster, names, cfg.fault_every, stop_rx.clone()).await
        }
    };
    let (load, mut faults, hostile) = tokio::try_join!(load, faults, async {
        Ok::<_, anyhow::Error>(hostile.await)
    })?;
    cluster.revive(&mut faults).await?;
    let accepted = load.accepted_count();
    eprintln!(
        "kite-bench: every event answered ({accepted} accepted) after {} faults; waiting up to {} s for B",
        faults.total(),
        cfg.drain_timeout.as_secs()
    );

    let drain_start = Instant::now();
    let deadline = drain_start + cfg.drain_timeout;
    let mut next_report = drain_start + PROGRESS_EVERY;
    let mut drained = false;
    loop {
        match chaos_counts(&names.url_b).await {
            Ok((_, distinct)) if distinct >= accepted => {
                let (present, _) = presence(&chaos_ids(&names.url_b).await?, cfg.events);
                if lost_events(&load.accepted, &present).is_empty() {
                    drained = true;
                    break;
                }
            }
            Ok((_, distinct)) if Instant::now() >= next_report => {
                next_report += PROGRESS_EVERY;
                let outbox = outbox_states(&names.url_a).await.unwrap_or_default();
                eprintln!(
                    "kite-bench: B holds {distinct} of {accepted}; A outbox: {}",
                    outbox_text(&outbox)
                );
            }
            Ok(_) => {}
            Err(e) => eprintln!("kite-bench: counting at B: {e:#}"),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let drain = drain_start.elapsed();

    let (b_rows, b_distinct) = chaos_counts(&names.url_b).await?;
    let (present, _) = presence(&chaos_ids(&names.url_b).await?, cfg.events);
    let (stored_at_a, unrouted_at_a) = match psql(
        &names.url_a,
        "SELECT count(*), count(*) FILTER (WHERE routed_at IS NULL) FROM events \
         WHERE ce_id LIKE 'evt\\_chaos\\_%' AND ce_source = '/hooks/default/stripe'",
    )
    .await
    {
        Ok(out) => match out.split_once('|') {
            Some((s, u)) => (s.trim().parse().ok(), u.trim().parse().ok()),
            None => (None, None),
        },
        Err(e) => {
            eprintln!("kite-bench: counting at A: {e:#}");
            (None, None)
        }
    };
    let mut secrets_stored = 0;
    if hostile.is_some() {
        for db in [&names.url_a, &names.url_b] {
            let sql = format!(
                "SELECT count(*) FROM events WHERE event::text LIKE '%{}%'",
                crate::hostile::SECRET_MARKER
            );
            secrets_stored += psql(db, &sql).await?.trim().parse::<u64>().unwrap_or(1);
        }
    }
    for p in cluster.procs() {
        if let Some(status) = p.exited() {
            faults
                .unexpected_exits
                .push(format!("{}#{} ({status})", p.name, p.starts));
        }
    }
    Ok(ChaosReport {
        events: cfg.events,
        rate: cfg.rate,
        concurrency: cfg.concurrency,
        fault_every: cfg.fault_every,
        stored_at_a,
        unrouted_at_a,
        a_outbox: outbox_states(&names.url_a).await.unwrap_or_default(),
        b_rows,
        b_distinct,
        at_b_unacknowledged: unacknowledged_events(&load.accepted, &present),
        lost: lost_events(&load.accepted, &present),
        drain,
        drained,
        log_counts: BTreeMap::new(),
        log_path: cluster.log.path().display().to_string(),
        faults,
        load,
        hostile,
        secrets_stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_cycles_through_every_kind_in_order() {
        let kinds: Vec<FaultKind> = (0..13).map(FaultKind::nth).collect();
        assert_eq!(&kinds[..6], &FaultKind::ALL);
        assert_eq!(&kinds[6..12], &FaultKind::ALL);
        assert_eq!(kinds[12], FaultKind::KillRouter);
        assert_eq!(FaultKind::nth(4), FaultKind::KillB);
        assert_eq!(FaultKind::nth(5), FaultKind::KillIngress);
        let mut tally = FaultTally::default();
        for i in 0..8 {
            tally.record(FaultKind::nth(i));
        }
        assert_eq!(tally.injected, [2, 2, 1, 1, 1, 1]);
        assert_eq!(tally.total(), 8);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut d = RETRY_FIRST;
        let mut seen = vec![d];
        for _ in 0..6 {
            d = next_backoff(d);
            seen.push(d);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert!(retryable(reqwest::StatusCode::BAD_GATEWAY));
        assert!(retryable(reqwest::StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(reqwest::StatusCode::BAD_REQUEST));
    }

    fn result(n: u64, fate: Fate, attempts: u32, sample: Option<&str>) -> EventResult {
        EventResult {
            n,
            fate,
            attempts,
            unavailable: attempts - 1,
            transport: 0,
            server_errors: 0,
            sample: sample.map(str::to_owned),
        }
    }

    #[test]
    fn load_tally_counts_fates_and_dedups_samples() {
        let mut t = LoadTally::new(4);
        t.add(result(0, Fate::Created, 1, None));
        t.add(result(
            2,
            Fate::Duplicate,
            3,
            Some("transport: refused 127.0.0.1:4001"),
        ));
        t.add(result(
            1,
            Fate::GaveUp,
            30,
            Some("transport: refused 127.0.0.1:4002"),
        ));
        t.add(result(3, Fate::Refused, 1, Some("HTTP 400: bad")));
        assert_eq!(t.sent, 4);
        assert_eq!(t.accepted_count(), 2);
        assert_eq!(t.accepted, [true, false, true, false]);
        assert_eq!(t.requests, 35);
        assert_eq!(t.unavailable, 31);
        assert_eq!(t.error_samples.len(), 2);
    }

    #[test]
    fn presence_and_losses() {
        let (present, other) = presence("evt_chaos_0\nevt_chaos_2\nevt_chaos_9\nzzz\n", 4);
        assert_eq!(present, [true, false, true, false]);
        assert_eq!(other, 2);
        let accepted = [true, true, false, false];
        assert_eq!(lost_events(&accepted, &present), [1]);
        assert_eq!(unacknowledged_events(&accepted, &present), 1);
        assert_eq!(event_id(7), "evt_chaos_7");
        assert_eq!(
            without_url(
                "error sending request for url (http://h:1/x): client error (Connect): refused"
            ),
            "client error (Connect): refused"
        );
        assert_eq!(without_url("timed out"), "timed out");
    }

    fn value<'a>(rows: &'a [(String, String)], label: &str) -> &'a str {
        rows.iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no row {label:?} in {rows:#?}"))
    }

    #[test]
    fn table_shows_faults_by_kind_and_the_verdict() {
        let mut load = LoadTally::new(3);
        for n in 0..3 {
            load.add(result(n, Fate::Created, 1, None));
        }
        let mut faults = FaultTally::default();
        for i in 0..7 {
            faults.record(FaultKind::nth(i));
        }
        faults.amqp_connections_closed = 3;
        faults.failed[FaultKind::TerminateDb.index()] = 1;
        let mut report = ChaosReport {
            events: 3,
            rate: 500,
            concurrency: 32,
            fault_every: Duration::from_millis(1500),
            faults,
            load,
            stored_at_a: Some(3),
            unrouted_at_a: Some(0),
            a_outbox: vec![("delivered".to_owned(), 3)],
            b_rows: 3,
            b_distinct: 3,
            drained: true,
            log_path: "/tmp/x.log".to_owned(),
            ..ChaosReport::default()
        };
        let rows = report.rows();
        assert_eq!(value(&rows, "faults injected"), "7");
        assert_eq!(value(&rows, "  SIGKILL A-router + restart"), "2");
        assert_eq!(
            value(&rows, "  close A's AMQP connections"),
            "1 (3 connections closed)"
        );
        assert_eq!(
            value(&rows, "  terminate A's Postgres backends"),
            "1 (0 backends terminated), 1 could not be injected"
        );
        assert_eq!(value(&rows, "sent"), "3 of 3");
        assert!(value(&rows, "accepted").starts_with("3 ("));
        assert_eq!(value(&rows, "A outbox"), "delivered 3");
        assert_eq!(value(&rows, "duplicates in B's store"), "0");
        assert_eq!(value(&rows, "lost (accepted, not at B)"), "0");
        assert!(value(&rows, "result").starts_with("PASS"));
        assert!(report.passed());

        report.b_rows = 4;
        report.lost = vec![1];
        let rows = report.rows();
        assert_eq!(value(&rows, "duplicates in B's store"), "1");
        assert_eq!(value(&rows, "lost (accepted, not at B)"), "1");
        assert_eq!(value(&rows, "  lost ids"), "evt_chaos_1");
        assert_eq!(value(&rows, "result"), "FAIL");
        assert!(!report.passed());
    }

    #[test]
    fn env_sets_roles_and_tuning() {
        let env = process_env("amqp://x", "chaos-a", "postgres://db", "p.a", "k", "router");
        let get = |k: &str| {
            env.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("KITE_ROLES"), Some("router"));
        assert_eq!(get("KITE_AMQP_PREFIX"), Some("p.a"));
        assert_eq!(get("KITE_RETRY_BASE_MS"), Some("200"));
        assert_eq!(get("KITE_SWEEP_GRACE_MS"), Some("5000"));
        assert_eq!(get("KITE_PEER_PROBE_INTERVAL_MS"), Some("1000"));
        assert_eq!(get("RUST_LOG"), Some("warn"));
        assert_eq!(get("KITE_PORT"), None);
    }
}
