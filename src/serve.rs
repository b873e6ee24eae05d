//! `kite serve` and `kite migrate`: configuration and process wiring.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kite_bus::LocalLane;
use kite_delivery::{DeliveryConfig, RetryPolicy};
use kite_federation::{Federation, FederationConfig};
use kite_ingress::server::ServerLimits;
use kite_ingress::{IngressConfig, Rate};
use kite_route::RouterConfig;
use kite_store::types::Permission;
use kite_wire::secret_box::SecretBox;

use crate::startup::{connect_bus, connect_store};
use tokio::sync::watch;

// The flags' defaults are the roles' own (`RouterConfig::new` and the like): one place each.
fn router() -> RouterConfig {
    RouterConfig::new("")
}

fn delivery() -> DeliveryConfig {
    DeliveryConfig::new("")
}

fn ingress() -> IngressConfig {
    IngressConfig::new("")
}

fn federation() -> FederationConfig {
    FederationConfig::new("")
}

/// Whole milliseconds of a duration (for a flag's default).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fixed key of `--dev` instances (public: development only).
const DEV_SECRET_KEY: &str = "a2l0ZS1kZXZlbG9wbWVudC1rZXktbm90LXNlY3JldCE=";

/// Database settings.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Postgres URL; the database is created if missing.
    #[arg(
        long,
        env = "KITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/kite"
    )]
    pub database_url: String,
    /// Postgres connections in the pool.
    #[arg(long, env = "KITE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
}

/// Every setting of `kite serve`, as flag and environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database settings.
    #[command(flatten)]
    pub db: DbArgs,
    /// Instance id (kitefedorigin, chain entries); defaults to the host name.
    #[arg(long, env = "KITE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Listen address.
    #[arg(long, env = "KITE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Listen port (0 picks a free one).
    #[arg(long, env = "KITE_PORT", default_value_t = 7700)]
    pub port: u16,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of every AMQP name; defaults to `kite.{instance id}`.
    #[arg(long, env = "KITE_AMQP_PREFIX")]
    pub amqp_prefix: Option<String>,
    /// Team bootstrapped at start.
    #[arg(long, env = "KITE_TEAM_ID", default_value = "default")]
    pub team_id: String,
    /// Admin key of the bootstrap team; one is generated and printed once if the team has none.
    #[arg(long, env = "KITE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Operator key: manages teams (`/api/teams`). Without it the teams API answers 401.
    #[arg(long, env = "KITE_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// Roles this process runs.
    #[arg(
        long,
        env = "KITE_ROLES",
        value_delimiter = ',',
        default_value = "ingress,router,delivery"
    )]
    pub roles: Vec<Role>,
    /// First retry delay in milliseconds.
    #[arg(long, env = "KITE_RETRY_BASE_MS", default_value_t = ms(RetryPolicy::default().base))]
    pub retry_base_ms: u64,
    /// Cap on a retry delay in milliseconds.
    #[arg(long, env = "KITE_RETRY_MAX_DELAY_MS", default_value_t = ms(RetryPolicy::default().max_delay))]
    pub retry_max_delay_ms: u64,
    /// Failed attempts after which a delivery is dead.
    #[arg(long, env = "KITE_RETRY_MAX_ATTEMPTS", default_value_t = RetryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub retry_max_attempts: u32,
    /// Timeout of one delivery request in milliseconds.
    #[arg(long, env = "KITE_REQUEST_TIMEOUT_MS", default_value_t = ms(delivery().request_timeout))]
    pub request_timeout_ms: u64,
    /// How long deliveries this process' ingest hands its own delivery role are leased to
    /// it, in milliseconds: after a crash the sweeper takes them over once it ends.
    #[arg(long, env = "KITE_DELIVERY_LEASE_MS", default_value_t = ms(delivery().lease))]
    pub delivery_lease_ms: u64,
    /// How often the sweeper looks for lost work, in milliseconds.
    #[arg(long, env = "KITE_SWEEP_INTERVAL_MS", default_value_t = ms(router().sweep_interval))]
    pub sweep_interval_ms: u64,
    /// How overdue work must be before the sweeper republishes it, in milliseconds.
    #[arg(long, env = "KITE_SWEEP_GRACE_MS", default_value_t = ms(router().sweep_grace))]
    pub sweep_grace_ms: u64,
    /// Failures in a row after which a peer is unreachable and its deliveries are parked.
    #[arg(long, env = "KITE_PEER_FAILURE_THRESHOLD", default_value_t = delivery().failure_threshold, value_parser = clap::value_parser!(i32).range(1..))]
    pub peer_failure_threshold: i32,
    /// How often an unreachable peer is probed, in milliseconds.
    #[arg(long, env = "KITE_PEER_PROBE_INTERVAL_MS", default_value_t = ms(delivery().probe_interval))]
    pub peer_probe_interval_ms: u64,
    /// How long SIGTERM waits for in-flight work before exiting, in milliseconds.
    #[arg(long, env = "KITE_SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,
    /// How long settled events are kept, in seconds: the duplicate window and how far back
    /// a listener can resume.
    #[arg(long, env = "KITE_RETENTION_SECS", default_value_t = router().retention.as_secs())]
    pub retention_secs: u64,
    /// How long a stream connection may take no data (its socket is full) before it is cut
    /// off as a slow consumer (4004), in milliseconds.
    #[arg(long, env = "KITE_STREAM_STALL_MS", default_value_t = ms(ingress().stream_stall))]
    pub stream_stall_ms: u64,
    /// Stream connections a team may hold at once (more get 4003).
    #[arg(long, env = "KITE_STREAM_MAX_CONNECTIONS", default_value_t = ingress().stream_max_connections)]
    pub stream_max_connections: usize,
    /// Stream connections one API key may hold at once (more get 4003), so one key cannot
    /// take all of its team's.
    #[arg(long, env = "KITE_STREAM_MAX_PER_KEY", default_value_t = ingress().stream_max_per_key)]
    pub stream_max_per_key: usize,
    /// HTTP connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "KITE_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections)]
    pub max_connections: usize,
    /// Once a request's first byte arrives, its headers (and a TLS handshake) must be
    /// complete within this many milliseconds, or the connection is closed.
    #[arg(long, env = "KITE_HEADER_TIMEOUT_MS", default_value_t = ms(ServerLimits::default().header_timeout))]
    pub header_timeout_ms: u64,
    /// A keep-alive connection with nothing in flight is closed after this many
    /// milliseconds.
    #[arg(long, env = "KITE_IDLE_TIMEOUT_MS", default_value_t = ms(ServerLimits::default().idle_timeout))]
    pub idle_timeout_ms: u64,
    /// Key sealing federation and source secrets at rest: 32 bytes, base64
    /// (`kite admin secret-key` makes one). Required unless --dev.
    #[arg(long, env = "KITE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Development mode: without KITE_SECRET_KEY, secrets are sealed with a fixed, public key.
    #[arg(long, env = "KITE_DEV")]
    pub dev: bool,
    /// Refuse webhooks to sources without a signature configuration (401 signature_required).
    #[arg(long, env = "KITE_REQUIRE_SIGNED_HOOKS")]
    pub require_signed_hooks: bool,
    /// Allow peer URLs on loopback and private networks (refused otherwise: SSRF guard).
    #[arg(long, env = "KITE_ALLOW_PRIVATE_PEERS")]
    pub allow_private_peers: bool,
    /// How long a rotated-out secret stays valid, in seconds.
    #[arg(long, env = "KITE_SECRET_OVERLAP_SECS", default_value_t = ingress().secret_overlap.as_secs())]
    pub secret_overlap_secs: u64,
    /// Webhooks a second a team may send (0: unlimited).
    #[arg(long, env = "KITE_RATE_TEAM_PER_SEC", default_value_t = ingress().team_rate.per_second)]
    pub rate_team_per_sec: u32,
    /// Burst above the team rate.
    #[arg(long, env = "KITE_RATE_TEAM_BURST", default_value_t = ingress().team_rate.burst)]
    pub rate_team_burst: u32,
    /// Federated events a second one trusted sender may send (0: unlimited).
    #[arg(long, env = "KITE_RATE_SENDER_PER_SEC", default_value_t = ingress().sender_rate.per_second)]
    pub rate_sender_per_sec: u32,
    /// Burst above the sender rate.
    #[arg(long, env = "KITE_RATE_SENDER_BURST", default_value_t = ingress().sender_rate.burst)]
    pub rate_sender_burst: u32,
    /// Requests a second one client address may make that fail authentication (bad
    /// signature, unknown sender or team) before it gets 429 (0: unlimited).
    #[arg(long, env = "KITE_RATE_UNAUTHENTICATED_PER_SEC", default_value_t = ingress().anon_rate.per_second)]
    pub rate_unauthenticated_per_sec: u32,
    /// Burst above the unauthenticated rate.
    #[arg(long, env = "KITE_RATE_UNAUTHENTICATED_BURST", default_value_t = ingress().anon_rate.burst)]
    pub rate_unauthenticated_burst: u32,
    /// Server-to-server calls (heartbeats, key queries, backfill pages) a handshake peer may
    /// make a second (0: unlimited).
    #[arg(long, env = "KITE_RATE_PEER_PER_SEC", default_value_t = ingress().peer_rate.per_second)]
    pub rate_peer_per_sec: u32,
    /// Server-to-server calls a handshake peer may make at once above that rate.
    #[arg(long, env = "KITE_RATE_PEER_BURST", default_value_t = ingress().peer_rate.burst)]
    pub rate_peer_burst: u32,
    /// PEM certificate chain to serve HTTPS with (needs --tls-key).
    #[arg(long, env = "KITE_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KITE_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM file of a CA to trust for peers' certificates (besides the system's).
    #[arg(long, env = "KITE_PEER_CA")]
    pub peer_ca: Option<std::path::PathBuf>,
    /// Webhooks waiting for a database commit before ingress answers 503.
    #[arg(long, env = "KITE_INGEST_QUEUE", default_value_t = ingress().ingest_queue)]
    pub ingest_queue: usize,
    /// The base URL other servers reach this one at (invitations and the server
    /// descriptor name it); default: the address it listens on.
    #[arg(long, env = "KITE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds between heartbeats to each handshake peer.
    #[arg(long, env = "KITE_HEARTBEAT_INTERVAL_SECS", default_value_t = federation().heartbeat_interval.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval_secs: u64,
    /// Heartbeats missed in a row after which a peer is `degraded`.
    #[arg(long, env = "KITE_HEARTBEAT_MISSES", default_value_t = federation().heartbeat_misses, value_parser = clap::value_parser!(u32).range(1..))]
    pub heartbeat_misses: u32,
    /// Where Prometheus metrics are served (`GET /metrics`); `off` serves none.
    #[arg(long, env = "KITE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Seconds a rotated-out identity key stays published and accepted.
    #[arg(long, env = "KITE_KEY_OVERLAP_SECS", default_value_t = federation().key_overlap.as_secs())]
    pub key_overlap_secs: u64,
    /// Seconds an identity key signs before it is rotated on schedule (0: only by hand).
    #[arg(long, env = "KITE_KEY_ROTATION_SECS", default_value_t = federation().key_rotation.map_or(0, |d| d.as_secs()))]
    pub key_rotation_secs: u64,
}

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// HTTP: hooks, admin API, stream.
    Ingress,
    /// Routing and the sweeper.
    Router,
    /// Outbound deliveries.
    Delivery,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kite".to_string())
}

/// `kite migrate`.
pub async fn migrate(a: DbArgs) -> anyhow::Result<()> {
    let store = connect_store(&a.database_url, 2).await?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `kite serve`: runs until SIGINT or SIGTERM.
pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // One signal stops everything at once: HTTP stops accepting, consumers stop taking
    // messages, and in-flight work gets the grace period to finish.
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    run(a, stop_rx, |ready| {
        println!("{}", ready.line());
    })
    .await
}

/// What a started instance tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Its HTTP(S) base URL, when it runs the ingress role.
    pub url: Option<String>,
    /// Its instance id.
    pub instance_id: String,
    /// The roles it runs.
    pub roles: Vec<String>,
    /// Where its Prometheus metrics are served, when they are.
    pub metrics_url: Option<String>,
}

impl Ready {
    /// The ready line `kite serve` prints on stdout.
    pub fn line(&self) -> String {
        let line = self.head();
        match &self.metrics_url {
            Some(m) => format!("{line} metrics={m}"),
            None => line,
        }
    }

    fn head(&self) -> String {
        match &self.url {
            Some(u) => format!(
                "kite ready url={u} instance_id={} roles={}",
                self.instance_id,
                self.roles.join(",")
            ),
            None => format!(
                "kite ready instance_id={} roles={}",
                self.instance_id,
                self.roles.join(",")
            ),
        }
    }
}

/// Runs an instance in this process until `shutdown` turns true, then lets in-flight work
/// finish within the grace period. `on_ready` is called once everything serves.
pub async fn run(
    a: ServeArgs,
    shutdown: watch::Receiver<bool>,
    on_ready: impl FnOnce(Ready) + Send,
) -> anyhow::Result<()> {
    crate::install_tls_provider();
    let instance_id = a.instance_id.clone().unwrap_or_else(host_name);
    let prefix = a
        .amqp_prefix
        .clone()
        .unwrap_or_else(|| format!("kite.{instance_id}"));
    let retry = RetryPolicy {
        base: Duration::from_millis(a.retry_base_ms.max(1)),
        max_delay: Duration::from_millis(a.retry_max_delay_ms.max(a.retry_base_ms).max(1)),
        max_attempts: a.retry_max_attempts,
    };

    let secrets = match (&a.secret_key, a.dev) {
        (Some(k), _) => SecretBox::from_base64(k)?,
        (None, true) => {
            tracing::warn!("--dev: secrets at rest are sealed with a fixed development key; never use this in production");
            SecretBox::from_base64(DEV_SECRET_KEY)?
        }
        (None, false) => anyhow::bail!(
            "KITE_SECRET_KEY is not set: kite seals federation and source secrets at rest with it. \
             Make one with `kite admin secret-key` and set KITE_SECRET_KEY (or pass --dev for a development instance)"
        ),
    };
    let store = connect_store(&a.db.database_url, a.db.db_pool_size)
        .await?
        .with_secrets(secrets);
    // Router and delivery write state that the sweeper and receivers' deduplication can redo,
    // so their commits skip the WAL flush wait.
    let worker_store = store.relaxed(a.db.db_pool_size)?;
    store.migrate().await.context("applying migrations")?;
    let sealed = store
        .seal_legacy_secrets()
        .await
        .context("checking stored secrets against KITE_SECRET_KEY")?;
    if sealed > 0 {
        tracing::info!(
            count = sealed,
            "sealed secrets stored before encryption at rest"
        );
    }
    let bus = Arc::new(connect_bus(&a.amqp_url, &prefix).await?);
    // Ingress hands deliveries for peers this process serves straight to the
    // delivery role through this lane; both roles must share the one value.
    let lane = Arc::new(LocalLane::default());
    bus.declare_base(retry.tiers())
        .await
        .context("declaring AMQP topology")?;

    store.ensure_team(&a.team_id).await?;
    match &a.admin_key {
        Some(k) => {
            store
                .add_api_key(&a.team_id, k, Permission::Admin, "bootstrap")
                .await?
        }
        None => {
            if !store.team_has_keys(&a.team_id).await? {
                let key = kite_wire::token::mint_api_key();
                store
                    .add_api_key(&a.team_id, &key, Permission::Admin, "bootstrap")
                    .await?;
                println!("kite admin key for team {} (shown once): {key}", a.team_id);
            }
        }
    }

    let grace = Duration::from_millis(a.shutdown_grace_ms);
    match kite_ingress::server::raise_fd_limit() {
        Some(n) => tracing::debug!(limit = n, "open-file limit"),
        None => tracing::warn!("could not raise the open-file limit"),
    }
    let notes = store.listen_for_changes();
    let stop_rx = shutdown;
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // The ingress role listens first: its address is the default public URL.
    let listening = if a.roles.contains(&Role::Ingress) {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("binding {}:{}", a.host, a.port))?;
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .context("loading --tls-cert and --tls-key")?,
            ),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Some((listener, tls))
    } else {
        None
    };
    let listen_url = match &listening {
        Some((l, tls)) => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            Some(format!("{scheme}://{}", l.local_addr()?))
        }
        None => None,
    };
    let metrics_url = match a.metrics_addr.trim() {
        "" | "off" => None,
        addr => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the metrics address {addr} (KITE_METRICS_ADDR)")
            })?;
            Some(crate::metrics::serve(listener, store.clone(), stop_rx.clone()).await?)
        }
    };
    let fed = Federation::start(
        store.clone(),
        notes.config.clone(),
        &notes.peer_keys,
        FederationConfig {
            public_url: a
                .public_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_string())
                .or_else(|| listen_url.clone()),
            heartbeat_interval: Duration::from_secs(a.heartbeat_interval_secs.max(1)),
            heartbeat_misses: a.heartbeat_misses.max(1),
            key_overlap: Duration::from_secs(a.key_overlap_secs),
            key_rotation: (a.key_rotation_secs > 0)
                .then(|| Duration::from_secs(a.key_rotation_secs)),
            allow_private_peers: a.allow_private_peers,
            peer_ca: a.peer_ca.clone(),
            ..FederationConfig::new(&instance_id)
        },
    )
    .await
    .context("starting federation (the identity key)")?;
    let mut tasks = Vec::new();
    if a.roles.contains(&Role::Router) {
        let cfg = RouterConfig {
            sweep_interval: Duration::from_millis(a.sweep_interval_ms.max(100)),
            sweep_grace: Duration::from_millis(a.sweep_grace_ms),
            retention: Duration::from_secs(a.retention_secs),
            ..RouterConfig::new(&instance_id)
        };
        tasks.push(tokio::spawn(kite_route::run(
            worker_store.clone(),
            bus.clone(),
            notes.config.clone(),
            cfg,
            stop_rx.clone(),
        )));
    }
    if a.roles.contains(&Role::Delivery) {
        let cfg = DeliveryConfig {
            retry,
            request_timeout: Duration::from_millis(a.request_timeout_ms.max(1)),
            failure_threshold: a.peer_failure_threshold,
            probe_interval: Duration::from_millis(a.peer_probe_interval_ms.max(10)),
            lease: Duration::from_millis(a.delivery_lease_ms.max(100)),
            allow_private_peers: a.allow_private_peers,
            peer_ca: a.peer_ca.clone(),
            ..DeliveryConfig::new(&instance_id)
        };
        let (s, b, l, f, n, r) = (
            worker_store.clone(),
            bus.clone(),
            lane.clone(),
            fed.clone(),
            notes.config.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(kite_federation::heartbeat::run(
            fed.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(kite_federation::rotate_on_schedule(
            fed.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = kite_delivery::run(s, b, l, f, n, cfg, r).await {
                tracing::error!(error = %e, "delivery role failed to start");
                std::process::exit(1);
            }
        }));
    }

    let roles: Vec<String> = a
        .roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    if let Some((listener, tls)) = listening {
        let app = kite_ingress::app(
            store.clone(),
            bus.clone(),
            lane.clone(),
            fed.clone(),
            notes.clone(),
            IngressConfig {
                ingest_queue: a.ingest_queue,
                stream_max_connections: a.stream_max_connections.max(1),
                stream_max_per_key: a.stream_max_per_key.max(1),
                stream_stall: Duration::from_millis(a.stream_stall_ms.max(1)),
                require_signed_hooks: a.require_signed_hooks,
                allow_private_peers: a.allow_private_peers,
                secret_overlap: Duration::from_secs(a.secret_overlap_secs),
                operator_key: a.operator_key.clone(),
                team_rate: Rate {
                    per_second: a.rate_team_per_sec,
                    burst: a.rate_team_burst,
                },
                sender_rate: Rate {
                    per_second: a.rate_sender_per_sec,
                    burst: a.rate_sender_burst,
                },
                anon_rate: Rate {
                    per_second: a.rate_unauthenticated_per_sec,
                    burst: a.rate_unauthenticated_burst,
                },
                peer_rate: Rate {
                    per_second: a.rate_peer_per_sec,
                    burst: a.rate_peer_burst,
                },
                ..IngressConfig::new(&instance_id)
            },
        );
        let addr = listener.local_addr()?;
        on_ready(Ready {
            url: listen_url.clone(),
            instance_id: instance_id.clone(),
            roles: roles.clone(),
            metrics_url: metrics_url.clone(),
        });
        tracing::info!(%addr, instance_id = %instance_id, prefix = %prefix, tls = tls.is_some(), "kite serving");
        let limits = ServerLimits {
            max_connections: a.max_connections.max(1),
            header_timeout: Duration::from_millis(a.header_timeout_ms.max(100)),
            idle_timeout: Duration::from_millis(a.idle_timeout_ms.max(100)),
        };
        kite_ingress::server::serve(
            listener,
            app,
            limits,
            tls.map(|c| c.get_inner()),
            stop_rx.clone(),
            grace,
        )
        .await
        .context("serving HTTP")?;
    } else {
        on_ready(Ready {
            url: None,
            instance_id: instance_id.clone(),
            roles: roles.clone(),
            metrics_url: metrics_url.clone(),
        });
        stopped.await;
    }
    let drain = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            "in-flight work did not finish within the grace period; it is redelivered later"
        );
    }
    bus.close().await;
    Ok(())
}
