//! `kite-bench`: measure kite's ingress and A→peer federation throughput and latency.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use kite_bench::chaos::{self, ChaosConfig};
use kite_bench::load::{self, LoadConfig};
use kite_bench::run::{self, RunConfig};
use kite_bench::sink;

/// The allocator of kite's binary: the generator and the sink spend less of the CPU they
/// share with what they measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator and receiving sink for kite.
#[derive(Debug, Parser)]
#[command(name = "kite-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve a federation peer that verifies, counts and times events (`GET /stats`).
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7799")]
        listen: SocketAddr,
        /// Require `Authorization: Bearer TOKEN` and a matching `X-Kite-Signature`.
        #[arg(long, env = "KITE_BENCH_SINK_TOKEN")]
        token: Option<String>,
        /// The most events one request may carry, offered as a kite peer offers batches;
        /// 0: one event a request.
        #[arg(long, default_value_t = 0)]
        batch: usize,
    },
    /// Full benchmark: start kite, peer it with an in-process sink, drive load, print results.
    Run(RunArgs),
    /// Chaos test: A (ingress, router and delivery processes) federating to B while faults are
    /// injected; prints faults, sent, accepted, delivered, duplicates and lost. Exits 1 if
    /// anything accepted was lost or duplicated at B.
    Chaos(ChaosArgs),
    /// Drive load at an existing instance's `/hooks/{team}/{source}` and print ingress figures.
    Load {
        /// Base URL of the kite instance.
        #[arg(long)]
        url: String,
        /// Team in the hook path.
        #[arg(long, default_value = "default")]
        team: String,
        /// Source in the hook path.
        #[arg(long, default_value = "stripe")]
        source: String,
        #[command(flatten)]
        load: LoadArgs,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Offered events per second (`run`: 0 idles for the duration, measuring what an
    /// instance with peers and no traffic costs).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most HTTP requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

impl LoadArgs {
    fn duration(&self) -> Result<Duration> {
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        Ok(Duration::from_secs_f64(self.duration))
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The kite binary [default: target/release/kite if it exists, else target/debug/kite].
    #[arg(long)]
    kite_bin: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Postgres server; the run creates and drops its own database on it.
    #[arg(
        long,
        env = "KITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_url: String,
    /// RabbitMQ; the run uses (and deletes) its own queue name prefix.
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Seconds to wait, after the load stops, for every accepted event to reach the sink.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Peers of the team, each a path of the sink.
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// How many peers every event matches (the others' scopes match nothing).
    #[arg(long, default_value_t = 1)]
    matching_peers: usize,
    /// The most events the sink takes in one request, offered as a kite peer offers
    /// batches (`X-Kite-Batch`); 0 makes it a Kite peer that takes one event a request.
    #[arg(long, default_value_t = 64)]
    peer_batch: usize,
    /// A CEL filter the run's events match (`data.data.object.amount >= 1000`): every peer then
    /// takes every event by scope, the --matching-peers filter with it and the others with
    /// its negation, so routing evaluates it for every peer.
    #[arg(long)]
    cel: Option<String>,
    /// Seconds between samples of what a long run must keep flat (kite's resident memory
    /// and open files, its Postgres connections, the sizes of events, outbox and attempts);
    /// 0: none. For a soak: `--duration 1800 --sample-every 60 --retention 120`.
    #[arg(long, default_value_t = 0)]
    sample_every: u64,
    /// kite's event retention in seconds (`KITE_RETENTION_SECS`), so that a long run prunes
    /// as it goes.
    #[arg(long)]
    retention: Option<u64>,
}

#[derive(Debug, Args)]
struct ChaosArgs {
    /// The kite binary [default: target/release/kite if it exists, else target/debug/kite].
    #[arg(long)]
    kite_bin: Option<PathBuf>,
    /// Events to send (ids evt_chaos_0 ...).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Events started a second (retries come on top).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Events in flight at once (an event keeps its slot while it is retried).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Milliseconds between faults (0: no faults; needs --hostile).
    #[arg(long, default_value_t = 1500)]
    fault_every_ms: u64,
    /// Mix hostile requests of every kind into the stream (malformed, oversized, forged,
    /// badly signed, half-sent, oversized /ws frames) and fail the run if A's peer is ever
    /// parked, /health fails, a hostile request gets an unexpected answer or a secret is
    /// stored. Use with --fault-every-ms 0 for a soak without faults.
    #[arg(long)]
    hostile: bool,
    /// Milliseconds between hostile requests.
    #[arg(long, default_value_t = 100)]
    hostile_every_ms: u64,
    /// Run A on a three-node RabbitMQ cluster of the run's own (nodes with their own names,
    /// ports and data; the machine's broker untouched), killing and pausing its nodes one
    /// at a time among the faults.
    #[arg(long)]
    rabbit_cluster: bool,
    /// Keep A's database on a Postgres of the run's own (initdb into a temporary
    /// directory), restarting it fast and immediate among the faults.
    #[arg(long)]
    own_postgres: bool,
    /// Run A's delivery process in a network namespace of the run's own and cut its link
    /// among the faults (with --rabbit-cluster and --own-postgres, which it implies).
    #[arg(long)]
    partition: bool,
    /// Seconds to wait, once every event was answered, for B to hold every accepted event.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    /// Postgres server; the run creates and drops its own two databases on it.
    #[arg(
        long,
        env = "KITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_url: String,
    /// RabbitMQ; the run uses (and deletes the queues of) its own two name prefixes.
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kite-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Cmd) -> Result<ExitCode> {
    match command {
        Cmd::Sink {
            listen,
            token,
            batch,
        } => sink::run_standalone(listen, token, batch)
            .await
            .map(|()| ExitCode::SUCCESS),
        Cmd::Run(args) => {
            let cfg = RunConfig {
                kite_bin: args.kite_bin,
                rate: args.load.rate,
                duration: args.load.duration()?,
                concurrency: args.load.concurrency,
                database_url: args.database_url,
                amqp_url: args.amqp_url,
                drain_timeout: Duration::from_secs(args.drain_timeout),
                peers: args.peers,
                matching_peers: args.matching_peers,
                peer_batch: args.peer_batch,
                cel: args.cel,
                sample_every: (args.sample_every > 0)
                    .then(|| Duration::from_secs(args.sample_every)),
                retention: args.retention.map(Duration::from_secs),
            };
            run::run(&cfg).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Chaos(args) => {
            let cfg = ChaosConfig {
                kite_bin: args.kite_bin,
                events: args.events,
                rate: args.rate,
                concurrency: args.concurrency,
                fault_every: Duration::from_millis(args.fault_every_ms),
                drain_timeout: Duration::from_secs(args.drain_timeout),
                database_url: args.database_url,
                amqp_url: args.amqp_url,
                hostile_every: args
                    .hostile
                    .then(|| Duration::from_millis(args.hostile_every_ms.max(1))),
                rabbit_cluster: args.rabbit_cluster,
                own_postgres: args.own_postgres,
                partition: args.partition,
            };
            let passed = chaos::chaos(&cfg).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Load {
            url,
            team,
            source,
            load: l,
        } => {
            let cfg = LoadConfig {
                url,
                team,
                source,
                rate: l.rate,
                duration: l.duration()?,
                concurrency: l.concurrency,
            };
            let client = load::client(cfg.concurrency)?;
            let report = load::run_load(&client, &cfg).await?;
            report.print(cfg.rate, cfg.duration);
            Ok(ExitCode::SUCCESS)
        }
    }
}
