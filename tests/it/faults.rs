//! Nothing lost, nothing doubled: crashes, broker and database connection loss, lost
//! messages, long peer outages, graceful shutdown and back-pressure, each counted at B.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

const DRAIN: Duration = Duration::from_secs(90);

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i}")).collect()
}

/// [`SWEEP`] for an instance whose deliveries must outlast a fault: 10 attempts each.
fn patient() -> Vec<(&'static str, &'static str)> {
    let mut env = SWEEP.to_vec();
    env.push(("KITE_RETRY_MAX_ATTEMPTS", "10"));
    env
}

/// Waits until `a` has stored at least `n` events.
async fn accepted_at_least(a: &Instance, n: i64) {
    eventually(&format!("{n} events accepted"), DRAIN, || async {
        (a.total_events().await >= n).then_some(())
    })
    .await;
}

/// Lost work is found fast: swept every 300 ms once 2 s overdue, and deliveries a process
/// handed itself (the local lane) are leased for 1.5 s only.
const SWEEP: [(&str, &str); 4] = [
    ("KITE_DELIVERY_LEASE_MS", "1500"),
    ("KITE_SWEEP_GRACE_MS", "2000"),
    ("KITE_SWEEP_INTERVAL_MS", "300"),
    ("KITE_PEER_PROBE_INTERVAL_MS", "300"),
];

#[tokio::test]
async fn sigkill_of_router_delivery_and_peer_processes_loses_nothing() {
    let mut env = patient();
    env.push(("KITE_ROLES", "ingress"));
    let a = Instance::process_with("instance-a", &env).await;
    let mut router = Proc::start(&a, "router").await;
    let mut delivery = Proc::start(&a, "delivery").await;
    let mut b = Instance::process_with("instance-b", &SWEEP).await;
    peer(&a, &b, &["*"], 3).await;

    let all = ids("evt_kill", 300);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(60),
    ));
    let a_db = a.db().await;
    let stored = |n: i64| {
        let db = &a_db;
        async move {
            let c: i64 = db
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .ok()?
                .get(0);
            (c >= n).then_some(())
        }
    };
    eventually("100 stored", DRAIN, || stored(100)).await;
    router.kill().await;
    router.spawn().await;
    eventually("150 stored", DRAIN, || stored(150)).await;
    delivery.kill().await;
    delivery.spawn().await;
    eventually("200 stored", DRAIN, || stored(200)).await;
    b.kill().await;
    b.spawn().await;
    let (accepted, _) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len(), "every event accepted");
    assert_all_once(&b, &accepted, DRAIN).await;
}

#[tokio::test]
async fn sigkill_of_a_combined_instance_loses_nothing() {
    let env = patient();
    let mut a = Instance::process_with("instance-a", &env).await;
    let b = Instance::process_with("instance-b", &SWEEP).await;
    peer(&a, &b, &["*"], 3).await;
    let all = ids("evt_killall", 200);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(60),
    ));
    let a_db = a.db().await;
    eventually("80 stored", DRAIN, || async {
        let c: i64 = a_db
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?
            .get(0);
        (c >= 80).then_some(())
    })
    .await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.spawn().await;
    let (accepted, statuses) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len(), "every event accepted eventually");
    assert!(statuses.contains(&0), "some requests hit the dead process");
    assert_all_once(&b, &accepted, DRAIN).await;
}

/// The frame size of each of this machine's broker connections named `name`, as the
/// broker negotiated it.
async fn frame_sizes(name: &str) -> Vec<u32> {
    let list = kite_kit::cmd::output(tokio::process::Command::new("rabbitmqctl").args([
        "-q",
        "list_connections",
        "--no-table-headers",
        "frame_max",
        "client_properties",
    ]))
    .await
    .expect("rabbitmqctl list_connections");
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    list.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split('\t').next()?.trim().parse().ok())
        .collect()
}

/// lapin holds 32 frames each way for a connection, zero-filled: at the broker's 128 KiB
/// frames that was 8 MiB resident. kite asks for 8 KiB frames unless its URL names a size.
#[tokio::test]
async fn the_broker_connection_uses_small_frames_unless_the_url_names_a_size() {
    let a = Instance::start("instance-a").await;
    let sizes = frame_sizes(&a.prefix).await;
    assert!(!sizes.is_empty(), "the instance's connection is listed");
    assert!(sizes.iter().all(|&s| s == 8192), "{sizes:?}");
    let url = format!("{}?frame_max=65536", amqp_url());
    let b = Instance::start_with("instance-b", &[("KITE_AMQP_URL", url.as_str())]).await;
    let sizes = frame_sizes(&b.prefix).await;
    assert!(!sizes.is_empty(), "the instance's connection is listed");
    assert!(sizes.iter().all(|&s| s == 65536), "{sizes:?}");
}

#[tokio::test]
async fn broker_connection_loss_loses_nothing() {
    let env = patient();
    let a = Instance::start_with("instance-a", &env).await;
    let b = Instance::start_with("instance-b", &SWEEP).await;
    let (peer_id, _) = peer(&a, &b, &["*"], 3).await;
    let all = ids("evt_amqp", 300);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(60),
    ));
    let mut closed = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        closed += a.close_amqp_connections().await;
    }
    assert!(closed >= 3, "closed {closed} connections");
    let (accepted, statuses) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len());
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 202 | 503)),
        "{statuses:?}"
    );
    assert_all_once(&b, &accepted, DRAIN).await;
    // Consumers reconnected: a new event still flows end to end.
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_amqp_after", "x"))
            .await
            .0,
        202
    );
    assert_all_once(&b, &["evt_amqp_after".to_string()], DRAIN).await;
    // A delivery's result is written just after the peer's answer (results share a write).
    let rows = eventually("every row delivered", DRAIN, || async {
        let rows = a
            .outbox(&format!("peer_id={peer_id}&status=delivered"))
            .await;
        (rows.len() > all.len()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), all.len() + 1);
}

#[tokio::test]
async fn database_connection_loss_answers_503_never_500_and_loses_nothing() {
    let env = patient();
    let a = Instance::start_with("instance-a", &env).await;
    let b = Instance::start_with("instance-b", &SWEEP).await;
    peer(&a, &b, &["*"], 3).await;
    let all = ids("evt_pgkill", 300);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(60),
    ));
    let mut terminated = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        terminated += a.terminate_db_connections().await;
    }
    assert!(terminated > 0);
    let (accepted, statuses) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len());
    assert!(
        !statuses.iter().any(|s| *s >= 500 && *s != 503),
        "{statuses:?}"
    );
    assert_all_once(&b, &accepted, DRAIN).await;
    assert_eq!(health(&a).await.0, 200);
}

/// Postgres restarted under load, fast and immediate, on a server of the test's own: requests
/// during the outage are answered 503 (never 202 without a commit), the pools and the LISTEN
/// connection come back, and every event answered 202 reaches the peer once.
#[tokio::test]
async fn postgres_restarts_fast_and_immediate_answer_503_and_lose_nothing() {
    use kite_kit::pg::{OwnPostgres, StopMode};
    let pg = OwnPostgres::start()
        .await
        .expect("a Postgres server of the test's own");
    let env = patient();
    let a = Instance::process_on("instance-a", &pg.url(), &env).await;
    let b = Instance::start_with("instance-b", &SWEEP).await;
    peer(&a, &b, &["*"], 3).await;
    let all = ids("evt_pgrestart", 600);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(90),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    pg.restart(StopMode::Fast).await.expect("fast restart");
    let fast = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    pg.restart(StopMode::Immediate)
        .await
        .expect("immediate restart");
    let immediate = t.elapsed();
    let (accepted, statuses) = sender.await.expect("sender");
    eprintln!(
        "postgres restarts: fast {fast:?}, immediate {immediate:?}; {} requests answered 503",
        statuses.iter().filter(|s| **s == 503).count()
    );
    assert_eq!(accepted.len(), all.len());
    // kite stayed up and answered every request: 503 while the database was away, never
    // another 5xx, never a dropped connection.
    assert!(
        !statuses.iter().any(|s| (*s >= 500 && *s != 503) || *s == 0),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "the restarts met no request");
    assert_all_once(&b, &accepted, DRAIN).await;
    // The LISTEN connection is back: a peer made now is routed to at once.
    let c = Instance::start_with("instance-c", &SWEEP).await;
    peer(&a, &c, &["*"], 3).await;
    let after = ids("evt_pgafter", 5);
    let (accepted, _) = provider_send(a.url.clone(), after, 2, Duration::from_secs(30)).await;
    assert_all_once(&c, &accepted, DRAIN).await;
    assert_eq!(health(&a).await.0, 200);
}

/// A node of a three-node RabbitMQ cluster of the test's own (quorum queues) killed under
/// load, then restarted: kite moves to another node, nothing is lost or doubled, and once the
/// cluster is whole again the peer is not stalled.
#[tokio::test]
async fn a_node_of_a_three_node_rabbitmq_cluster_killed_under_load_loses_nothing() {
    use kite_kit::rabbit::OwnCluster;
    let mut cluster = OwnCluster::start(3)
        .await
        .expect("a RabbitMQ cluster of the test's own");
    let urls = cluster.urls();
    let mut env = patient();
    env.push(("KITE_AMQP_URL", &urls));
    // Deliveries in processes of their own: every one crosses the broker (no local lane).
    env.push(("KITE_ROLES", "ingress,router"));
    let a = Instance::process_with("instance-a", &env).await;
    let _delivery = Proc::start(&a, "delivery").await;
    let b = Instance::start_with("instance-b", &SWEEP).await;
    peer(&a, &b, &["*"], 3).await;
    let all = ids("evt_rabbitkill", 400);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(90),
    ));
    // kite connects to the first node that answers: the first. It is killed once events
    // are flowing.
    accepted_at_least(&a, 50).await;
    cluster.kill(0).await.expect("kill the first node");
    let killed = std::time::Instant::now();
    let (accepted, statuses) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len(), "{statuses:?}");
    assert_all_once(&b, &accepted, DRAIN).await;
    eprintln!(
        "rabbitmq node killed: all {} delivered {:?} after; {} requests answered 503",
        accepted.len(),
        killed.elapsed(),
        statuses.iter().filter(|s| **s == 503).count()
    );
    // kite's processes moved to the nodes that stayed.
    let nodes = cluster
        .connections(1, &a.prefix)
        .await
        .expect("connections");
    assert!(nodes.len() >= 2, "{nodes:?}");
    assert!(
        nodes
            .iter()
            .all(|n| Some(n.as_str()) != cluster.node_name(0)),
        "{nodes:?}"
    );
    // Whole again: events keep flowing, none stalled.
    cluster.restart(0).await.expect("restart the first node");
    let after = ids("evt_rabbitwhole", 20);
    let (accepted, _) = provider_send(a.url.clone(), after, 4, Duration::from_secs(30)).await;
    assert_all_once(&b, &accepted, DRAIN).await;
    assert_eq!(health(&a).await.0, 200);
}

/// A partition: the delivery process of an instance in a network namespace of the test's
/// own, its link to the broker, the database and the peer cut under load until the broker
/// gives the process up, then healed. Nothing is lost or doubled, and deliveries resume
/// once the link is back.
#[tokio::test]
async fn a_delivery_process_cut_off_by_a_partition_resumes_when_it_heals() {
    use kite_kit::netns::Netns;
    use kite_kit::pg::OwnPostgres;
    use kite_kit::rabbit::OwnCluster;
    let ns = Netns::create()
        .await
        .expect("a network namespace of the test's own");
    let link = ns.host_ip.clone();
    let pg = OwnPostgres::start_on(&[&link]).await.expect("Postgres");
    let broker = OwnCluster::start_on(1, Some(&link))
        .await
        .expect("RabbitMQ");
    let urls = broker.urls();
    let mut env = patient();
    env.push(("KITE_AMQP_URL", &urls));
    env.push(("KITE_ROLES", "ingress,router"));
    let a = Instance::process_on("instance-a", &pg.url(), &env).await;
    // The peer listens on this side of the link, where the delivery process reaches it.
    let mut b_env: Vec<(&str, &str)> = SWEEP.to_vec();
    b_env.push(("KITE_HOST", &link));
    let b = Instance::start_with("instance-b", &b_env).await;
    peer(&a, &b, &["*"], 3).await;
    let dir = TempDir::new("partition");
    let wrapper = dir.0.join("kite-in-ns");
    ns.wrapper(&kite_bin(), &wrapper).expect("wrapper");
    let db = format!("{}/{}", pg.url_at(&link), a.db_name);
    // A connection the partition left dead on the broker's side is found by its heartbeat:
    // every 5 s here (RabbitMQ's default is 60 s).
    let amqp = format!("{}?heartbeat=5", broker.urls_at(&link));
    let _delivery = Proc::start_as(
        &a,
        "delivery",
        wrapper,
        &[("KITE_DATABASE_URL", &db), ("KITE_AMQP_URL", &amqp)],
    )
    .await;

    // The instance's connections to the broker (a process has one), the delivery
    // process' among them.
    let before = broker
        .connections(0, &a.prefix)
        .await
        .expect("connections")
        .len();
    let all = ids("evt_partition", 300);
    let sender = tokio::spawn(provider_send(
        a.url.clone(),
        all.clone(),
        8,
        Duration::from_secs(60),
    ));
    // Cut once events are flowing, and held while A accepts 150 more that the delivery
    // process cannot reach, until the broker has given the delivery process up (its
    // heartbeats missed): its connection is dead on both sides when the link heals, and
    // what it held went back to the queue.
    accepted_at_least(&a, 30).await;
    ns.cut().await.expect("cut");
    let cut = std::time::Instant::now();
    accepted_at_least(&a, 180).await;
    eventually("the broker drops the cut-off connection", DRAIN, || async {
        let now = broker.connections(0, &a.prefix).await.expect("connections");
        (now.len() < before).then_some(())
    })
    .await;
    let delivered_cut = b.total_events().await;
    let held = cut.elapsed();
    ns.heal().await.expect("heal");
    let healed = std::time::Instant::now();
    let (accepted, _) = sender.await.expect("sender");
    assert_eq!(accepted.len(), all.len());
    assert_all_once(&b, &accepted, DRAIN).await;
    eprintln!(
        "partition: cut for {held:?}, {delivered_cut} of 300 delivered before the link healed, all {} within {:?} after",
        accepted.len(),
        healed.elapsed()
    );
    assert!(delivered_cut < 300, "the cut met no delivery");
}

#[tokio::test]
async fn sweeper_heals_purged_queues_with_two_routers() {
    let mut env: Vec<(&str, &str)> = SWEEP.to_vec();
    env.push(("KITE_ROLES", "ingress,delivery"));
    let a = Instance::process_with("instance-a", &env).await;
    let b = Instance::process_with("instance-b", &SWEEP).await;
    let (peer_id, _) = peer(&a, &b, &["*"], 3).await;

    // No router yet: events wait in the events queue; purge it, then start two routers.
    let first = ids("evt_purge_ev", 20);
    let (accepted, _) =
        provider_send(a.url.clone(), first.clone(), 4, Duration::from_secs(20)).await;
    assert_eq!(accepted.len(), 20);
    a.purge_queue("events").await;
    let _r1 = Proc::start(&a, "router").await;
    let _r2 = Proc::start(&a, "router").await;
    assert_all_once(&b, &first, DRAIN).await;

    // Deliveries lost from a paused peer's queue come back after resume.
    a.patch(
        &format!("/api/federation/peers/{peer_id}"),
        json!({"status":"paused"}),
    )
    .await;
    let second = ids("evt_purge_dl", 20);
    provider_send(a.url.clone(), second.clone(), 4, Duration::from_secs(20)).await;
    let pending = eventually("20 pending", DRAIN, || async {
        let n = a
            .outbox(&format!("peer_id={peer_id}&status=pending"))
            .await
            .len();
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(pending, 20);
    a.purge_queue(&format!("deliver.{peer_id}")).await;
    a.patch(
        &format!("/api/federation/peers/{peer_id}"),
        json!({"status":"active"}),
    )
    .await;
    assert_all_once(&b, &second, DRAIN).await;
    assert_eq!(b.total_events().await, 40);
}

#[tokio::test]
async fn unreachable_peer_parks_deliveries_without_burning_attempts() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_RETRY_MAX_ATTEMPTS", "3"),
            ("KITE_PEER_FAILURE_THRESHOLD", "3"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "500"),
        ],
    )
    .await;
    let (peer_id, token, port) = peer_at_free_port(&a).await;
    let all = ids("evt_park", 10);
    for id in &all {
        assert_eq!(
            a.hook("stripe", &stripe_event(id, "charge.succeeded"))
                .await
                .0,
            202
        );
    }
    let p = eventually("peer unreachable", DRAIN, || async {
        let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
        (p["health"] == "unreachable").then_some(p)
    })
    .await;
    assert!(p["consecutive_failures"].as_i64().unwrap_or(0) >= 3, "{p}");
    assert!(
        p["last_error"].as_str().unwrap_or("").contains("connect"),
        "{p}"
    );
    assert!(p["last_error_at"].is_string());
    // Parked: over several probe intervals and retry delays, nothing goes dead and no
    // delivery spends its retry budget (its probes are attempts, but not failures).
    let attempts = |rows: Vec<serde_json::Value>| -> Vec<i64> {
        let mut v: Vec<i64> = rows
            .iter()
            .map(|r| r["failures"].as_i64().unwrap_or(-1))
            .collect();
        v.sort();
        v
    };
    // All ten routed (a slow router may still be writing the last rows).
    let before = eventually("ten rows", DRAIN, || async {
        let rows = a.outbox(&format!("peer_id={peer_id}")).await;
        (rows.len() == 10).then(|| attempts(rows))
    })
    .await;
    // Checked again and again across a window of several probe intervals and retry delays.
    let window = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < window {
        let rows = a.outbox(&format!("peer_id={peer_id}")).await;
        assert!(rows.iter().all(|r| r["status"] == "pending"), "{rows:?}");
        assert_eq!(attempts(rows), before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, list) = a.get("/api/federation/peers").await;
    assert_eq!(list["items"][0]["pending"], 10);
    assert_eq!(list["items"][0]["dead"], 0);
    assert_eq!(list["items"][0]["health"], "unreachable");

    // The peer comes up: a probe gets through and the parked deliveries flow.
    let b = Instance::start_with("instance-b", &[("KITE_PORT", &port.to_string())]).await;
    let (s, _) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"instance-a","inbound_token": token}),
        )
        .await;
    assert_eq!(s, 201);
    assert_all_once(&b, &all, DRAIN).await;
    let p = eventually("peer active again", DRAIN, || async {
        let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
        (p["health"] == "active" && p["pending"] == 0).then_some(p)
    })
    .await;
    assert!(p["last_success_at"].is_string());
    assert_eq!(p["dead"], 0);
}

/// A peer that takes `delay` to answer each delivery, counting completed ones.
async fn slow_sink(delay: Duration) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (s, d) = (started.clone(), done.clone());
    let app = axum::Router::new().route(
        "/hooks/default/kite",
        axum::routing::post(move || {
            let (s, d) = (s.clone(), d.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                d.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/default/kite",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, started, done)
}

#[tokio::test]
async fn sigterm_finishes_in_flight_deliveries_then_exits() {
    let mut a = Instance::process_with("instance-a", &[("KITE_SHUTDOWN_GRACE_MS", "10000")]).await;
    let (url, started, done) = slow_sink(Duration::from_millis(1500)).await;
    let peer_id = add_peer(&a, "slow", &url, "kfed_token", &["*"], 3).await;
    let all = ids("evt_term", 3);
    for id in &all {
        assert_eq!(
            a.hook("stripe", &stripe_event(id, "charge.succeeded"))
                .await
                .0,
            202
        );
    }
    eventually("deliveries in flight", DRAIN, || async {
        (started.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    assert_eq!(done.load(Ordering::SeqCst), 0);
    let exited = a.terminate(Duration::from_secs(15)).await;
    assert_eq!(exited, Some(true), "exited cleanly within the deadline");
    assert_eq!(
        done.load(Ordering::SeqCst),
        3,
        "in-flight deliveries finished"
    );
    let db = a.db().await;
    let delivered: i64 = db
        .query_one(
            "SELECT count(*) FROM outbox WHERE state = 'delivered' AND peer_id::text = $1",
            &[&peer_id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(delivered, 3, "their outcome was recorded before exit");
    // Nothing was left behind: after a restart, new work flows and nothing is redone.
    a.spawn().await;
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_term_after", "x"))
            .await
            .0,
        202
    );
    eventually("post-restart delivery", DRAIN, || async {
        (done.load(Ordering::SeqCst) == 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn flood_while_the_database_is_stuck_gets_503_with_retry_after() {
    let a = Instance::start_with("instance-a", &[("KITE_INGEST_QUEUE", "50")]).await;
    let locker = a.db().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let body = |i: usize| stripe_event(&format!("evt_flood_{i}"), "charge.succeeded");
    let refused = Arc::new(AtomicUsize::new(0));
    let answers = futures::future::join_all((0..400).map(|i| {
        let req = a
            .http
            .post(format!("{}/hooks/default/stripe", a.url))
            .json(&body(i));
        let refused = refused.clone();
        async move {
            let r = req.send().await.expect("send");
            let s = r.status().as_u16();
            if s == 503 {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            let retry_after = r.headers().get("retry-after").is_some();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (s, retry_after, v)
        }
    }));
    // The database stays stuck until the flood has been pushed back.
    let release = async {
        eventually("a 503 while the database is stuck", DRAIN, || async {
            (refused.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        locker.batch_execute("COMMIT").await.expect("unlock");
    };
    let (answers, ()) = tokio::join!(answers, release);
    let rejected: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let accepted = answers.iter().filter(|(s, _, _)| *s == 202).count();
    assert!(!rejected.is_empty(), "a full ingest queue answers 503");
    assert!(rejected
        .iter()
        .all(|(_, ra, v)| *ra && v["error"]["code"] == "unavailable"));
    assert_eq!(
        accepted + rejected.len(),
        400,
        "every request got 202 or 503"
    );
    assert_eq!(
        a.total_events().await,
        accepted as i64,
        "every 202 was stored"
    );
}

/// A peer that holds every request without an answer while `hold` is set, then answers
/// 200; it records the id of each event it answered.
async fn holding_sink() -> (
    String,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::atomic::AtomicBool;
    let hold = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, n, a) = (hold.clone(), held.clone(), answered.clone());
    let app = axum::Router::new().route(
        "/hooks/default/kite",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (h, n, a) = (h.clone(), n.clone(), a.clone());
            async move {
                if h.load(Ordering::SeqCst) {
                    n.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let (Some(id), Ok(mut seen)) = (v["id"].as_str(), a.lock()) {
                    seen.push(id.to_string());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/default/kite",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hold, held, answered)
}

#[tokio::test]
async fn deliveries_a_combined_instance_held_when_it_died_are_taken_over_after_their_lease() {
    // All roles in one process: the ingest writer hands deliveries to its own delivery
    // role (the local lane), with no broker message, leased for 1.5 s.
    let mut a = Instance::process_with("instance-a", &SWEEP).await;
    let (url, hold, held, answered) = holding_sink().await;
    add_peer(&a, "held", &url, "kfed_token", &["*"], 3).await;
    // Until the peer's worker runs here, deliveries go through the broker; send until one
    // takes the local lane.
    let mut sent = Vec::new();
    eventually("a delivery handed over locally", DRAIN, || {
        let id = format!("evt_lease_{}", sent.len());
        sent.push(id.clone());
        let a = &a;
        async move {
            assert_eq!(
                a.hook("stripe", &stripe_event(&id, "charge.succeeded"))
                    .await
                    .0,
                202
            );
            let text = metrics::scrape(a).await;
            (metrics::value(&text, "kite_deliveries_handed_total", &[("lane", "local")])
                >= Some(1.0))
            .then_some(())
        }
    })
    .await;
    for i in 0..3 {
        let id = format!("evt_lease_more_{i}");
        assert_eq!(
            a.hook("stripe", &stripe_event(&id, "charge.succeeded"))
                .await
                .0,
            202
        );
        sent.push(id);
    }
    let text = metrics::scrape(&a).await;
    let local = metrics::value(&text, "kite_deliveries_handed_total", &[("lane", "local")]);
    assert!(
        local >= Some(4.0),
        "the last ones went the local lane: {text}"
    );
    let leased: i64 = a
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM outbox WHERE state = 'pending' AND next_attempt_at > created_at",
            &[],
        )
        .await
        .expect("leased rows")
        .get(0);
    assert!(leased >= 4, "rows handed over are leased: {leased}");
    eventually("every delivery in the peer's hands", DRAIN, || async {
        (held.load(Ordering::SeqCst) >= sent.len()).then_some(())
    })
    .await;
    // A dies with the deliveries in hand; no broker message names the leased ones.
    a.kill().await;
    hold.store(false, Ordering::SeqCst);
    a.spawn().await;
    let db = a.db().await;
    let want = sent.len() as i64;
    eventually("every row delivered after the restart", DRAIN, || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM outbox WHERE state = 'delivered'", &[])
            .await
            .ok()?
            .get(0);
        (n == want).then_some(())
    })
    .await;
    let seen = answered.lock().map(|s| s.clone()).unwrap_or_default();
    for id in &sent {
        assert!(seen.contains(id), "{id} delivered: {seen:?}");
    }
}
