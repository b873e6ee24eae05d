//! `kite-bench run`: one kite instance (A) as a child process, forwarding to an in-process sink.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cpu::{per_event_us, Snapshot};
use crate::harness::{
    cleanup, peak_rss_mib, random_admin_key, random_fed_token, resolve_kite_bin, stderr_sink,
    with_database, KiteEnv, KiteProcess, Output, READY_TIMEOUT,
};
use crate::load::{per_second, print_table, row, LoadConfig, LoadReport};
use crate::sink::{self, SinkState, PROBE_KEY};

/// Settings of a full benchmark run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The kite binary; `None` picks `target/release/kite`, else `target/debug/kite`.
    pub kite_bin: Option<PathBuf>,
    /// Offered events per second.
    pub rate: u64,
    /// How long to offer load.
    pub duration: Duration,
    /// Most ingress requests in flight.
    pub concurrency: usize,
    /// Postgres server URL; the run uses its own database on it.
    pub database_url: String,
    /// RabbitMQ URL; the run uses its own name prefix on it.
    pub amqp_url: String,
    /// How long to wait for deliveries after the load stops.
    pub drain_timeout: Duration,
    /// Peers of the team (at least 1).
    pub peers: usize,
    /// How many of them every event matches (1..=peers); the others' scopes match nothing.
    pub matching_peers: usize,
    /// The most events the sink offers to take in one request (0: one a request).
    pub peer_batch: usize,
    /// A CEL filter (which the run's events match): every peer's scopes then take every
    /// event, the matching peers filter with it and the others with its negation, so each
    /// event is evaluated once a peer.
    pub cel: Option<String>,
    /// How often to sample what a long run must keep flat ([`crate::soak`]); `None`: never.
    pub sample_every: Option<Duration>,
    /// kite's event retention (`KITE_RETENTION_SECS`); `None`: kite's default.
    pub retention: Option<Duration>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
const TEAM: &str = "default";

/// Names a run makes on the shared servers.
struct Names {
    database: String,
    database_url: String,
    amqp_prefix: String,
    admin_key: String,
    peer_token: String,
}

impl Names {
    fn new(database_url: &str) -> Self {
        let run = crate::random_hex(12);
        let database = format!("kite_bench_{run}");
        Self {
            database_url: with_database(database_url, &database),
            database,
            amqp_prefix: format!("kitebench.{run}"),
            admin_key: random_admin_key(),
            peer_token: random_fed_token(),
        }
    }
}

/// Runs the whole benchmark and prints its table; always cleans up what it made.
pub async fn run(cfg: &RunConfig) -> Result<()> {
    let bin = resolve_kite_bin(cfg.kite_bin.as_deref())?;
    let names = Names::new(&cfg.database_url);
    let sink = sink::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(names.peer_token.clone()),
        cfg.peer_batch,
    )
    .await?;
    eprintln!(
        "kite-bench: sink on http://{} (batches offered: {}), starting {} (database {}, AMQP prefix {})",
        sink.addr,
        cfg.peer_batch,
        bin.display(),
        names.database,
        names.amqp_prefix
    );

    let mut env = KiteEnv::loopback(
        "bench-a",
        &names.database_url,
        &cfg.amqp_url,
        &names.amqp_prefix,
        &names.admin_key,
    );
    env.extend([
        ("KITE_TEAM_ID", TEAM),
        // A benchmark instance: secrets sealed with the development key, no rate limits.
        ("KITE_DEV", "true"),
        ("KITE_RATE_TEAM_PER_SEC", "0"),
        ("KITE_RATE_SENDER_PER_SEC", "0"),
        ("RUST_LOG", "warn"),
    ]);
    if let Some(r) = cfg.retention {
        env.set("KITE_RETENTION_SECS", r.as_secs().to_string());
    }
    let output = Output {
        stdout: stderr_sink("kite: "),
        stderr: None,
    };

    // Dropping the child (on ^C) kills it.
    let outcome = tokio::select! {
        r = async {
            let mut kite = KiteProcess::start(&bin, &env, output, READY_TIMEOUT).await?;
            let r = bench(cfg, &names, &kite, sink.addr, &sink.state).await;
            kite.kill().await;
            r
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };

    sink.task.abort();
    cleanup(
        &cfg.database_url,
        &cfg.amqp_url,
        &[&names.database],
        &[&names.amqp_prefix],
    )
    .await;
    outcome
}

async fn bench(
    cfg: &RunConfig,
    names: &Names,
    child: &KiteProcess,
    sink_addr: SocketAddr,
    sink: &Arc<SinkState>,
) -> Result<()> {
    let url = child
        .url()
        .context("kite's ready line has no url=")?
        .to_owned();
    let pid = child.pid().context("kite exited right after starting")?;
    eprintln!("kite-bench: kite ready at {url} (pid {pid})");

    let client = crate::load::client(cfg.concurrency)?;
    let peers = cfg.peers.max(1);
    let matching = cfg.matching_peers.clamp(1, peers);
    let admin = kite_kit::client::ApiClient::with_http(client.clone(), &url, &names.admin_key);
    for i in 0..peers {
        let scopes: &[&str] = if i < matching || cfg.cel.is_some() {
            &["*"]
        } else {
            &["nothing.matches.*"]
        };
        let id = admin
            .create_peer(
                &format!("sink-{i}"),
                &format!("http://{sink_addr}/p/{i}/hooks/{TEAM}/kite"),
                &names.peer_token,
                scopes,
                3,
            )
            .await
            .with_context(|| format!("creating peer {i}"))?;
        if let Some(expr) = &cfg.cel {
            let expr = if i < matching {
                expr.clone()
            } else {
                format!("!({expr})")
            };
            let cel = kite_api::filters::cel::Cel::compile(expr);
            if let Some(p) = cel.problem() {
                anyhow::bail!("--cel: {p}");
            }
            let patch = kite_api::peers::PeerPatch {
                filters: Some(vec![kite_api::filters::Filter::Cel(cel)]),
                ..Default::default()
            };
            admin
                .update_peer(&id, &patch)
                .await
                .with_context(|| format!("filtering peer {i}"))?;
        }
    }
    if peers > 1 {
        eprintln!("kite-bench: {peers} peers, {matching} matching every event");
        if let Some(expr) = &cfg.cel {
            eprintln!("kite-bench: each filtering with CEL {expr:?} (or its negation)");
        }
    }

    warm_up(&client, &url, sink).await?;

    eprintln!(
        "kite-bench: offering {} events/s for {:.1} s ({} in flight at most)",
        cfg.rate,
        cfg.duration.as_secs_f64(),
        cfg.concurrency
    );
    let load_cfg = LoadConfig {
        url: url.clone(),
        team: TEAM.to_owned(),
        source: "stripe".to_owned(),
        rate: cfg.rate,
        duration: cfg.duration,
        concurrency: cfg.concurrency,
    };
    let backends = postgres_backends(&cfg.database_url, &names.database).await;
    let me = std::process::id();
    let cpu_before = (
        Snapshot::take(&[pid]),
        Snapshot::take(&backends),
        Snapshot::take(&[me]),
    );
    let sampler = cfg.sample_every.map(|every| {
        crate::soak::spawn(
            every,
            pid,
            with_database(&cfg.database_url, &names.database),
            sink.clone(),
        )
    });
    // `--rate 0`: the instance idles with its peers for the duration (what it costs when
    // nothing happens).
    let report = if cfg.rate == 0 {
        tokio::time::sleep(cfg.duration).await;
        crate::load::LoadReport::default()
    } else {
        crate::load::run_load(&client, &load_cfg).await?
    };
    let samples = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };

    let expected = report.accepted * matching as u64;
    eprintln!(
        "kite-bench: load done, waiting up to {} s for {expected} deliveries",
        cfg.drain_timeout.as_secs(),
    );
    let deadline = Instant::now() + cfg.drain_timeout;
    loop {
        let c = sink.counts();
        if c.unique >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let backends_after = postgres_backends(&cfg.database_url, &names.database).await;
    let cpu = Cpu {
        kite: Snapshot::take(&[pid]).since(&cpu_before.0),
        postgres: Snapshot::take(&backends_after).since(&cpu_before.1),
        bench: Snapshot::take(&[me]).since(&cpu_before.2),
    };

    let rss = peak_rss_mib(pid);
    print_results(cfg, &report, sink, rss, matching as u64, &cpu);
    if let Some(samples) = samples {
        crate::soak::print(&samples);
    }
    Ok(())
}

/// Sends probe events (marked with [`PROBE_KEY`], not counted in the results) until one
/// reaches the sink, so the timed run starts with the peer known to every stage.
async fn warm_up(client: &reqwest::Client, url: &str, sink: &SinkState) -> Result<()> {
    let run = crate::random_hex(8);
    let endpoint = format!("{url}/hooks/{TEAM}/stripe");
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut k = 0u32;
    while Instant::now() < deadline {
        let body = format!(
            r#"{{"id":"evt_probe_{run}_{k}","object":"event","type":"bench.probe","{PROBE_KEY}":true,"sent_at_us":{}}}"#,
            crate::now_micros()
        );
        k += 1;
        let resp = client
            .post(&endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .context("sending a warm-up event")?;
        let status = resp.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = resp.text().await.unwrap_or_default();
            bail!("warm-up event: expected 202, got {status}: {text}");
        }
        let retry_at = Instant::now() + Duration::from_secs(2);
        while Instant::now() < retry_at.min(deadline) {
            if sink.counts().probes > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "kite-bench: warning: no warm-up event reached the sink within {} s; measuring anyway",
        PROBE_TIMEOUT.as_secs()
    );
    Ok(())
}

/// CPU spent during the load and the drain after it.
struct Cpu {
    kite: Duration,
    postgres: Duration,
    /// This process: the load generator and the sink, which share the machine.
    bench: Duration,
}

/// The pids of the Postgres backends connected to the run's database (same machine).
async fn postgres_backends(server: &str, database: &str) -> Vec<u32> {
    let sql = format!("SELECT pid FROM pg_stat_activity WHERE datname = '{database}'");
    match crate::harness::psql(&with_database(server, "postgres"), &sql).await {
        Ok(out) => out.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        Err(e) => {
            eprintln!("kite-bench: cannot list Postgres backends ({e:#}); no Postgres CPU figure");
            Vec::new()
        }
    }
}

fn print_results(
    cfg: &RunConfig,
    load: &LoadReport,
    sink: &SinkState,
    rss: Option<f64>,
    matching: u64,
    cpu: &Cpu,
) {
    let c = sink.counts();
    let lat = sink.latency();
    let lost = (load.accepted * matching).saturating_sub(c.unique);
    let delivery_window = match (load.started, c.last_unique_at) {
        (Some(start), Some(last)) => last.saturating_duration_since(start),
        _ => Duration::ZERO,
    };
    let mut rows = vec![
        row("offered rate", format!("{} events/s", cfg.rate)),
        row("duration", format!("{:.1} s", cfg.duration.as_secs_f64())),
        row(
            "peer takes",
            if cfg.peer_batch > 1 {
                format!("batches of up to {} events", cfg.peer_batch)
            } else {
                "one event a request".to_string()
            },
        ),
        row(
            "sent",
            format!("{} (of {} offered)", load.sent, load.offered),
        ),
        row("accepted (202)", load.accepted.to_string()),
        row("rejected (503)", load.rejected.to_string()),
        row("errors", load.errors.to_string()),
    ];
    if load.sent < load.offered.saturating_mul(95) / 100 {
        rows.push(row(
            "note",
            "the generator fell behind the offered rate: every request slot was busy \
             (kite saturated, or raise --concurrency)",
        ));
    }
    if load.duplicates > 0 {
        rows.push(row("duplicate answers (200)", load.duplicates.to_string()));
    }
    rows.extend([
        row(
            "ingress accept throughput",
            format!("{:.0} events/s", load.accept_throughput()),
        ),
        row(
            "ingress response p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                load.ingress_latency.p50_ms, load.ingress_latency.p99_ms
            ),
        ),
        row(
            "delivered at sink",
            format!("{} unique, {} received", c.unique, c.received),
        ),
        row("duplicates at sink", c.duplicates.to_string()),
        row(
            "lost (accepted x matching peers - unique)",
            lost.to_string(),
        ),
        row(
            "A->sink delivery throughput",
            format!("{:.0} events/s", per_second(c.unique, delivery_window)),
        ),
        row(
            "latency p50 / p90",
            format!("{:.1} / {:.1} ms", lat.p50_ms, lat.p90_ms),
        ),
        row(
            "latency p99 / max",
            format!("{:.1} / {:.1} ms", lat.p99_ms, lat.max_ms),
        ),
        row(
            "kite peak RSS",
            rss.map_or("n/a".to_owned(), |m| format!("{m:.1} MiB")),
        ),
        row(
            "CPU per delivered event: kite / its Postgres backends",
            match (
                per_event_us(cpu.kite, c.unique),
                per_event_us(cpu.postgres, c.unique),
            ) {
                (Some(k), Some(p)) => format!(
                    "{k:.0} / {p:.0} us ({:.1} / {:.1} CPU-s in all)",
                    cpu.kite.as_secs_f64(),
                    cpu.postgres.as_secs_f64()
                ),
                _ => format!(
                    "n/a ({:.2} / {:.2} CPU-s in all)",
                    cpu.kite.as_secs_f64(),
                    cpu.postgres.as_secs_f64()
                ),
            },
        ),
        row(
            "CPU per delivered event: generator and sink",
            per_event_us(cpu.bench, c.unique).map_or("n/a".to_owned(), |b| {
                format!("{b:.0} us ({:.1} CPU-s in all)", cpu.bench.as_secs_f64())
            }),
        ),
    ]);
    if cfg.peers > 1 {
        rows.insert(
            2,
            row("peers", format!("{} ({} matching)", cfg.peers, matching)),
        );
    }
    if c.rejected > 0 {
        rows.push(row("refused at sink (401/400)", c.rejected.to_string()));
    }
    for (i, e) in load.error_samples.iter().enumerate() {
        rows.push(row(&format!("error sample {}", i + 1), e.clone()));
    }
    print_table(&rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_expected_shapes() {
        let n = Names::new("postgres://postgres@127.0.0.1:5432");
        assert!(n.database.starts_with("kite_bench_"));
        assert!(n.database_url.ends_with(&n.database));
        assert_eq!(n.peer_token.len(), 5 + 43);
        assert_eq!(n.admin_key.len(), "kite_".len() + 8 + 1 + 32);
    }
}
