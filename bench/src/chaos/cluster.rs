//! The run's processes (A as three, B as one), killed and started again, and the fault
//! injector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::harness::{
    close_amqp_connections, random_admin_key, with_database, KiteEnv, KiteProcess, LogFile, Output,
    READY_TIMEOUT,
};

use super::{FaultKind, FaultTally, START_ATTEMPTS, TEAM};

/// Names the run makes on the shared servers.
pub(super) struct Names {
    pub(super) run: String,
    pub(super) db_a: String,
    pub(super) db_b: String,
    pub(super) url_a: String,
    pub(super) url_b: String,
    /// The `postgres` database of A's server (the run's own Postgres, when it has one).
    pub(super) admin_url_a: String,
    pub(super) prefix_a: String,
    pub(super) prefix_b: String,
    pub(super) key_a: String,
    pub(super) key_b: String,
}

impl Names {
    pub(super) fn new(database_url: &str) -> Self {
        let run = crate::random_hex(10);
        let db_a = format!("kite_chaos_{run}_a");
        let db_b = format!("kite_chaos_{run}_b");
        Self {
            url_a: with_database(database_url, &db_a),
            url_b: with_database(database_url, &db_b),
            admin_url_a: with_database(database_url, "postgres"),
            prefix_a: format!("kitechaos.{run}.a"),
            prefix_b: format!("kitechaos.{run}.b"),
            key_a: random_admin_key(),
            key_b: random_admin_key(),
            db_a,
            db_b,
            run,
        }
    }

    /// A's database on another server (the run's own Postgres).
    pub(super) fn with_a_on(mut self, server: &str) -> Self {
        self.url_a = with_database(server, &self.db_a);
        self.admin_url_a = with_database(server, "postgres");
        self
    }
}

/// Servers the run starts of its own, to break: a RabbitMQ cluster for A, a Postgres for A,
/// and a network namespace for A's delivery process (whose link is cut).
#[derive(Default)]
pub(super) struct Engines {
    pub(super) rabbit: Option<kite_kit::rabbit::OwnCluster>,
    pub(super) pg: Option<kite_kit::pg::OwnPostgres>,
    pub(super) ns: Option<kite_kit::netns::Netns>,
    /// The wrapper running kite in the namespace.
    pub(super) wrapper: Option<PathBuf>,
    /// The next node to break.
    broker_turn: u64,
    /// The next Postgres stop mode (fast, immediate, in turn).
    pg_turn: u64,
    /// The next cut's length (short, long, in turn).
    partition_turn: u64,
}

impl Drop for Engines {
    fn drop(&mut self) {
        if let Some(w) = &self.wrapper {
            let _ = std::fs::remove_file(w);
        }
    }
}

/// The environment of one of the run's processes (`KITE_PORT` is set at start).
pub(super) fn process_env(
    amqp_url: &str,
    instance_id: &str,
    database_url: &str,
    prefix: &str,
    admin_key: &str,
    roles: &str,
) -> KiteEnv {
    let mut env = KiteEnv::loopback(instance_id, database_url, amqp_url, prefix, admin_key);
    env.extend([
        ("KITE_TEAM_ID", TEAM),
        ("KITE_ROLES", roles),
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
    ]);
    env
}

/// One `kite serve` process of the run, which can be killed and started again.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) env: KiteEnv,
    pub(super) child: Option<KiteProcess>,
    pub(super) starts: u32,
    /// Fixed after the first start for a process that serves HTTP.
    pub(super) port: Option<u16>,
    pub(super) url: Option<String>,
    /// What runs it instead of the run's binary (a wrapper into a namespace).
    pub(super) bin: Option<PathBuf>,
}

impl Proc {
    pub(super) fn new(name: &'static str, env: KiteEnv) -> Self {
        Self {
            name,
            env,
            bin: None,
            child: None,
            starts: 0,
            port: None,
            url: None,
        }
    }

    /// Starts the process (on its port once it has one) and waits for its ready line,
    /// retrying a start that fails (a port still taken, say). Answers how long it took.
    pub(super) async fn start(&mut self, bin: &Path, log: &Arc<LogFile>) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = None;
        for attempt in 1..=START_ATTEMPTS {
            self.starts += 1;
            let label = format!("{}#{}", self.name, self.starts);
            let mut env = self.env.clone();
            env.set("KITE_PORT", self.port.unwrap_or(0).to_string());
            let output = Output::both(log.sink(label.clone()));
            let bin = self.bin.as_deref().unwrap_or(bin);
            match KiteProcess::start(bin, &env, output, READY_TIMEOUT).await {
                Ok(child) => {
                    if self.port.is_none() {
                        self.port = child.ready().port();
                        self.url = child.url().map(str::to_owned);
                    }
                    log.note(&format!("{label} ready (pid {:?})", child.pid()));
                    self.child = Some(child);
                    return Ok(t0.elapsed());
                }
                Err(e) => {
                    eprintln!("kite-bench: {label} did not start (attempt {attempt}): {e:#}");
                    log.note(&format!("{label} did not start: {e:#}"));
                    last = Some(anyhow::Error::from(e));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!("{} did not start", self.name)))
    }

    /// `Some(status)` when the process has exited (without us killing it).
    pub(super) fn exited(&mut self) -> Option<String> {
        self.child.as_mut()?.exited()
    }

    /// SIGKILL and reap.
    pub(super) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await;
        }
    }

    /// SIGKILL, then start again; notes an exit that happened before the kill.
    pub(super) async fn kill_and_restart(
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
pub(super) struct Cluster {
    pub(super) bin: PathBuf,
    pub(super) log: Arc<LogFile>,
    pub(super) a_ingress: Proc,
    pub(super) a_router: Proc,
    pub(super) a_delivery: Proc,
    pub(super) b: Proc,
    pub(super) engines: Engines,
}

impl Cluster {
    pub(super) fn new(
        bin: PathBuf,
        log: Arc<LogFile>,
        names: &Names,
        amqp_url: &str,
        engines: Engines,
    ) -> Self {
        let a_amqp = engines
            .rabbit
            .as_ref()
            .map_or_else(|| amqp_url.to_string(), |c| c.urls());
        let a = |roles| {
            process_env(
                &a_amqp,
                "chaos-a",
                &names.url_a,
                &names.prefix_a,
                &names.key_a,
                roles,
            )
        };
        let mut a_delivery = Proc::new("a-delivery", a("delivery"));
        let mut b_env = process_env(
            amqp_url,
            "chaos-b",
            &names.url_b,
            &names.prefix_b,
            &names.key_b,
            "ingress,router,delivery",
        );
        // Partitioned: A's delivery process runs in the namespace and reaches A's servers and
        // B at this side of the link.
        if let (Some(ns), Some(wrapper), Some(pg), Some(rabbit)) =
            (&engines.ns, &engines.wrapper, &engines.pg, &engines.rabbit)
        {
            a_delivery.bin = Some(wrapper.clone());
            a_delivery.env.extend([
                (
                    "KITE_DATABASE_URL",
                    with_database(&pg.url_at(&ns.host_ip), &names.db_a).as_str(),
                ),
                // Heartbeats every 5 s: a long cut gives the connection up on both sides.
                (
                    "KITE_AMQP_URL",
                    rabbit
                        .urls_at(&ns.host_ip)
                        .split(',')
                        .map(|u| format!("{u}?heartbeat=5"))
                        .collect::<Vec<_>>()
                        .join(",")
                        .as_str(),
                ),
            ]);
            b_env.set("KITE_HOST", ns.host_ip.clone());
        }
        Self {
            a_ingress: Proc::new("a-ingress", a("ingress")),
            a_router: Proc::new("a-router", a("router")),
            a_delivery,
            b: Proc::new("b", b_env),
            engines,
            bin,
            log,
        }
    }

    pub(super) fn procs(&mut self) -> [&mut Proc; 4] {
        [
            &mut self.a_ingress,
            &mut self.a_router,
            &mut self.a_delivery,
            &mut self.b,
        ]
    }

    /// Starts every process: B and A-ingress first (A-ingress applies A's migrations), then
    /// A-router and A-delivery.
    pub(super) async fn start(&mut self) -> Result<()> {
        let (bin, log) = (&self.bin, &self.log);
        tokio::try_join!(self.b.start(bin, log), self.a_ingress.start(bin, log))?;
        tokio::try_join!(
            self.a_router.start(bin, log),
            self.a_delivery.start(bin, log)
        )?;
        Ok(())
    }

    /// Restarts any process that exited on its own, noting it.
    pub(super) async fn revive(&mut self, tally: &mut FaultTally) -> Result<()> {
        let (bin, log) = (self.bin.clone(), self.log.clone());
        for p in self.procs() {
            if p.exited().is_some() {
                p.kill_and_restart(&bin, &log, tally).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn kill_all(&mut self) {
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
        _ => None,
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
    let t0 = Instant::now();
    let e = &mut cluster.engines;
    let done = match kind {
        FaultKind::KillBrokerNode | FaultKind::PauseBrokerNode => match e.rabbit.as_mut() {
            None => Err(anyhow!("no cluster of the run's own")),
            Some(c) => {
                let i = (e.broker_turn % c.len() as u64) as usize;
                e.broker_turn += 1;
                let r = if kind == FaultKind::KillBrokerNode {
                    match c.kill(i).await {
                        Ok(()) => c.restart(i).await,
                        Err(e) => Err(e),
                    }
                } else {
                    match c.pause(i).await {
                        Ok(()) => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            c.resume(i).await
                        }
                        Err(e) => Err(e),
                    }
                };
                r.map(|()| format!("node {} back in {:.1} s", i + 1, t0.elapsed().as_secs_f64()))
                    .map_err(anyhow::Error::from)
            }
        },
        FaultKind::RestartPostgres => match e.pg.as_ref() {
            None => Err(anyhow!("no Postgres of the run's own")),
            Some(pg) => {
                use kite_kit::pg::StopMode;
                let mode = if e.pg_turn.is_multiple_of(2) {
                    StopMode::Fast
                } else {
                    StopMode::Immediate
                };
                e.pg_turn += 1;
                pg.restart(mode)
                    .await
                    .map(|()| format!("{mode:?} restart took {:.1} s", t0.elapsed().as_secs_f64()))
                    .map_err(anyhow::Error::from)
            }
        },
        FaultKind::Partition => match e.ns.as_ref() {
            None => Err(anyhow!("no namespace of the run's own")),
            Some(ns) => {
                // Short cuts, which TCP rides out, and long ones, past the heartbeats
                // (5 s on the cut-off process' broker URL): the broker gives the process
                // up and both sides must reconnect.
                let secs = if e.partition_turn.is_multiple_of(2) {
                    3
                } else {
                    15
                };
                e.partition_turn += 1;
                match ns.cut().await {
                    Ok(()) => {
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        ns.heal()
                            .await
                            .map(|()| format!("healed after {secs} s"))
                            .map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        },
        FaultKind::CloseAmqp => {
            let closed = match e.rabbit.as_ref() {
                Some(c) => c
                    .close_connections(0, &names.prefix_a, "chaos")
                    .await
                    .map_err(anyhow::Error::from),
                None => close_amqp_connections(&names.prefix_a, "chaos").await,
            };
            closed.map(|n| {
                tally.amqp_connections_closed += n as u64;
                format!("{n} connections closed")
            })
        }
        FaultKind::TerminateDb => {
            kite_kit::faults::terminate_db_connections(&names.admin_url_a, &names.db_a)
                .await
                .map(|n| {
                    tally.db_backends_terminated += n.max(0) as u64;
                    format!("{n} backends terminated")
                })
                .map_err(anyhow::Error::from)
        }
        FaultKind::KillRouter
        | FaultKind::KillDelivery
        | FaultKind::KillB
        | FaultKind::KillIngress => Err(anyhow!("a process fault, injected above")),
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

/// Injects a fault every `every`, cycling through `schedule` ([`FaultKind::schedule`]), until
/// `stop` turns true. A fault that overruns its period delays the next one.
pub(super) async fn inject_faults(
    cluster: &mut Cluster,
    names: &Names,
    every: Duration,
    schedule: &[FaultKind],
    windows: &crate::hostile::FaultWindows,
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
        let kind = schedule[(i % schedule.len() as u64) as usize];
        i += 1;
        let window = windows.begin();
        let detail = inject(kind, cluster, names, &mut tally).await;
        windows.end(window);
        let detail = detail?;
        let line = format!("fault {i}: {}: {detail}", kind.describe());
        eprintln!("kite-bench: {line}");
        cluster.log.note(&line);
    }
    Ok(tally)
}
