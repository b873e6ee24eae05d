//! `kite-bench run`: one kite instance (A) as a child process, forwarding to an in-process sink.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
const TEAM: &str = "default";

/// Finds the kite binary: the explicit path, else `target/release/kite` or `target/debug/kite`
/// under the current directory, then under the workspace this crate was built from.
pub fn resolve_kite_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("kite binary {} not found", p.display());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for root in [PathBuf::from("."), workspace] {
        for profile in ["release", "debug"] {
            let p = root.join("target").join(profile).join("kite");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("no kite binary in target/release or target/debug: run `cargo build --release` first, or pass --kite-bin")
}

/// Replaces the database name of a Postgres URL (keeping any `?query`).
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The RabbitMQ virtual host of an AMQP URL (`/` when the URL names none).
pub fn amqp_vhost(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or("");
    match rest.split_once('/') {
        Some((_, path)) if !path.is_empty() => percent_decode(path),
        _ => "/".to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL in kite's ready line: `kite ready url=http://127.0.0.1:PORT instance_id=...`.
pub fn parse_ready_line(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("kite ready ")?;
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .map(str::to_owned)
}

/// Peak resident set size of a process in MiB (`VmHWM` in `/proc/<pid>/status`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

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
            admin_key: format!(
                "kite_{}_{}",
                crate::random_hex(8),
                crate::random_hex(16) + &crate::random_hex(16)
            ),
            peer_token: format!("kfed_{}", crate::random_hex(22) + &crate::random_hex(21)),
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
    )
    .await?;
    eprintln!(
        "kite-bench: sink on http://{}, starting {} (database {}, AMQP prefix {})",
        sink.addr,
        bin.display(),
        names.database,
        names.amqp_prefix
    );

    let mut child = Command::new(&bin)
        .arg("serve")
        .env("KITE_INSTANCE_ID", "bench-a")
        .env("KITE_PORT", "0")
        .env("KITE_HOST", "127.0.0.1")
        .env("KITE_DATABASE_URL", &names.database_url)
        .env("KITE_AMQP_URL", &cfg.amqp_url)
        .env("KITE_AMQP_PREFIX", &names.amqp_prefix)
        .env("KITE_ADMIN_KEY", &names.admin_key)
        .env("KITE_TEAM_ID", TEAM)
        .env("KITE_ALLOW_PRIVATE_PEERS", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;

    let outcome = tokio::select! {
        r = bench(cfg, &names, &mut child, sink.addr, &sink.state) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };

    if let Err(e) = child.kill().await {
        eprintln!("kite-bench: could not kill kite: {e}");
    }
    sink.task.abort();
    cleanup(cfg, &names).await;
    outcome
}

async fn bench(
    cfg: &RunConfig,
    names: &Names,
    child: &mut Child,
    sink_addr: SocketAddr,
    sink: &Arc<SinkState>,
) -> Result<()> {
    let url = wait_ready(child).await?;
    let pid = child.id().context("kite exited right after starting")?;
    eprintln!("kite-bench: kite ready at {url} (pid {pid})");

    let client = crate::load::client(cfg.concurrency)?;
    let peer_hook_url = format!("http://{sink_addr}/hooks/{TEAM}/kite");
    let resp = client
        .post(format!("{url}/api/federation/peers"))
        .bearer_auth(&names.admin_key)
        .json(&json!({
            "name": "sink",
            "peer_hook_url": peer_hook_url,
            "outbound_token": names.peer_token,
            "scopes": ["*"],
            "max_hops": 3,
        }))
        .send()
        .await
        .context("creating the peer")?;
    let status = resp.status();
    if status != reqwest::StatusCode::CREATED {
        let body = resp.text().await.unwrap_or_default();
        bail!("creating the peer: expected 201, got {status}: {body}");
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
    let report = crate::load::run_load(&client, &load_cfg).await?;

    eprintln!(
        "kite-bench: load done, waiting up to {} s for {} deliveries",
        cfg.drain_timeout.as_secs(),
        report.accepted
    );
    let deadline = Instant::now() + cfg.drain_timeout;
    loop {
        let c = sink.counts();
        if c.unique >= report.accepted || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }

    let rss = peak_rss_mib(pid);
    print_results(cfg, &report, sink, rss);
    Ok(())
}

/// Reads kite's stdout until the ready line, then forwards the rest to stderr in a task.
async fn wait_ready(child: &mut Child) -> Result<String> {
    let stdout = child.stdout.take().context("kite's stdout is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.context("reading kite's stdout")? {
            if let Some(url) = parse_ready_line(&line) {
                return Ok(Some(url));
            }
            eprintln!("kite: {line}");
        }
        Ok::<_, anyhow::Error>(None)
    })
    .await;
    let url = match found {
        Ok(Ok(Some(url))) => url,
        Ok(Ok(None)) => {
            let status = child.wait().await.context("waiting for kite")?;
            bail!("kite exited before it was ready ({status})");
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!(
            "kite printed no ready line within {} s",
            READY_TIMEOUT.as_secs()
        ),
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("kite: {line}");
        }
    });
    Ok(url.trim_end_matches('/').to_owned())
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

fn print_results(cfg: &RunConfig, load: &LoadReport, sink: &SinkState, rss: Option<f64>) {
    let c = sink.counts();
    let lat = sink.latency();
    let lost = load.accepted.saturating_sub(c.unique);
    let delivery_window = match (load.started, c.last_unique_at) {
        (Some(start), Some(last)) => last.saturating_duration_since(start),
        _ => Duration::ZERO,
    };
    let mut rows = vec![
        row("offered rate", format!("{} events/s", cfg.rate)),
        row("duration", format!("{:.1} s", cfg.duration.as_secs_f64())),
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
        row("lost (accepted - unique)", lost.to_string()),
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
    ]);
    if c.rejected > 0 {
        rows.push(row("refused at sink (401/400)", c.rejected.to_string()));
    }
    for (i, e) in load.error_samples.iter().enumerate() {
        rows.push(row(&format!("error sample {}", i + 1), e.clone()));
    }
    print_table(&rows);
}

/// Drops the run's database and deletes its queues; reports what it could not remove.
async fn cleanup(cfg: &RunConfig, names: &Names) {
    let admin_url = with_database(&cfg.database_url, "postgres");
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", names.database);
    match Command::new("psql")
        .arg(&admin_url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "kite-bench: could not drop database {}: {}",
            names.database,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!(
            "kite-bench: could not run psql to drop database {}: {e}",
            names.database
        ),
    }

    let vhost = amqp_vhost(&cfg.amqp_url);
    let ours = |name: &str| {
        name == names.amqp_prefix || name.starts_with(&format!("{}.", names.amqp_prefix))
    };
    match rabbitmq_list(&vhost, "list_queues").await {
        Ok(queues) => {
            for q in queues.iter().filter(|q| ours(q)) {
                let out = Command::new("rabbitmqctl")
                    .args(["-q", "-p", &vhost, "delete_queue", q])
                    .stdin(Stdio::null())
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => eprintln!(
                        "kite-bench: could not delete queue {q}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => eprintln!("kite-bench: could not delete queue {q}: {e}"),
                }
            }
        }
        Err(e) => eprintln!(
            "kite-bench: could not list queues ({e:#}); delete those named {}.* by hand",
            names.amqp_prefix
        ),
    }
    match rabbitmq_list(&vhost, "list_exchanges").await {
        Ok(exchanges) => {
            let left: Vec<_> = exchanges.into_iter().filter(|x| ours(x)).collect();
            if !left.is_empty() {
                eprintln!(
                    "kite-bench: exchanges left on vhost {vhost} (empty, harmless): {}",
                    left.join(" ")
                );
            }
        }
        Err(e) => eprintln!("kite-bench: could not list exchanges ({e:#})"),
    }
}

/// Names from `rabbitmqctl -q -p VHOST <command> name`.
async fn rabbitmq_list(vhost: &str, command: &str) -> Result<Vec<String>> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-p", vhost, command, "name"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {command} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let base = "postgres://postgres@127.0.0.1:5432";
        assert_eq!(with_database(base, "x"), format!("{base}/x"));
        assert_eq!(with_database(&format!("{base}/"), "x"), format!("{base}/x"));
        assert_eq!(
            with_database(&format!("{base}/kite"), "x"),
            format!("{base}/x")
        );
        assert_eq!(
            with_database(&format!("{base}/kite?sslmode=disable"), "x"),
            format!("{base}/x?sslmode=disable")
        );
        assert_eq!(
            with_database(&format!("{base}?sslmode=disable"), "x"),
            format!("{base}/x?sslmode=disable")
        );
    }

    #[test]
    fn vhosts() {
        assert_eq!(amqp_vhost("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(amqp_vhost("amqp://guest:guest@127.0.0.1:5672"), "/");
        assert_eq!(amqp_vhost("amqp://h:5672/"), "/");
        assert_eq!(amqp_vhost("amqp://h:5672/bench?heartbeat=5"), "bench");
    }

    #[test]
    fn ready_line() {
        assert_eq!(
            parse_ready_line("kite ready url=http://127.0.0.1:4321 instance_id=bench-a"),
            Some("http://127.0.0.1:4321".to_owned())
        );
        assert_eq!(parse_ready_line("something else"), None);
    }

    #[test]
    fn names_have_expected_shapes() {
        let n = Names::new("postgres://postgres@127.0.0.1:5432");
        assert!(n.database.starts_with("kite_bench_"));
        assert!(n.database_url.ends_with(&n.database));
        assert_eq!(n.peer_token.len(), 5 + 43);
        assert_eq!(n.admin_key.len(), "kite_".len() + 8 + 1 + 32);
    }
}
