//! Test harness: kite instances on free ports, each with its own database and AMQP prefix,
//! driven over HTTP; everything they made is removed on drop. An instance runs in the test's
//! own process (`kite::serve::run` on a runtime of its own, [`Instance::start_with`]) unless
//! the test needs a process of its own ([`Instance::process_with`]: SIGKILL and restart, its
//! logs, its own metrics, roles split over processes).

#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod hostile;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod peering;
pub mod tools;
pub mod traffic;

pub use http::*;
pub use listen::*;
pub use traffic::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

use kite_kit::process::{discard, KiteEnv, KiteProcess, Output, READY_TIMEOUT};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub const PG_SERVER_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_DEFAULT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The Postgres server tests use (KITE_TEST_PG_SERVER or the local default).
pub fn pg_server() -> String {
    std::env::var("KITE_TEST_PG_SERVER").unwrap_or_else(|_| PG_SERVER_DEFAULT.to_string())
}

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("KITE_AMQP_URL").unwrap_or_else(|_| AMQP_DEFAULT.to_string())
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The kite binary cargo built for these tests.
pub fn kite_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kite"))
}

/// Settings that make retries fast enough for tests, and a Postgres pool small enough that
/// the suite fits the server's default 100 connections (README, "Setup").
pub fn fast_env() -> [(&'static str, &'static str); 7] {
    [
        ("KITE_DB_POOL_SIZE", "4"),
        ("KITE_RETRY_BASE_MS", "100"),
        ("KITE_RETRY_MAX_DELAY_MS", "400"),
        ("KITE_RETRY_MAX_ATTEMPTS", "3"),
        ("KITE_SWEEP_INTERVAL_MS", "500"),
        ("KITE_SWEEP_GRACE_MS", "10000"),
        ("KITE_REQUEST_TIMEOUT_MS", "3000"),
    ]
}

/// A running kite instance.
pub struct Instance {
    pub name: String,
    pub url: String,
    pub key: String,
    pub db_name: String,
    /// The Postgres server its database is on (`pg_server()`, or a test's own).
    pub pg: String,
    pub prefix: String,
    pub port: u16,
    /// Where its Prometheus metrics are served.
    pub metrics_url: String,
    pub env: KiteEnv,
    /// How it runs, and the running instance (none while stopped or killed).
    run: Run,
    pub http: reqwest::Client,
    pub max_attempts: u32,
    /// Every line the process wrote to stderr (its logs), across restarts.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Runs of whitespace as one space, trimmed (output tables compared line by line).
pub fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Instance {
    /// Starts an instance in this process with the fast test settings.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, &[]).await
    }

    /// Starts an instance in this process with extra settings (environment variable names,
    /// overriding the defaults).
    pub async fn start_with(name: &str, extra: &[(&str, &str)]) -> Self {
        Self::begin(name, extra, false, pg_server()).await
    }

    /// Starts an instance as a `kite serve` process of its own, for a test that kills and
    /// restarts it, reads its logs or its metrics, or runs its roles in further processes.
    pub async fn process_with(name: &str, extra: &[(&str, &str)]) -> Self {
        Self::begin(name, extra, true, pg_server()).await
    }

    /// Starts an instance as a `kite serve` process whose database is on the Postgres
    /// server at `pg` (a test's own, which it restarts).
    pub async fn process_on(name: &str, pg: &str, extra: &[(&str, &str)]) -> Self {
        Self::begin(name, extra, true, pg.to_string()).await
    }

    async fn begin(name: &str, extra: &[(&str, &str)], process: bool, pg: String) -> Self {
        let id = unique();
        let db_name = format!("kite_test_{id}");
        let prefix = format!("kitetest.{id}");
        let key = format!("kite_{}_{}", &id[..8], uuid::Uuid::new_v4().simple());
        let mut env =
            KiteEnv::loopback(name, &format!("{pg}/{db_name}"), &amqp_url(), &prefix, &key);
        env.extend(fast_env())
            .set(
                "KITE_SECRET_KEY",
                kite_wire::secret_box::SecretBox::generate_key(),
            )
            .set(
                "RUST_LOG",
                std::env::var("KITE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .extend(extra.iter().copied());
        let max_attempts = env
            .get("KITE_RETRY_MAX_ATTEMPTS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let mut inst = Self {
            name: name.to_string(),
            url: String::new(),
            key,
            db_name,
            pg,
            prefix,
            port: 0,
            metrics_url: String::new(),
            env,
            run: if process {
                Run::Process(None)
            } else {
                Run::InProcess(None)
            },
            // Pooled connections are dropped after a second, before any test instance's
            // idle timeout (3 s at the least) closes them under a request.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .expect("HTTP client"),
            max_attempts,
            logs: Default::default(),
        };
        inst.spawn().await;
        inst
    }

    /// (Re)starts the instance with its environment, on its first port once it has one.
    pub async fn spawn(&mut self) {
        let mut env = self.env.clone();
        if self.port != 0 {
            env.set("KITE_PORT", self.port.to_string());
        }
        if let Run::InProcess(slot) = &mut self.run {
            let (run, ready) = InProcess::start(&self.name, &env).await;
            let line = kite_kit::ready::parse(&ready.line()).expect("a ready line");
            self.port = line.port().unwrap_or(0);
            self.url = ready.url.clone().unwrap_or_default();
            self.metrics_url = ready.metrics_url.clone().unwrap_or_default();
            *slot = Some(run);
            return;
        }
        let logs = self.logs.clone();
        let output = Output {
            stdout: discard(),
            stderr: Some(std::sync::Arc::new(move |l: &str| {
                if let Ok(mut v) = logs.lock() {
                    v.push(l.to_owned());
                }
            })),
        };
        let child = match KiteProcess::start(&kite_bin(), &env, output, READY_TIMEOUT).await {
            Ok(child) => child,
            Err(e) => {
                let logs = self.logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("{} did not become ready ({e}):\n{logs}", self.name)
            }
        };
        self.port = child.ready().port().unwrap_or(0);
        self.url = child.url().unwrap_or_default().to_owned();
        self.metrics_url = child.ready().metrics_url.clone().unwrap_or_default();
        self.run = Run::Process(Some(Box::new(child)));
    }

    /// SIGKILLs the process (an instance started with [`Instance::process_with`]).
    pub async fn kill(&mut self) {
        let Run::Process(child) = &mut self.run else {
            panic!(
                "{}: only a process can be killed; start it with Instance::process_with",
                self.name
            )
        };
        if let Some(mut c) = child.take() {
            c.kill().await;
        }
    }

    /// Stops an instance running in this process as its shutdown signal does, and waits for
    /// the end.
    pub async fn stop(&mut self) {
        if let Run::InProcess(Some(run)) = std::mem::replace(&mut self.run, Run::InProcess(None)) {
            tokio::task::spawn_blocking(move || run.stop())
                .await
                .expect("stopped");
        }
    }

    /// Database URL of this instance.
    pub fn db_url(&self) -> String {
        format!("{}/{}", self.pg, self.db_name)
    }

    /// A direct connection to this instance's database (for counting rows).
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(conn);
        client
    }

    /// Number of stored events with this CloudEvent id.
    pub async fn count_events(&self, ce_id: &str) -> i64 {
        self.db()
            .await
            .query_one("SELECT count(*) FROM events WHERE ce_id = $1", &[&ce_id])
            .await
            .expect("count")
            .get(0)
    }

    /// Number of stored events (webhooks and peers' events: not kite's own operational
    /// events, which changes of peers make on their own time).
    pub async fn total_events(&self) -> i64 {
        self.db()
            .await
            .query_one(
                "SELECT count(*) FROM events WHERE hook_source <> '_kite'",
                &[],
            )
            .await
            .expect("count")
            .get(0)
    }

    /// The kit's API client for this instance.
    pub fn client(&self) -> kite_kit::client::ApiClient {
        kite_kit::client::ApiClient::with_http(self.http.clone(), &self.url, &self.key)
    }

    /// A client of this instance with another API key.
    pub fn client_with_key(&self, key: &str) -> kite_kit::client::ApiClient {
        kite_kit::client::ApiClient::with_http(self.http.clone(), &self.url, key)
    }

    /// An admin API call.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let a = self
            .client()
            .call(method, path, body.as_ref())
            .await
            .expect("request");
        (a.status, a.body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::DELETE, path, None).await
    }

    /// Posts a webhook body to `/hooks/default/{source}`.
    pub async fn hook(&self, source: &str, body: &Value) -> (u16, Value) {
        self.hook_with(source, body, &[]).await
    }

    /// Posts a webhook with extra headers.
    pub async fn hook_with(
        &self,
        source: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/hooks/default/{source}", self.url))
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("hook request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Outbox rows (all pages) matching a query string such as `peer_id=..&status=..`.
    pub async fn outbox(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = 0i64;
        loop {
            let (s, v) = self
                .get(&format!(
                    "/api/federation/outbox?{query}&limit=1000&cursor={cursor}"
                ))
                .await;
            assert_eq!(s, 200, "outbox listing: {v}");
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_i64() {
                Some(c) => cursor = c,
                None => return out,
            }
        }
    }

    /// The stored event with this CloudEvent id, as the events API shows it.
    pub async fn event(&self, ce_id: &str) -> Option<Value> {
        let (s, v) = self.get("/api/events?limit=1000").await;
        assert_eq!(s, 200);
        v["items"]
            .as_array()?
            .iter()
            .find(|e| e["event"]["id"] == ce_id)
            .cloned()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(l) = self.logs.lock() {
                eprintln!("--- {} logs ---\n{}", self.name, l.join("\n"));
            }
        }
        match &mut self.run {
            Run::Process(child) => {
                if let Some(mut c) = child.take() {
                    c.start_kill();
                }
            }
            Run::InProcess(run) => {
                if let Some(run) = run.take() {
                    run.stop();
                }
            }
        }
        let db_url = self.db_url();
        let pg = self.pg.clone();
        let db_name = self.db_name.clone();
        let prefix = self.prefix.clone();
        let tiers = self.max_attempts.saturating_sub(1).max(1);
        // Clean up on a runtime of our own: Drop may run inside or outside a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(cleanup(&pg, db_url, db_name, prefix, tiers));
        })
        .join();
    }
}

/// Removes what an instance made: its AMQP objects under `prefix` and its database.
pub async fn cleanup(pg: &str, db_url: String, db_name: String, prefix: String, tiers: u32) {
    let mut peer_ids = Vec::new();
    if let Ok((client, conn)) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await {
        let task = tokio::spawn(conn);
        if let Ok(rows) = client.query("SELECT id::text FROM peers", &[]).await {
            peer_ids = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        }
        drop(client);
        let _ = task.await;
    }
    if let Ok(bus) = kite_bus::Bus::connect(&amqp_url(), &prefix, Duration::from_secs(5)).await {
        let _ = bus.teardown(&peer_ids, tiers).await;
        bus.close().await;
    }
    drop_database(pg, &db_name).await;
}

/// Drops a test database on the server at `pg`, whoever is still connected to it.
pub async fn drop_database(pg: &str, db_name: &str) {
    if let Ok((client, conn)) =
        tokio_postgres::connect(&format!("{pg}/postgres"), tokio_postgres::NoTls).await
    {
        let task = tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
        drop(client);
        let _ = task.await;
    }
}

/// Peers `from` to `to`: a token minted on `to`, trusted there, and a peer on `from`.
/// Answers the peer id on `from` and the token.
pub async fn peer(
    from: &Instance,
    to: &Instance,
    scopes: &[&str],
    max_hops: u32,
) -> (String, String) {
    kite_kit::client::peer(
        &from.client(),
        &from.name,
        &to.client(),
        &to.name,
        "default",
        scopes,
        max_hops,
    )
    .await
    .expect("peer A with B")
}

/// Creates a peer record on `on`.
pub async fn add_peer(
    on: &Instance,
    name: &str,
    url: &str,
    token: &str,
    scopes: &[&str],
    max_hops: u32,
) -> String {
    on.client()
        .create_peer(name, url, token, scopes, max_hops)
        .await
        .expect("create peer")
}

/// Writes an active peer `name` at `url` straight into `on`'s database, behind the API's
/// back: a URL the API refuses, as if its host had resolved elsewhere when the peer was made
/// and resolves to a private address now (DNS rebinding).
pub async fn insert_peer_row(on: &Instance, name: &str, url: &str) {
    on.db()
        .await
        .execute(
            "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status)
             VALUES (gen_random_uuid(), 'default', $1, $2, 'kfed_x', ARRAY['*'], 3, 'active')",
            &[&name, &url],
        )
        .await
        .expect("insert peer row");
}

/// Sends Stripe hooks to `on` (ids `{prefix}_1`, `{prefix}_2`, ...) until a delivery has
/// been attempted, and answers that outbox row. The caches learn of a peer written behind
/// the API's back a moment later; until then an event routes without it.
pub async fn hook_until_attempted(on: &Instance, prefix: &str, timeout: Duration) -> Value {
    let mut tries = 0;
    eventually("an attempt", timeout, || {
        tries += 1;
        async move {
            on.hook("stripe", &stripe_event(&format!("{prefix}_{tries}"), "x"))
                .await;
            on.outbox("")
                .await
                .into_iter()
                .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
        }
    })
    .await
}

/// Asserts that an outbox row's last attempt was refused by the SSRF guard at connect time.
pub fn assert_refused_by_guard(row: &Value) {
    assert!(
        row["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("forbidden destination"),
        "{row}"
    );
}

/// Polls `f` until it returns Some or the deadline passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Stripe-shaped webhook body.
pub fn stripe_event(id: &str, ty: &str) -> Value {
    json!({"id": id, "object": "event", "type": ty,
           "data": {"object": {"id": format!("pi_{id}"), "amount": 1000}}})
}

/// Posts a GitHub-shaped webhook.
pub async fn github_push(inst: &Instance, delivery: &str) -> (u16, Value) {
    inst.hook_with(
        "github",
        &json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"}}),
        &[("x-github-event", "push"), ("x-github-delivery", delivery)],
    )
    .await
}

/// Another process of an instance (same database and AMQP prefix) running only some roles.
pub struct Proc {
    env: KiteEnv,
    /// What is run: the kite binary, or a wrapper that runs it elsewhere (a namespace).
    bin: std::path::PathBuf,
    child: Option<KiteProcess>,
    /// The process' URL when it runs the ingress role.
    pub url: Option<String>,
}

impl Proc {
    /// Starts `kite serve` with the instance's environment and `KITE_ROLES=roles`.
    pub async fn start(of: &Instance, roles: &str) -> Self {
        Self::start_as(of, roles, kite_bin(), &[]).await
    }

    /// The same run by `bin` (a wrapper running kite in a test's own network namespace),
    /// with `overrides` of the instance's environment (its servers' addresses there).
    pub async fn start_as(
        of: &Instance,
        roles: &str,
        bin: std::path::PathBuf,
        overrides: &[(&str, &str)],
    ) -> Self {
        let mut env = of.env.clone();
        env.set("KITE_ROLES", roles)
            .set("KITE_PORT", "0")
            .extend(overrides.iter().copied());
        let mut p = Self {
            env,
            bin,
            child: None,
            url: None,
        };
        p.spawn().await;
        p
    }

    /// (Re)starts the process and waits for its ready line.
    pub async fn spawn(&mut self) {
        let child = KiteProcess::start(&self.bin, &self.env, Output::inherit(), READY_TIMEOUT)
            .await
            .expect("role process became ready");
        self.url = child.url().map(str::to_owned);
        self.child = Some(child);
    }

    /// SIGKILLs the process.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await;
        }
    }
}

impl Instance {
    /// The process id of the instance's main process.
    pub fn pid(&self) -> Option<u32> {
        match &self.run {
            Run::Process(Some(c)) => c.pid(),
            _ => None,
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; answers the exit success.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        match &mut self.run {
            Run::Process(child) => child.take()?.terminate(timeout).await,
            Run::InProcess(_) => None,
        }
    }

    /// Closes this instance's AMQP connections from the broker side (they carry the prefix
    /// as their connection name). Answers how many were closed.
    pub async fn close_amqp_connections(&self) -> usize {
        kite_kit::faults::close_amqp_connections(&self.prefix, "fault test")
            .await
            .expect("rabbitmqctl")
    }

    /// Terminates every Postgres backend connected to this instance's database.
    pub async fn terminate_db_connections(&self) -> i64 {
        kite_kit::faults::terminate_db_connections(
            &format!("{}/postgres", pg_server()),
            &self.db_name,
        )
        .await
        .expect("terminate")
    }

    /// Purges one of this instance's queues (`events` or `deliver.{peer}`), losing its messages.
    pub async fn purge_queue(&self, suffix: &str) {
        let name = format!("{}.{suffix}", self.prefix);
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_purge(name.into(), lapin::options::QueuePurgeOptions::default())
            .await
            .expect("purge");
        let _ = conn.close(200, "bye".into()).await;
    }
}

/// `GET /health`: the status and the JSON answer.
pub async fn health(inst: &Instance) -> (u16, Value) {
    let r = inst
        .http
        .get(format!("{}/health", inst.url))
        .send()
        .await
        .expect("health");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A peer on `on` whose URL points at a free port where nothing listens (yet). Answers the
/// peer id, the token it sends, and the port.
pub async fn peer_at_free_port(on: &Instance) -> (String, String, u16) {
    let port = free_port();
    let token = kite_wire::token::mint_federation_token();
    let id = add_peer(
        on,
        "instance-b",
        &format!("http://127.0.0.1:{port}/hooks/default/kite"),
        &token,
        &["*"],
        3,
    )
    .await;
    (id, token, port)
}

/// A fresh directory under the system's temp dir, removed on drop (pass or fail).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let d = std::env::temp_dir().join(format!("kite-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How an instance runs: a `kite serve` process, or in this process.
enum Run {
    /// A child process (none while killed or stopped).
    Process(Option<Box<KiteProcess>>),
    /// In this process (none while stopped).
    InProcess(Option<InProcess>),
}

/// `kite serve`'s settings, parsed as the binary parses them.
#[derive(Debug, clap::Parser)]
struct ServeFlags {
    #[command(flatten)]
    serve: kite::settings::Settings,
}

/// An instance running in this process: `kite::serve::run` on a runtime and a thread of its
/// own (so a test's blocking call never stalls it), stopped by its shutdown signal.
struct InProcess {
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts one with the settings `env` names (environment variable names, given as
    /// flags, so the test process' own environment never decides them) and waits until it is
    /// ready.
    async fn start(name: &str, env: &KiteEnv) -> (Self, kite::serve::Ready) {
        use clap::{CommandFactory, Parser};
        let command = ServeFlags::command();
        let mut args = vec!["kite-serve".to_string()];
        for (k, v) in env.vars() {
            if k == "RUST_LOG" {
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
                .unwrap_or_else(|| panic!("{k} is not a setting of kite serve"));
            let long = arg.get_long().expect("every setting has a flag");
            if arg.get_action().takes_values() {
                args.push(format!("--{long}={v}"));
            } else if matches!(v.as_str(), "true" | "1") {
                args.push(format!("--{long}"));
            }
        }
        if env.get("KITE_SHUTDOWN_GRACE_MS").is_none() {
            args.push("--shutdown-grace-ms=2000".into());
        }
        let flags = ServeFlags::try_parse_from(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stop = tokio_util::sync::CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let (token, fail) = (stop.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let ended = rt.block_on(kite::serve::run(flags.serve, token, move |r| {
                    let _ = ready_tx.send(r);
                }));
                if let Err(e) = ended {
                    if let Ok(mut f) = fail.lock() {
                        *f = Some(format!("{e:#}"));
                    }
                }
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("a thread");
        let mut run = Self {
            stop,
            thread: Some(thread),
        };
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(ready)) => (run, ready),
            _ => {
                run.stop.cancel();
                if let Some(t) = run.thread.take() {
                    let _ = t.join();
                }
                let why = failed.lock().ok().and_then(|f| f.clone());
                panic!("{name} did not become ready: {why:?}")
            }
        }
    }

    /// Signals shutdown and waits for the instance to end.
    fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
