//! `kite-bench chaos`: instance A (three processes: ingress, router, delivery) federating to
//! instance B (one process), fed a fixed number of events by a retrying webhook provider while
//! faults are injected on a schedule; then counts what reached B's store.
//!
//! - `report`: the fault kinds and what the provider, the injector and B's store tell;
//! - `cluster`: the run's processes and the fault injector;
//! - this module: the provider's load, the drain and the run.

mod cluster;
mod report;

pub use report::*;

use cluster::{inject_faults, Cluster, Names};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;

use tokio::sync::watch;

use crate::harness::{cleanup, psql, resolve_kite_bin, LogFile};
use crate::load::{print_table, send, webhook_request, Answer};
use kite_kit::client::ApiClient;

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
    /// Run A on a three-node RabbitMQ cluster of the run's own, and kill and pause its nodes
    /// one at a time among the faults.
    pub rabbit_cluster: bool,
    /// Keep A's database on a Postgres server of the run's own, and restart it (fast and
    /// immediate) among the faults.
    pub own_postgres: bool,
    /// Run A's delivery process in a network namespace of the run's own and cut its link
    /// among the faults (implies the two above: they listen on the link).
    pub partition: bool,
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
    let mut names = Names::new(&cfg.database_url);
    let (rabbit, own_pg) = (
        cfg.rabbit_cluster || cfg.partition,
        cfg.own_postgres || cfg.partition,
    );
    let mut engines = cluster::Engines::default();
    if cfg.partition {
        let ns = kite_kit::netns::Netns::create()
            .await
            .context("a network namespace of the run's own (needs root and iproute2)")?;
        let wrapper = std::env::temp_dir().join(format!("kite-chaos-{}-in-ns", names.run));
        ns.wrapper(&bin, &wrapper)?;
        engines.wrapper = Some(wrapper);
        engines.ns = Some(ns);
    }
    let link = engines.ns.as_ref().map(|n| n.host_ip.clone());
    if own_pg {
        let extra: Vec<&str> = link.iter().map(String::as_str).collect();
        let pg = kite_kit::pg::OwnPostgres::start_on(&extra)
            .await
            .context("a Postgres of the run's own")?;
        names = names.with_a_on(&pg.url());
        engines.pg = Some(pg);
    }
    if rabbit {
        eprintln!("kite-bench: starting a three-node RabbitMQ cluster of the run's own");
        engines.rabbit = Some(
            kite_kit::rabbit::OwnCluster::start_on(3, link.as_deref())
                .await
                .context("a RabbitMQ cluster of the run's own")?,
        );
    }
    let schedule = FaultKind::schedule(rabbit, own_pg, cfg.partition);
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
    let mut cluster = Cluster::new(bin, log.clone(), &names, &cfg.amqp_url, engines);

    let outcome = tokio::select! {
        r = run_chaos(cfg, &names, &mut cluster, &schedule) => r,
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

async fn run_chaos(
    cfg: &ChaosConfig,
    names: &Names,
    cluster: &mut Cluster,
    schedule: &[FaultKind],
) -> Result<ChaosReport> {
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
    let admin_b = ApiClient::with_http(client.clone(), &b_url, &names.key_b);
    let token = admin_b.mint_token("a").await?;
    anyhow::ensure!(!token.is_empty(), "B's token answer has no token");
    admin_b.trust_sender("instance-a", &token).await?;
    ApiClient::with_http(client.clone(), &a_url, &names.key_a)
        .create_peer(
            "instance-b",
            &format!("{b_url}/hooks/{TEAM}/kite"),
            &token,
            &["*"],
            3,
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
    // When faults ran: what they cause is not blamed on hostile traffic.
    let windows = crate::hostile::FaultWindows::default();
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
                    windows.clone(),
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
            inject_faults(
                cluster,
                names,
                cfg.fault_every,
                schedule,
                &windows,
                stop_rx.clone(),
            )
            .await
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
mod tests;
