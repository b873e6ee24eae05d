//! The settings of `kite serve`: one type, read from flags, the environment and a settings
//! file, checked when it is read. Each role's configuration is derived from it here, and
//! every default comes from the role's own `new()` (one place each).
//!
//! Precedence: a flag, then its environment variable, then the settings file
//! (`--config` / `KITE_CONFIG`: `KITE_NAME=value` lines, the environment variables' own
//! names), then the default. A value out of range is an error naming the setting; nothing
//! is clamped silently.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kite_delivery::{DeliveryConfig, RetryPolicy};
use kite_federation::FederationConfig;
use kite_http::server::ServerLimits;
use kite_http::IngressConfig;
use kite_route::RouterConfig;

mod file;
mod roles;

pub use file::with_settings_file;

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

/// A count of at least one (pool sizes, connection caps, queue lengths).
fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Milliseconds of at least `MIN`.
fn millis<const MIN: u64>(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n < MIN => Err(format!("must be at least {MIN} ms")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Database settings (`kite serve` and `kite migrate`).
#[derive(Debug, Clone, Args)]
pub struct DbSettings {
    /// Postgres URL; the database is created if missing.
    #[arg(
        long,
        env = "KITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/kite"
    )]
    pub database_url: String,
    /// Postgres connections in the pool.
    #[arg(long, env = "KITE_DB_POOL_SIZE", default_value_t = 16, value_parser = count)]
    pub db_pool_size: usize,
}

/// Every setting of `kite serve`, as flag, environment variable and settings-file line.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// A settings file: `KITE_NAME=value` lines (`#` starts a comment), read under the
    /// flags and the environment.
    #[arg(long, env = "KITE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database settings.
    #[command(flatten)]
    pub db: DbSettings,
    /// Instance id (kitefedorigin, chain entries); defaults to the host name.
    #[arg(long, env = "KITE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Listen address.
    #[arg(long, env = "KITE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Listen port (0 picks a free one).
    #[arg(long, env = "KITE_PORT", default_value_t = 7700)]
    pub port: u16,
    /// RabbitMQ URL; for a cluster, its nodes' URLs separated by commas (kite connects to
    /// the first that answers and, when it goes away, to the next).
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of every AMQP name; defaults to `kite.{instance id}`.
    #[arg(long, env = "KITE_AMQP_PREFIX")]
    pub amqp_prefix: Option<String>,
    /// How long a publish may wait for the broker's confirmation, in milliseconds.
    #[arg(long, env = "KITE_AMQP_PUBLISH_TIMEOUT_MS", default_value_t = ms(kite_bus::PUBLISH_TIMEOUT), value_parser = millis::<1>)]
    pub amqp_publish_timeout_ms: u64,
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
    #[arg(long, env = "KITE_RETRY_BASE_MS", default_value_t = ms(RetryPolicy::default().base), value_parser = millis::<1>)]
    pub retry_base_ms: u64,
    /// Cap on a retry delay in milliseconds (at least the first delay).
    #[arg(long, env = "KITE_RETRY_MAX_DELAY_MS", default_value_t = ms(RetryPolicy::default().max_delay), value_parser = millis::<1>)]
    pub retry_max_delay_ms: u64,
    /// Failed attempts after which a delivery is dead.
    #[arg(long, env = "KITE_RETRY_MAX_ATTEMPTS", default_value_t = RetryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub retry_max_attempts: u32,
    /// Timeout of one delivery request in milliseconds.
    #[arg(long, env = "KITE_REQUEST_TIMEOUT_MS", default_value_t = ms(delivery().request_timeout), value_parser = millis::<1>)]
    pub request_timeout_ms: u64,
    /// How long deliveries this process' ingest hands its own delivery role are leased to
    /// it, in milliseconds: after a crash the sweeper takes them over once it ends.
    #[arg(long, env = "KITE_DELIVERY_LEASE_MS", default_value_t = ms(delivery().lease), value_parser = millis::<100>)]
    pub delivery_lease_ms: u64,
    /// The coalescing window of operational events, in milliseconds: a subject (a peer's
    /// health, its dead deliveries) emits at most once a window at once, and what followed
    /// within it when the window ends.
    #[arg(long, env = "KITE_OPERATIONAL_WINDOW_MS", default_value_t = ms(delivery().operational_window), value_parser = millis::<100>)]
    pub operational_window_ms: u64,
    /// How often the sweeper looks for lost work, in milliseconds.
    #[arg(long, env = "KITE_SWEEP_INTERVAL_MS", default_value_t = ms(router().sweep_interval), value_parser = millis::<100>)]
    pub sweep_interval_ms: u64,
    /// How overdue work must be before the sweeper republishes it, in milliseconds.
    #[arg(long, env = "KITE_SWEEP_GRACE_MS", default_value_t = ms(router().sweep_grace))]
    pub sweep_grace_ms: u64,
    /// Requests to one peer in flight at once from one delivery process, unless the peer's
    /// policy sets `max_in_flight`.
    #[arg(long, env = "KITE_PEER_MAX_IN_FLIGHT", default_value_t = delivery().max_in_flight, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub peer_max_in_flight: u32,
    /// Failures in a row after which a peer is unreachable and its deliveries are parked.
    #[arg(long, env = "KITE_PEER_FAILURE_THRESHOLD", default_value_t = delivery().failure_threshold, value_parser = clap::value_parser!(i32).range(1..))]
    pub peer_failure_threshold: i32,
    /// How often an unreachable peer is probed, in milliseconds.
    #[arg(long, env = "KITE_PEER_PROBE_INTERVAL_MS", default_value_t = ms(delivery().probe_interval), value_parser = millis::<10>)]
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
    #[arg(long, env = "KITE_STREAM_STALL_MS", default_value_t = ms(ingress().stream_stall), value_parser = millis::<1>)]
    pub stream_stall_ms: u64,
    /// How long a new stream connection has to send its connect frame, in milliseconds.
    #[arg(long, env = "KITE_STREAM_CONNECT_TIMEOUT_MS", default_value_t = ms(ingress().stream_connect_timeout), value_parser = millis::<1>)]
    pub stream_connect_timeout_ms: u64,
    /// Stream connections a team may hold at once (more get 4003).
    #[arg(long, env = "KITE_STREAM_MAX_CONNECTIONS", default_value_t = ingress().stream_max_connections, value_parser = count)]
    pub stream_max_connections: usize,
    /// Stream connections one API key may hold at once (more get 4003), so one key cannot
    /// take all of its team's.
    #[arg(long, env = "KITE_STREAM_MAX_PER_KEY", default_value_t = ingress().stream_max_per_key, value_parser = count)]
    pub stream_max_per_key: usize,
    /// HTTP connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "KITE_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections, value_parser = count)]
    pub max_connections: usize,
    /// Once a request's first byte arrives, its headers (and a TLS handshake) must be
    /// complete within this many milliseconds, or the connection is closed.
    #[arg(long, env = "KITE_HEADER_TIMEOUT_MS", default_value_t = ms(ServerLimits::default().header_timeout), value_parser = millis::<100>)]
    pub header_timeout_ms: u64,
    /// A keep-alive connection with nothing in flight is closed after this many
    /// milliseconds.
    #[arg(long, env = "KITE_IDLE_TIMEOUT_MS", default_value_t = ms(ServerLimits::default().idle_timeout), value_parser = millis::<100>)]
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
    #[arg(long, env = "KITE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KITE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of a CA to trust for peers' certificates (besides the system's).
    #[arg(long, env = "KITE_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// Webhooks waiting for a database commit before ingress answers 503.
    #[arg(long, env = "KITE_INGEST_QUEUE", default_value_t = ingress().ingest.queue, value_parser = count)]
    pub ingest_queue: usize,
    /// The base URL other servers reach this one at (invitations and the server
    /// descriptor name it); default: the address it listens on.
    #[arg(long, env = "KITE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Timeout of one server-to-server request (accepting an invitation, heartbeats,
    /// descriptors, key queries), in milliseconds.
    #[arg(long, env = "KITE_FEDERATION_TIMEOUT_MS", default_value_t = ms(federation().request_timeout), value_parser = millis::<1>)]
    pub federation_timeout_ms: u64,
    /// Seconds between heartbeats to each handshake peer.
    #[arg(long, env = "KITE_HEARTBEAT_INTERVAL_SECS", default_value_t = federation().heartbeat_interval.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval_secs: u64,
    /// Heartbeats missed in a row after which a peer is `degraded`.
    #[arg(long, env = "KITE_HEARTBEAT_MISSES", default_value_t = federation().heartbeat_misses, value_parser = clap::value_parser!(u32).range(1..))]
    pub heartbeat_misses: u32,
    /// A listener of its own for Prometheus metrics (`GET /metrics`), for a process
    /// without the ingress role; default `off` (the main listener serves `/metrics`).
    #[arg(long, env = "KITE_METRICS_ADDR", default_value = "off")]
    pub metrics_addr: String,
    /// Client networks the main listener serves `/metrics` to without a token
    /// (comma-separated CIDRs or addresses; `none`: only with KITE_METRICS_TOKEN).
    #[arg(long, env = "KITE_METRICS_ALLOW", default_value = "127.0.0.0/8,::1/128", value_parser = networks)]
    pub metrics_allow: Networks,
    /// A bearer token that reads `/metrics` on the main listener from any address.
    #[arg(long, env = "KITE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Seconds a rotated-out identity key stays published and accepted.
    #[arg(long, env = "KITE_KEY_OVERLAP_SECS", default_value_t = federation().key_overlap.as_secs())]
    pub key_overlap_secs: u64,
    /// Seconds an identity key signs before it is rotated on schedule (0: only by hand).
    #[arg(long, env = "KITE_KEY_ROTATION_SECS", default_value_t = federation().key_rotation.map_or(0, |d| d.as_secs()))]
    pub key_rotation_secs: u64,
}

/// A list of client networks (`KITE_METRICS_ALLOW`).
#[derive(Debug, Clone, Default)]
pub struct Networks(pub Vec<ipnet::IpNet>);

/// Reads comma-separated CIDRs or addresses; `none` is the empty list.
fn networks(s: &str) -> Result<Networks, String> {
    if s.trim() == "none" {
        return Ok(Networks::default());
    }
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{p:?} is neither a CIDR (127.0.0.0/8) nor an address"))
        })
        .collect::<Result<_, _>>()
        .map(Networks)
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

impl Role {
    /// The role's name, as `KITE_ROLES` and the ready line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Router => "router",
            Role::Delivery => "delivery",
        }
    }
}

/// Settings that cannot be used, each naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Two settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// The settings file cannot be read.
    #[error("cannot read the settings file {} (--config / KITE_CONFIG): {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the settings file that is not a setting.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl Settings {
    /// Checks what single values cannot: settings that must agree with each other.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.retry_max_delay_ms < self.retry_base_ms {
            return Err(SettingsError::Conflict(format!(
                "--retry-max-delay-ms / KITE_RETRY_MAX_DELAY_MS ({}) is below --retry-base-ms / KITE_RETRY_BASE_MS ({})",
                self.retry_max_delay_ms, self.retry_base_ms
            )));
        }
        if self.roles.is_empty() {
            return Err(SettingsError::Conflict(
                "--roles / KITE_ROLES names no role".into(),
            ));
        }
        Ok(())
    }

    /// This instance's id: the setting, else the host name.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(host_name)
    }

    /// The prefix of every AMQP name.
    pub fn amqp_prefix(&self, instance_id: &str) -> String {
        self.amqp_prefix
            .clone()
            .unwrap_or_else(|| format!("kite.{instance_id}"))
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// How long shutdown waits for in-flight work.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// How long a publish waits for the broker's confirmation.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.amqp_publish_timeout_ms)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kite".to_string())
}

#[cfg(test)]
mod tests;
