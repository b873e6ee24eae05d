//! Samples of a long run (`kite-bench run --sample-every`): what must stay flat once kite
//! is warm, at a steady rate with retention pruning: its resident memory and open files, its
//! Postgres connections, and the sizes of the tables that grow with traffic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::harness::psql;
use crate::load::{print_table, row};
use crate::sink::SinkState;

/// One sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since sampling started.
    pub at: Duration,
    /// kite's resident memory (VmRSS), MiB.
    pub rss_mib: f64,
    /// kite's open file descriptors (sockets included).
    pub fds: usize,
    /// Connections to the run's database (kite's pools and LISTEN, and this sampler's).
    pub connections: i64,
    /// Rows in `events` (what retention keeps).
    pub events: i64,
    /// On-disk sizes in MiB, indexes and TOAST included: events, outbox, attempts.
    pub tables_mib: [f64; 3],
    /// Unique events at the sink so far.
    pub delivered: u64,
}

/// A sampler running beside the load.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Takes a last sample, stops and answers every sample.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Samples kite (`pid`) and its database (`database_url`) every `every`, printing each
/// sample as it is taken.
pub fn spawn(every: Duration, pid: u32, database_url: String, sink: Arc<SinkState>) -> Sampler {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = stopped.changed() => true,
            };
            match take(start, pid, &database_url, &sink).await {
                Some(s) => {
                    eprintln!(
                        "kite-bench: sample at {:>5.0} s: RSS {:.1} MiB, {} fds, {} connections, \
                         {} events kept, tables {:.1}/{:.1}/{:.1} MiB, {} delivered",
                        s.at.as_secs_f64(),
                        s.rss_mib,
                        s.fds,
                        s.connections,
                        s.events,
                        s.tables_mib[0],
                        s.tables_mib[1],
                        s.tables_mib[2],
                        s.delivered
                    );
                    out.push(s);
                }
                None => eprintln!("kite-bench: a sample could not be taken"),
            }
            if last {
                return out;
            }
        }
    });
    Sampler { stop, task }
}

async fn take(start: Instant, pid: u32, db: &str, sink: &SinkState) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let sql = "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),
                      (SELECT count(*) FROM events),
                      pg_total_relation_size('events'), pg_total_relation_size('outbox'),
                      pg_total_relation_size('attempts')";
    let line = psql(db, sql).await.ok()?;
    let v: Vec<i64> = line
        .split('|')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [connections, events, e, o, a] = v.as_slice() else {
        return None;
    };
    let mib = |b: &i64| *b as f64 / (1024.0 * 1024.0);
    Some(Sample {
        at: start.elapsed(),
        rss_mib: rss_kib / 1024.0,
        fds,
        connections: *connections,
        events: *events,
        tables_mib: [mib(e), mib(o), mib(a)],
        delivered: sink.counts().unique,
    })
}

/// Prints the range of each figure after warm-up (the first fifth of the samples, at least
/// one, left out) beside its first and last value.
pub fn print(samples: &[Sample]) {
    let warm = samples.len() / 5;
    let after = &samples[warm.max(1).min(samples.len())..];
    if after.is_empty() {
        eprintln!("kite-bench: too few samples to judge flatness");
        return;
    }
    let range = |f: &dyn Fn(&Sample) -> f64, unit: &str| {
        let (lo, hi) = after
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let first = after.first().map(f).unwrap_or_default();
        let last = after.last().map(f).unwrap_or_default();
        format!("{lo:.1}-{hi:.1} {unit} (first {first:.1}, last {last:.1})")
    };
    print_table(&[
        row(
            "samples after warm-up",
            format!(
                "{} from {:.0} s to {:.0} s",
                after.len(),
                after[0].at.as_secs_f64(),
                after[after.len() - 1].at.as_secs_f64()
            ),
        ),
        row("kite RSS", range(&|s| s.rss_mib, "MiB")),
        row("kite open files", range(&|s| s.fds as f64, "")),
        row("database connections", range(&|s| s.connections as f64, "")),
        row("events kept", range(&|s| s.events as f64, "")),
        row("events table", range(&|s| s.tables_mib[0], "MiB")),
        row("outbox table", range(&|s| s.tables_mib[1], "MiB")),
        row("attempts table", range(&|s| s.tables_mib[2], "MiB")),
    ]);
}
