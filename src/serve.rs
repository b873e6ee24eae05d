//! `kite serve` and `kite migrate`: starting an instance from its [`Settings`], and stopping
//! it with one [`CancellationToken`] (a child token for each role and the HTTP server).

use std::sync::Arc;

use anyhow::Context;
use kite_bus::{Bus, LocalLane};
use kite_federation::Federation;
use kite_store::notify::Notifications;
use kite_store::outbox::DeliveryRow;
use kite_store::types::Permission;
use kite_store::Store;
use kite_wire::secret_box::SecretBox;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::settings::{DbSettings, Role, Settings};
use crate::startup::{connect_bus, connect_store};

/// The fixed key of `--dev` instances (public: development only).
const DEV_SECRET_KEY: &str = "a2l0ZS1kZXZlbG9wbWVudC1rZXktbm90LXNlY3JldCE=";

/// `kite migrate`.
pub async fn migrate(a: DbSettings) -> anyhow::Result<()> {
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
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // One signal stops everything at once: HTTP stops accepting, consumers stop taking
    // messages, and in-flight work gets the grace period to finish.
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        signalled.cancel();
    });
    run(settings, shutdown, |ready| {
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

/// What every role of one process shares.
struct Shared {
    /// The store of the ingress role (synchronous commits: a 202 promises durability).
    store: Store,
    /// The store of the router and delivery roles: what they write can be redone (the
    /// sweeper republishes, receivers deduplicate), so their commits skip the WAL flush.
    worker_store: Store,
    bus: Arc<Bus>,
    /// Ingress hands deliveries for peers this process serves straight to its delivery
    /// role through this lane; both roles must share the one value.
    lane: Arc<LocalLane<DeliveryRow>>,
    notes: Notifications,
}

/// The HTTP listener of the ingress role, bound before anything else starts: its address
/// is the default public URL.
struct Listening {
    listener: TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    url: String,
}

/// Runs an instance in this process until `shutdown` is cancelled, then lets in-flight
/// work finish within the grace period. `on_ready` is called once everything serves. A
/// role that fails stops the others, and its error is returned.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Ready) + Send,
) -> anyhow::Result<()> {
    settings.validate()?;
    crate::install_tls_provider();
    let id = settings.instance_id();
    let shared = connect(&settings, &id).await?;
    bootstrap(&settings, &shared.store).await?;
    match kite_http::server::raise_fd_limit() {
        Some(n) => tracing::debug!(limit = n, "open-file limit"),
        None => tracing::warn!("could not raise the open-file limit"),
    }
    let stop = shutdown.child_token();
    let listening = match settings.runs(Role::Ingress) {
        true => Some(listen(&settings).await?),
        false => None,
    };
    // Metrics: sampled whenever something serves them (the main listener, or a listener of
    // their own for a process without one).
    let own_addr = match settings.metrics_addr.trim() {
        "" | "off" => None,
        addr => Some(addr),
    };
    let render = match (&listening, own_addr) {
        (None, None) => None,
        _ => Some(crate::metrics::start(
            shared.store.clone(),
            stop.child_token(),
        )?),
    };
    let metrics_url = match (own_addr, &render, &listening) {
        (Some(addr), Some(render), _) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("binding the metrics address {addr} (KITE_METRICS_ADDR)")
            })?;
            Some(crate::metrics::serve(listener, render.clone(), stop.child_token()).await?)
        }
        (None, Some(_), Some(l)) => Some(format!("{}/metrics", l.url)),
        _ => None,
    };
    let fed = Federation::start(
        shared.store.clone(),
        shared.notes.config.clone(),
        &shared.notes.peer_keys,
        settings.federation(&id, listening.as_ref().map(|l| l.url.as_str())),
    )
    .await
    .context("starting federation (the identity key)")?;
    let mut roles = spawn_roles(&settings, &id, &shared, &fed, &stop);
    on_ready(Ready {
        url: listening.as_ref().map(|l| l.url.clone()),
        instance_id: id.clone(),
        roles: settings
            .roles
            .iter()
            .map(|r| r.name().to_string())
            .collect(),
        metrics_url,
    });
    let serving = serve_http(
        &settings,
        &id,
        &shared,
        &fed,
        listening,
        render,
        stop.clone(),
    );
    tokio::pin!(serving);
    let mut failure = tokio::select! {
        served = &mut serving => served.err(),
        failed = first_failure(&mut roles) => {
            tracing::error!(error = %failed, "a role failed; stopping the instance");
            stop.cancel();
            let _ = serving.await;
            Some(failed)
        }
    };
    stop.cancel();
    let drain = async {
        while let Some(ended) = roles.join_next().await {
            if let Some(e) = failed(ended) {
                failure.get_or_insert(e);
            }
        }
    };
    if tokio::time::timeout(settings.shutdown_grace(), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight work did not finish within the grace period; it is redelivered later"
        );
    }
    shared.bus.close().await;
    failure.map_or(Ok(()), Err)
}

/// Connects the store and the broker, applies migrations and declares the topology.
async fn connect(settings: &Settings, id: &str) -> anyhow::Result<Shared> {
    let secrets = match (&settings.secret_key, settings.dev) {
        (Some(k), _) => SecretBox::from_base64(k).context("KITE_SECRET_KEY")?,
        (None, true) => {
            tracing::warn!("--dev: secrets at rest are sealed with a fixed development key; never use this in production");
            SecretBox::from_base64(DEV_SECRET_KEY)?
        }
        (None, false) => anyhow::bail!(
            "KITE_SECRET_KEY is not set: kite seals federation and source secrets at rest with it. \
             Make one with `kite admin secret-key` and set KITE_SECRET_KEY (or pass --dev for a development instance)"
        ),
    };
    let db = &settings.db;
    let store = connect_store(&db.database_url, db.db_pool_size)
        .await?
        .with_secrets(secrets);
    let worker_store = store.relaxed(db.db_pool_size)?;
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
    let bus = connect_bus(&settings.amqp_url, &settings.amqp_prefix(id))
        .await?
        .with_publish_timeout(settings.publish_timeout());
    bus.declare_base(settings.retry().tiers())
        .await
        .context("declaring AMQP topology")?;
    let notes = store.listen_for_changes();
    Ok(Shared {
        store,
        worker_store,
        bus: Arc::new(bus),
        lane: Arc::new(LocalLane::default()),
        notes,
    })
}

/// Creates the bootstrap team and its admin key (printed once when generated).
async fn bootstrap(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    let team = &settings.team_id;
    store.ensure_team(team).await?;
    match &settings.admin_key {
        Some(k) => {
            store
                .add_api_key(team, k, Permission::Admin, "bootstrap")
                .await?
        }
        None => {
            if !store.team_has_keys(team).await? {
                let key = kite_wire::token::mint_api_key();
                store
                    .add_api_key(team, &key, Permission::Admin, "bootstrap")
                    .await?;
                println!("kite admin key for team {team} (shown once): {key}");
            }
        }
    }
    Ok(())
}

/// Binds the HTTP listener and loads the TLS certificate, if any.
async fn listen(settings: &Settings) -> anyhow::Result<Listening> {
    let (host, port) = (settings.host.as_str(), settings.port);
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding {host}:{port}"))?;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("loading --tls-cert and --tls-key")?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    Ok(Listening { listener, tls, url })
}

/// Starts the router and delivery roles (with heartbeats and key rotation), each under a
/// child token of `stop`.
fn spawn_roles(
    settings: &Settings,
    id: &str,
    shared: &Shared,
    fed: &Arc<Federation>,
    stop: &CancellationToken,
) -> JoinSet<anyhow::Result<()>> {
    let mut roles = JoinSet::new();
    if settings.runs(Role::Router) {
        let run = kite_route::run(
            shared.worker_store.clone(),
            shared.bus.clone(),
            shared.notes.config.clone(),
            settings.router(id),
            stop.child_token(),
        );
        roles.spawn(async move {
            run.await;
            Ok(())
        });
    }
    if settings.runs(Role::Delivery) {
        let heartbeats = kite_federation::heartbeat::run(fed.clone(), stop.child_token());
        roles.spawn(async move {
            heartbeats.await;
            Ok(())
        });
        let rotation = kite_federation::rotate_on_schedule(fed.clone(), stop.child_token());
        roles.spawn(async move {
            rotation.await;
            Ok(())
        });
        let run = kite_delivery::run(
            shared.worker_store.clone(),
            shared.bus.clone(),
            shared.lane.clone(),
            fed.clone(),
            shared.notes.config.clone(),
            settings.delivery(id),
            stop.child_token(),
        );
        roles.spawn(async move { run.await.context("starting the delivery role") });
    }
    roles
}

/// Serves HTTP until `stop` is cancelled (or only waits for it, without the ingress role).
async fn serve_http(
    settings: &Settings,
    id: &str,
    shared: &Shared,
    fed: &Arc<Federation>,
    listening: Option<Listening>,
    render: Option<std::sync::Arc<dyn Fn() -> String + Send + Sync>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(Listening { listener, tls, url }) = listening else {
        stop.cancelled().await;
        return Ok(());
    };
    let app = kite_http::app(
        shared.store.clone(),
        shared.bus.clone(),
        shared.lane.clone(),
        fed.clone(),
        shared.notes.clone(),
        kite_http::IngressConfig {
            metrics: render.map(|render| kite_http::MetricsAccess {
                render,
                allow: settings.metrics_allow.0.clone(),
                token: settings.metrics_token.clone(),
            }),
            ..settings.ingress(id)
        },
    );
    tracing::info!(%url, instance_id = %id, tls = tls.is_some(), "kite serving");
    kite_http::server::serve(
        listener,
        app,
        settings.server_limits(),
        tls.map(|c| c.get_inner()),
        stop,
        settings.shutdown_grace(),
    )
    .await
    .context("serving HTTP")
}

/// The error of a role that ended, if it failed.
fn failed(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> Option<anyhow::Error> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(anyhow::anyhow!("a role's task failed: {e}")),
    }
}

/// The first role failure; pending for as long as no role fails (a role that ends by
/// itself, such as key rotation without a schedule, is not a failure).
async fn first_failure(roles: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Error {
    loop {
        match roles.join_next().await {
            Some(ended) => {
                if let Some(e) = failed(ended) {
                    return e;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
