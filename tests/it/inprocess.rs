//! An instance started in this process through the `kite` library (`serve::run`), as an
//! embedding program or a test would: ready, serving, and stopped by its shutdown signal.

use crate::common;

use std::time::Duration;

use clap::Parser;
use common::*;
use kite::serve::{run, Ready};
use kite::settings::Settings;
use tokio_util::sync::CancellationToken;

/// `kite serve`'s flags, parsed as the binary parses them.
#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    serve: Settings,
}

#[tokio::test]
async fn an_instance_runs_in_process_until_its_shutdown_signal() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let db = format!("kite_inproc_{id}");
    let prefix = format!("kitetest.{id}");
    let key = format!("kite_{}_{}", &id[..8], uuid::Uuid::new_v4().simple());
    let flags = Flags::parse_from([
        "kite-serve",
        "--dev",
        "--port",
        "0",
        "--instance-id",
        "in-process",
        "--database-url",
        &format!("{}/{db}", pg_server()),
        "--amqp-url",
        &amqp_url(),
        "--amqp-prefix",
        &prefix,
        "--admin-key",
        &key,
        "--shutdown-grace-ms",
        "2000",
    ]);
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Ready>();
    let instance = tokio::spawn(run(flags.serve, stop.clone(), move |r| {
        let _ = ready_tx.send(r);
    }));
    let ready = tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .expect("ready in time")
        .expect("ready");
    assert_eq!(ready.instance_id, "in-process");
    assert_eq!(ready.roles, ["ingress", "router", "delivery"]);
    let url = ready.url.clone().expect("an ingress url");
    assert!(ready.line().starts_with(&format!("kite ready url={url} ")));

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let r = http
        .post(format!("{url}/hooks/default/stripe"))
        .json(&stripe_event("evt_inproc", "charge.succeeded"))
        .send()
        .await
        .expect("hook");
    assert_eq!(r.status(), 202);
    let (s, _) = {
        let r = http
            .get(format!("{url}/api/events"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("events");
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 200);

    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(20), instance)
        .await
        .expect("stopped within the grace period")
        .expect("joined");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        http.get(format!("{url}/health")).send().await.is_err(),
        "no longer serving"
    );

    // Leave nothing behind.
    cleanup(&pg_server(), format!("{}/{db}", pg_server()), db, prefix, 9).await;
}

#[tokio::test]
async fn run_returns_its_errors_to_the_embedding_program() {
    // Settings that contradict each other: `run` answers an error naming them (it never
    // exits the process, so this test goes on) and never calls `on_ready`.
    let flags = Flags::parse_from([
        "kite-serve",
        "--dev",
        "--retry-base-ms",
        "5000",
        "--retry-max-delay-ms",
        "10",
    ]);
    let ended = run(flags.serve, CancellationToken::new(), |_| {
        panic!("not ready with contradicting settings")
    })
    .await;
    let e = ended.expect_err("an error");
    assert!(e.to_string().contains("KITE_RETRY_MAX_DELAY_MS"), "{e:#}");

    // A TLS certificate that cannot be read: the same, naming the flags.
    let flags = Flags::parse_from([
        "kite-serve",
        "--dev",
        "--port",
        "0",
        "--metrics-addr",
        "off",
        "--database-url",
        &format!(
            "{}/kite_inproc_tls_{}",
            pg_server(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        "--amqp-url",
        &amqp_url(),
        "--amqp-prefix",
        &format!(
            "kitetest.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    let db = flags
        .serve
        .db
        .database_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let prefix = flags.serve.amqp_prefix.clone().unwrap_or_default();
    let ended = run(flags.serve, CancellationToken::new(), |_| {
        panic!("not ready without its certificate")
    })
    .await;
    let e = ended.expect_err("an error");
    assert!(format!("{e:#}").contains("--tls-cert"), "{e:#}");
    cleanup(&pg_server(), format!("{}/{db}", pg_server()), db, prefix, 9).await;
}
