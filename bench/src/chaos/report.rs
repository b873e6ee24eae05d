//! The fault kinds, and what the provider, the injector and B's store tell: the figures of
//! the chaos table.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::LogCounts;
use crate::load::row;

use super::{RETRY_BUDGET, RETRY_CAP};

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
    /// SIGKILL a node of the run's own RabbitMQ cluster (the next in turn), then start it
    /// again (`--rabbit-cluster`).
    KillBrokerNode,
    /// SIGSTOP a node of the run's own cluster for 2 s, then SIGCONT (`--rabbit-cluster`).
    PauseBrokerNode,
    /// Restart the run's own Postgres, `-m fast` and `-m immediate` in turn
    /// (`--own-postgres`).
    RestartPostgres,
    /// Cut the link of A's delivery process (in its own network namespace) for 3 s
    /// (`--partition`).
    Partition,
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

    /// The faults of the engines a run starts of its own, when it does.
    pub const ENGINES: [FaultKind; 4] = [
        FaultKind::KillBrokerNode,
        FaultKind::PauseBrokerNode,
        FaultKind::RestartPostgres,
        FaultKind::Partition,
    ];

    /// How many kinds there are.
    pub const COUNT: usize = 10;

    /// The kind of the `i`-th fault (0-based) of a run on the machine's servers.
    pub fn nth(i: u64) -> FaultKind {
        Self::ALL[(i % Self::ALL.len() as u64) as usize]
    }

    /// What a run cycles through: every kind of [`FaultKind::ALL`], then, interleaved, the
    /// faults of the engines it runs of its own (a cluster, a Postgres, a namespace).
    pub fn schedule(cluster: bool, postgres: bool, partition: bool) -> Vec<FaultKind> {
        let mut out = Vec::new();
        for (i, k) in Self::ALL.into_iter().enumerate() {
            out.push(k);
            let extra = match i {
                0 if cluster => Some(FaultKind::KillBrokerNode),
                1 if postgres => Some(FaultKind::RestartPostgres),
                2 if partition => Some(FaultKind::Partition),
                3 if cluster => Some(FaultKind::PauseBrokerNode),
                4 if postgres => Some(FaultKind::RestartPostgres),
                _ => None,
            };
            out.extend(extra);
        }
        out
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
            FaultKind::KillBrokerNode => "SIGKILL a RabbitMQ node + restart",
            FaultKind::PauseBrokerNode => "SIGSTOP a RabbitMQ node 2 s",
            FaultKind::RestartPostgres => "restart Postgres (fast / immediate)",
            FaultKind::Partition => "cut A-delivery's link (3 s, 15 s in turn)",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What the fault injector did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultTally {
    /// Faults injected, by [`FaultKind::index`].
    pub injected: [u64; FaultKind::COUNT],
    /// Faults that could not be injected (the tool failed), by kind; not in `injected`.
    pub failed: [u64; FaultKind::COUNT],
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
        for kind in FaultKind::ALL.into_iter().chain(
            FaultKind::ENGINES
                .into_iter()
                .filter(|k| f.injected[k.index()] + f.failed[k.index()] > 0),
        ) {
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
