//! `kite demo`: two federated instances on this machine, a sample Stripe event relayed
//! from A to B, then both kept running for the README's walkthrough.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kite_kit::admin::AdminClient;
use kite_kit::process::{KiteEnv, KiteProcess, Output, READY_TIMEOUT};
use serde_json::{json, Value};
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
    /// Postgres server URL (without database); the demo uses databases kite_demo_a and kite_demo_b.
    #[arg(
        long,
        env = "KITE_PG_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub pg_server: String,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "KITE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Exit after the sample event arrives instead of keeping the instances running.
    #[arg(long)]
    pub once: bool,
}

struct Instance {
    name: &'static str,
    url: String,
    key: String,
    child: KiteProcess,
}

async fn reset_database(server: &str, db: &str) -> anyhow::Result<()> {
    let (client, conn) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to Postgres")?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping {db}"))?;
    drop(client);
    let _ = task.await;
    Ok(())
}

async fn start(name: &'static str, port: u16, a: &DemoArgs) -> anyhow::Result<Instance> {
    let db = format!("kite_demo_{}", &name[name.len() - 1..]);
    reset_database(&a.pg_server, &db).await?;
    let key = kite_protocol::token::mint_api_key();
    let exe = std::env::current_exe().context("locating the kite binary")?;
    let mut env = KiteEnv::loopback(
        name,
        &format!("{}/{db}", a.pg_server),
        &a.amqp_url,
        &format!("kite.demo.{name}"),
        &key,
    );
    env.set("KITE_PORT", port.to_string())
        .set(
            "KITE_SECRET_KEY",
            kite_protocol::secret_box::SecretBox::generate_key(),
        )
        .set(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let child = KiteProcess::start(&exe, &env, Output::inherit(), READY_TIMEOUT)
        .await
        .with_context(|| format!("starting {name}"))?;
    let url = child
        .url()
        .with_context(|| format!("{name} printed no url"))?
        .to_owned();
    Ok(Instance {
        name,
        url,
        key,
        child,
    })
}

/// Runs the demo.
pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let mut instances = Vec::new();
    for (name, port) in [("instance-a", a.port_a), ("instance-b", a.port_b)] {
        instances.push(start(name, port, &a).await?);
    }
    let (ia, ib) = (&instances[0], &instances[1]);
    let http = reqwest::Client::new();

    // Peering A -> B: a token minted on B, trusted on B, used by A's peer record.
    let admin = |i: &Instance| AdminClient::with_http(http.clone(), &i.url, &i.key);
    kite_kit::admin::peer(
        &admin(ia),
        ia.name,
        &admin(ib),
        ib.name,
        "default",
        &["stripe.*"],
        3,
    )
    .await
    .context("peering instance-a with instance-b")?;
    println!("peered instance-a -> instance-b (scopes [\"stripe.*\"])");

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

    println!();
    for i in &instances {
        println!("{}  {}  admin key: {}", i.name, i.url, i.key);
    }
    println!("\nexport A_URL={} A_KEY={}", ia.url, ia.key);
    println!("export B_URL={} B_KEY={}", ib.url, ib.key);
    if !a.once {
        println!("\nboth instances keep running; Ctrl-C stops them and removes their data. Try:");
        println!(
            "  kite listen --instance {} --source kite --api-key {}",
            ib.url, ib.key
        );
        tokio::signal::ctrl_c().await?;
    }
    for mut i in instances {
        i.child.kill().await;
        if let Err(e) = remove(&a, &i).await {
            eprintln!("kite demo: could not remove {}'s data: {e:#}", i.name);
        }
    }
    Ok(())
}

/// Drops a demo instance's database and AMQP objects.
async fn remove(a: &DemoArgs, i: &Instance) -> anyhow::Result<()> {
    let db = format!("kite_demo_{}", &i.name[i.name.len() - 1..]);
    let (client, conn) =
        tokio_postgres::connect(&format!("{}/{db}", a.pg_server), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let peers: Vec<String> = client
        .query("SELECT id::text FROM peers", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let _ = task.await;
    let bus = kite_bus::Bus::connect(
        &a.amqp_url,
        &format!("kite.demo.{}", i.name),
        Duration::from_secs(5),
    )
    .await?;
    bus.teardown(&peers, kite_delivery::RetryPolicy::default().tiers())
        .await?;
    bus.close().await;
    reset_database(&a.pg_server, &db).await
}
