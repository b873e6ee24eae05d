//! `kite demo`: two federated instances on this machine, a sample Stripe event relayed
//! from A to B, then both kept running for the README's walkthrough.
//!
//! It checks before it touches anything: its ports are free, Postgres and RabbitMQ answer,
//! no other demo of the same name runs against that Postgres (it holds an advisory lock for
//! its whole life) and nothing else is connected to its databases. Only then does it drop
//! and recreate them. Ctrl-C (or SIGTERM), at any point, stops what it started and removes
//! what it made; a second Ctrl-C exits at once.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kite_kit::client::ApiClient;
use kite_kit::process::{KiteEnv, KiteProcess, Output, READY_TIMEOUT};
use serde_json::{json, Value};
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::Message;

/// `kite demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Port of instance-a.
    #[arg(long, default_value_t = 7701)]
    pub port_a: u16,
    /// Port of instance-b.
    #[arg(long, default_value_t = 7702)]
    pub port_b: u16,
    /// The Postgres server, as `kite serve` takes it; the demo replaces its database name
    /// with its own two (`{name}_a`, `{name}_b`).
    #[arg(
        long,
        env = "KITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/kite"
    )]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Name of this demo: its databases are `{name}_a` and `{name}_b`, its AMQP prefixes
    /// `{name}.instance-a` and `{name}.instance-b`. Demos with different names (and ports)
    /// run side by side.
    #[arg(long, default_value = "kite_demo", value_parser = demo_name)]
    pub name: String,
    /// Exit after the sample event arrives instead of keeping the instances running.
    #[arg(long)]
    pub once: bool,
}

/// A demo name: lower-case letters, digits and `_`, starting with a letter (it becomes a
/// database name unquoted).
fn demo_name(s: &str) -> Result<String, String> {
    let ok = s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1-40 of a-z, 0-9 and _, starting with a letter".into())
    }
}

/// `url` (a `postgres://` URL or a libpq `key=value` string) naming database `db` instead.
fn with_database(url: &str, db: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let authority = main.split('/').next().unwrap_or(main);
        let mut out = format!("{scheme}://{authority}/{db}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    } else {
        let mut parts: Vec<String> = url
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("dbname={db}"));
        parts.join(" ")
    }
}

/// One of the demo's two instances, as planned before anything starts.
struct Side {
    name: &'static str,
    port: u16,
    db: String,
    db_url: String,
    prefix: String,
}

impl Side {
    fn new(a: &DemoArgs, name: &'static str, letter: char, port: u16) -> Self {
        let db = format!("{}_{letter}", a.name);
        Self {
            name,
            port,
            db_url: with_database(&a.database_url, &db),
            db,
            prefix: format!("{}.{name}", a.name),
        }
    }
}

/// A started instance.
struct Instance {
    name: &'static str,
    url: String,
    key: String,
    child: KiteProcess,
}

const SETTING: &str = "--database-url / KITE_DATABASE_URL";

/// Refuses ports that something already listens on (another demo, most likely).
fn check_ports(sides: &[Side]) -> anyhow::Result<()> {
    if sides[0].port == sides[1].port {
        bail!("--port-a and --port-b are both {}", sides[0].port);
    }
    for s in sides {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", s.port)) {
            bail!(
                "port {} (for {}) on 127.0.0.1 is taken ({e}): is another kite demo running? \
                 Stop it, or pick other ports with --port-a/--port-b (and another --name)",
                s.port,
                s.name
            );
        }
    }
    Ok(())
}

/// The demo's connection to the server's `postgres` database, held for the demo's life with
/// the demo's advisory lock taken on it.
struct Claim {
    client: tokio_postgres::Client,
}

impl Claim {
    /// Connects, takes the lock of demo `name` and checks that no other process is connected
    /// to the demo's databases.
    async fn take(a: &DemoArgs, sides: &[Side]) -> anyhow::Result<Self> {
        let url = with_database(&a.database_url, "postgres");
        let (client, conn) = crate::startup::reach(
            "Postgres",
            &url,
            SETTING,
            |e: &tokio_postgres::Error| e.as_db_error().is_none(),
            || tokio_postgres::connect(&url, NoTls),
        )
        .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("kite demo: lost its Postgres connection: {e}");
            }
        });
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext($1))",
                &[&format!("kite demo {}", a.name)],
            )
            .await
            .context("taking the demo's advisory lock")?
            .try_get(0)?;
        if !got {
            bail!(
                "another kite demo named {} is running against this Postgres (databases {} and {}): \
                 stop it (Ctrl-C in its terminal), or run this one with another --name and other \
                 --port-a/--port-b",
                a.name,
                sides[0].db,
                sides[1].db
            );
        }
        let claim = Self { client };
        for s in sides {
            let n = claim.connections(&s.db).await?;
            if n > 0 {
                bail!(
                    "database {} has {n} connection(s) from another process; kite demo drops and \
                     recreates it, so it stops here: stop that process, or pass another --name",
                    s.db
                );
            }
        }
        Ok(claim)
    }

    /// Connections to database `db` (none of them the demo's own).
    async fn connections(&self, db: &str) -> anyhow::Result<i64> {
        Ok(self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .with_context(|| format!("counting connections to {db}"))?
            .try_get(0)?)
    }

    /// Drops database `db` once no one is connected to it (never forcing anyone off):
    /// stopped instances' connections close within moments; others are waited for up to
    /// `patience`, then the database is left in place.
    async fn drop_database(&self, db: &str, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let n = self.connections(db).await?;
            if n == 0 {
                match self
                    .client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\""))
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) if e.code() != Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                        return Err(e).with_context(|| format!("dropping {db}"));
                    }
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{db} still has {n} connection(s) from another process: left in place");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// SIGINT and SIGTERM, as a stream of `()`; the handlers are in place when this returns.
#[cfg(unix)]
fn interrupts() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Ctrl-C, as a stream of `()`.
#[cfg(not(unix))]
fn interrupts() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

async fn start(side: &Side, a: &DemoArgs) -> anyhow::Result<Instance> {
    let key = kite_wire::token::mint_api_key();
    let exe = std::env::current_exe().context("locating the kite binary")?;
    let mut env = KiteEnv::loopback(side.name, &side.db_url, &a.amqp_url, &side.prefix, &key);
    env.set("KITE_PORT", side.port.to_string())
        .set(
            "KITE_SECRET_KEY",
            kite_wire::secret_box::SecretBox::generate_key(),
        )
        .set(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let child = KiteProcess::start(&exe, &env, Output::inherit(), READY_TIMEOUT)
        .await
        .with_context(|| format!("starting {}", side.name))?;
    let url = child
        .url()
        .with_context(|| format!("{} printed no url", side.name))?
        .to_owned();
    Ok(Instance {
        name: side.name,
        url,
        key,
        child,
    })
}

/// Starts both instances (into `started`, so what did start is stopped whatever happens),
/// peers A → B, relays the sample event and prints how to go on.
async fn run(
    a: &DemoArgs,
    sides: &[Side],
    claim: &Claim,
    started: &mut Vec<Instance>,
) -> anyhow::Result<()> {
    for s in sides {
        claim.drop_database(&s.db, Duration::ZERO).await?;
    }
    for s in sides {
        println!(
            "starting {} on http://127.0.0.1:{} (database {}, AMQP prefix {})",
            s.name, s.port, s.db, s.prefix
        );
        started.push(start(s, a).await?);
    }
    let (ia, ib) = (&started[0], &started[1]);
    let http = reqwest::Client::new();

    // Peering by invitation: A invites (sending stripe.*), B accepts; both then hold a peer
    // for the other with the other's identity keys pinned.
    let admin = |i: &Instance| ApiClient::with_http(http.clone(), &i.url, &i.key);
    kite_kit::client::peer_by_invitation(&admin(ia), &admin(ib), &["stripe.*"], 3)
        .await
        .context("peering instance-a with instance-b by invitation")?;
    println!(
        "peered instance-a <-> instance-b by invitation (kite peer invite on A, kite peer accept on B; scopes [\"stripe.*\"])"
    );

    relay_sample(&http, ia, ib).await?;

    print_next_steps(a, started);
    Ok(())
}

/// Sends the sample Stripe event to instance A and waits (30 s at most) for it to arrive
/// on instance B's stream, which is opened first.
async fn relay_sample(http: &reqwest::Client, ia: &Instance, ib: &Instance) -> anyhow::Result<()> {
    // Listen on B before sending, so the relayed event is seen arriving.
    let (mut ws, _) = tokio_tungstenite::connect_async(crate::listen::ws_url(&ib.url)?).await?;
    ws.send(Message::Text(
        json!({"type":"connect","version":1,"token":ib.key,"team_id":"default","scopes":["source:kite"]})
            .to_string()
            .into(),
    ))
    .await?;

    let sample = json!({"id":"evt_demo_1","object":"event","type":"payment_intent.succeeded",
        "data":{"object":{"id":"pi_demo_1","amount":2000,"currency":"usd"}}});
    let r = http
        .post(format!("{}/hooks/default/stripe", ia.url))
        .json(&sample)
        .send()
        .await?;
    println!(
        "sent a sample Stripe event to instance-a: {} {}",
        r.status(),
        r.text().await.unwrap_or_default()
    );

    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg? {
                let f: Value = serde_json::from_str(&t)?;
                if f["type"] == "event" {
                    return Ok::<Value, anyhow::Error>(f);
                }
            }
        }
        bail!("stream closed")
    })
    .await
    .context("the event did not reach instance-b within 30 s")??;
    let seq = arrived["seq"].as_i64().unwrap_or(0);
    println!(
        "instance-b received: {}",
        crate::listen::render_line(seq, &arrived["event"])
    );

    Ok(())
}

/// Prints the instances' URLs, keys, dashboards and metrics, and (unless `--once`, which
/// stops them) the lines to paste and what to try next.
fn print_next_steps(a: &DemoArgs, started: &[Instance]) {
    println!();
    for i in started.iter() {
        println!("{}  {}  admin key: {}", i.name, i.url, i.key);
        println!("  dashboard: {}/ui   metrics: {}/metrics", i.url, i.url);
    }
    if a.once {
        println!("\n--once: both instances stop now");
        return;
    }
    let (ia, ib) = (&started[0], &started[1]);
    println!("\nPaste these lines into the shell you try kite in:\n");
    println!("export A_URL={} A_KEY={}", ia.url, ia.key);
    println!("export B_URL={} B_KEY={}", ib.url, ib.key);
    if let Some(dir) = kite_dir_off_path() {
        println!("export PATH=\"{}:$PATH\"", dir.display());
    }
    println!("\nboth instances keep running; Ctrl-C stops them and removes their data. Try:");
    println!("  kite listen --instance $B_URL --source kite --api-key $B_KEY");
    println!("  kite peer --instance $A_URL --api-key $A_KEY list");
    println!("  kite trigger --instance $A_URL stripe payment_intent.succeeded");
}

/// The directory of this `kite` binary, when a bare `kite` would not find it on the PATH.
fn kite_dir_off_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|p| p.join("kite"))
        .find(|k| k.is_file());
    match found {
        Some(k) if k.canonicalize().ok() == exe.canonicalize().ok() => None,
        _ => Some(dir),
    }
}

/// Stops what was started and removes both instances' databases and AMQP objects.
async fn clean_up(a: &DemoArgs, sides: &[Side], claim: &Claim, started: Vec<Instance>) {
    for i in started {
        println!("stopping {} ({})", i.name, i.url);
        if i.child.terminate(Duration::from_secs(10)).await.is_none() {
            println!("{} did not stop within 10 s: killed", i.name);
        }
    }
    for s in sides {
        match remove(a, s, claim).await {
            Ok(()) => println!(
                "removed {}'s database {} and AMQP objects {}.*",
                s.name, s.db, s.prefix
            ),
            Err(e) => eprintln!("kite demo: could not remove {}'s data: {e:#}", s.name),
        }
    }
}

/// Drops a demo instance's AMQP objects and database.
async fn remove(a: &DemoArgs, s: &Side, claim: &Claim) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    if let Ok((client, conn)) = tokio_postgres::connect(&s.db_url, NoTls).await {
        let task = tokio::spawn(conn);
        if let Ok(rows) = client.query("SELECT id::text FROM peers", &[]).await {
            peers = rows
                .iter()
                .filter_map(|r| r.try_get::<_, String>(0).ok())
                .collect();
        }
        drop(client);
        let _ = task.await;
    }
    let bus = kite_bus::Bus::connect(&a.amqp_url, &s.prefix, Duration::from_secs(5))
        .await
        .context("connecting to RabbitMQ")?;
    bus.teardown(&peers, kite_delivery::RetryPolicy::default().tiers())
        .await
        .context("deleting AMQP objects")?;
    bus.close().await;
    claim.drop_database(&s.db, Duration::from_secs(15)).await
}

/// Runs the demo.
pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let sides = [
        Side::new(&a, "instance-a", 'a', a.port_a),
        Side::new(&a, "instance-b", 'b', a.port_b),
    ];
    // Checks first: nothing is touched until all of them pass.
    check_ports(&sides)?;
    let mut signals = interrupts()?;
    let checks = async {
        let claim = Claim::take(&a, &sides).await?;
        crate::startup::connect_bus(&a.amqp_url, &format!("{}.check", a.name))
            .await?
            .close()
            .await;
        anyhow::Ok(claim)
    };
    let claim = tokio::select! {
        c = checks => c?,
        _ = signals.recv() => bail!("interrupted before anything was started"),
    };

    let mut started = Vec::new();
    let outcome = {
        let go = run(&a, &sides, &claim, &mut started);
        tokio::select! {
            r = go => r.map(|()| true),
            _ = signals.recv() => Ok(false),
        }
    };
    let mut interrupted = matches!(outcome, Ok(false));
    if matches!(outcome, Ok(true)) && !a.once {
        interrupted = signals.recv().await.is_some();
    }
    if interrupted {
        let mut what: Vec<&str> = started.iter().map(|i| i.name).collect();
        if what.len() < sides.len() && matches!(outcome, Ok(false)) {
            what.push("the instance that was starting");
        }
        println!(
            "\ninterrupted: stopping {}; removing databases {} and {} and AMQP objects {}.*",
            what.join(" and "),
            sides[0].db,
            sides[1].db,
            a.name
        );
    }
    // A second interrupt does not wait for the clean-up.
    tokio::spawn(async move {
        if signals.recv().await.is_some() {
            eprintln!("kite demo: interrupted again: exiting without finishing the clean-up");
            std::process::exit(130);
        }
    });
    clean_up(&a, &sides, &claim, started).await;
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => bail!("interrupted during start-up"),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{demo_name, with_database};

    #[test]
    fn database_urls_name_the_demo_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/kite", "kite_demo_a"),
            "postgres://postgres@127.0.0.1:5432/kite_demo_a"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432?sslmode=disable", "x"),
            "postgres://u:p@db:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("host=db user=postgres dbname=kite", "x"),
            "host=db user=postgres dbname=x"
        );
    }

    #[test]
    fn demo_names_are_plain_identifiers() {
        assert!(demo_name("kite_demo").is_ok());
        assert!(demo_name("Kite").is_err());
        assert!(demo_name("a;drop").is_err());
        assert!(demo_name("1a").is_err());
    }
}
