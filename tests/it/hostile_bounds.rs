//! Bounded before authentication: `/ws` frames and slots, HTTP connections, rate limits
//! charged after authentication, credentials never kept, and the SSRF guard's IPv6
//! spellings; each while legitimate traffic flows.

use crate::common;

use std::time::Duration;

use common::hostile::*;
use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_stream_is_bounded_before_and_after_authentication() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_STREAM_MAX_PER_KEY", "2"),
            ("KITE_STREAM_MAX_CONNECTIONS", "4"),
        ],
    )
    .await;
    let url = format!("{}/ws", a.url.replace("http://", "ws://"));
    // An oversized first frame is refused before it is buffered.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let huge = "x".repeat(1024 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    refused(&mut ws).await;
    // A connection that never says connect is closed within the connect deadline.
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let started = std::time::Instant::now();
    let f = frame(&mut silent).await;
    assert!(
        f.is_none() || f.as_ref().is_some_and(|f| f["code"] == 4002),
        "{f:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // After authentication, frames are bounded too.
    let mut ok = ws_open(&a, &a.key, None).await;
    assert_eq!(
        frame(&mut ok).await.expect("connected")["type"],
        "connected"
    );
    let _ = ok.send(Message::Text("y".repeat(200 * 1024).into())).await;
    assert!(
        frame(&mut ok).await.is_none(),
        "closed after an oversized frame"
    );

    // A client id that could not be stored is refused at connect.
    let mut nul = ws_open(&a, &a.key, Some("a\u{0}b")).await;
    let f = frame(&mut nul).await.expect("error frame");
    assert_eq!(f["code"], 4002, "{f}");

    // A read key takes at most its own share of the team's slots.
    let (s, k) = a
        .post("/api/keys", json!({"label":"reader","permission":"read"}))
        .await;
    assert_eq!(s, 201, "{k}");
    let read_key = k["key"].as_str().expect("key").to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut w = ws_open(&a, &read_key, None).await;
        assert_eq!(frame(&mut w).await.expect("connected")["type"], "connected");
        held.push(w);
    }
    let mut third = ws_open(&a, &read_key, None).await;
    let f = frame(&mut third).await.expect("error frame");
    assert_eq!(f["code"], 4003, "{f}");
    // The team's other keys still get in, and see events.
    let mut admin = ws_open(&a, &a.key, None).await;
    assert_eq!(
        frame(&mut admin).await.expect("connected")["type"],
        "connected"
    );
    a.hook("stripe", &stripe_event("evt_ws_ok", "x")).await;
    let f = loop {
        let f = frame(&mut admin).await.expect("open");
        if f["type"] == "event" {
            break f;
        }
    };
    assert_eq!(f["event"]["id"], "evt_ws_ok");
}

/// Opens `n` connections that each send half a request and stop.
#[tokio::test]
async fn http_connections_are_bounded_before_authentication() {
    // This test holds thousands of sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_HEADER_TIMEOUT_MS", "1500"),
            ("KITE_IDLE_TIMEOUT_MS", "3000"),
            ("KITE_MAX_CONNECTIONS", "3000"),
        ],
    )
    .await;
    let b = Instance::start("instance-b").await;
    peer(&a, &b, &["*"], 3).await;
    let addr = a.url.trim_start_matches("http://").to_string();
    // Thousands of half-sent requests: /health and webhooks keep answering.
    let mut slow = half_sent(&addr, 2000).await;
    let (s, _) = health(&a).await;
    assert_eq!(s, 200);
    let ids = legit(&a, "during", 20).await;
    // Then each is closed once its headers are overdue.
    for c in slow.iter_mut().step_by(97) {
        assert!(
            closed(c, Duration::from_secs(15)).await,
            "a half-sent request was closed"
        );
    }
    drop(slow);
    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed(&mut idle, Duration::from_secs(15)).await,
        "idle connection closed"
    );
    assert_all_once(&b, &ids, WAIT).await;

    // The connection cap: past it, new connections are closed at once, and they come back
    // when connections go away.
    let c = Instance::start_with("instance-c", &[("KITE_MAX_CONNECTIONS", "50")]).await;
    let caddr = c.url.trim_start_matches("http://").to_string();
    let held = half_sent(&caddr, 50).await;
    let mut over = tokio::net::TcpStream::connect(&caddr)
        .await
        .expect("connect");
    let _ = over
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed(&mut over, Duration::from_secs(5)).await,
        "over the cap: closed"
    );
    drop(held);
    eventually("health after the cap frees", WAIT, || async {
        let r = reqwest::Client::new()
            .get(format!("{}/health", c.url))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn junk_cannot_spend_a_senders_or_a_teams_rate() {
    let limits = [
        ("KITE_RATE_TEAM_PER_SEC", "5"),
        ("KITE_RATE_TEAM_BURST", "10"),
        ("KITE_RATE_SENDER_PER_SEC", "5"),
        ("KITE_RATE_SENDER_BURST", "10"),
        ("KITE_RATE_UNAUTHENTICATED_PER_SEC", "1"),
        ("KITE_RATE_UNAUTHENTICATED_BURST", "5"),
    ];
    let b = Instance::start_with("instance-b", &limits).await;
    let (s, v) = b
        .post(
            "/api/sources",
            json!({"name":"stripe","scheme":"stripe","secret":"whsec_s"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, t) = b.post("/api/federation/tokens", json!({"label":"a"})).await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().expect("token").to_string();
    let (s, snd) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"instance-a","inbound_token": token, "key_id": "a-key"}),
        )
        .await;
    assert_eq!(s, 201, "{snd}");
    eventually("source cached", WAIT, || async {
        let (s, _) = raw(&b, "/hooks/default/stripe", b"{}".to_vec(), &[]).await;
        (s == 401).then_some(())
    })
    .await;
    // Junk: badly signed Stripe events and federation posts naming the sender's key id.
    let mut junk = Vec::new();
    for i in 0..60 {
        let body = serde_json::to_vec(&stripe_event(&format!("evt_junk_{i}"), "x")).expect("json");
        junk.push(
            raw(
                &b,
                "/hooks/default/stripe",
                body,
                &[("stripe-signature", "t=1,v1=00".into())],
            )
            .await
            .0,
        );
        let ce = json!({"specversion":"1.0","id":format!("j{i}"),"source":"/s","type":"t"})
            .to_string()
            .into_bytes();
        junk.push(
            raw(
                &b,
                "/hooks/default/kite",
                ce,
                &[
                    ce_json(),
                    ("x-kite-key-id", "a-key".into()),
                    ("webhook-id", format!("j{i}")),
                    ("webhook-timestamp", "1".into()),
                    ("webhook-signature", "v1,AAAA".into()),
                ],
            )
            .await
            .0,
        );
    }
    assert!(junk.iter().all(|s| *s == 401 || *s == 429), "{junk:?}");
    assert!(
        junk.contains(&429),
        "junk is limited by its own bucket: {junk:?}"
    );
    // Genuine traffic right after is untouched.
    let ids = legit_signed(&b, "genuine", 8).await;
    for id in &ids {
        assert_eq!(b.count_events(id).await, 1);
    }
    for i in 0..8 {
        let id = format!("fed_genuine_{i}");
        let body = json!({"specversion":"1.0","id":id,"source":"/hooks/default/stripe","type":"com.stripe.x"}).to_string().into_bytes();
        let ts = chrono::Utc::now().timestamp();
        let sig = kite_wire::provider::sign_standard(&[&token], &id, ts, &body);
        let (s, v) = raw(
            &b,
            "/hooks/default/kite",
            body,
            &[
                ce_json(),
                ("x-kite-key-id", "a-key".into()),
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sig),
            ],
        )
        .await;
        assert_eq!(s, 202, "{id}: {v}");
    }
}

#[tokio::test]
async fn credentials_are_never_stored_or_forwarded() {
    let sink = Sink::start(|_| 200).await;
    let a = Instance::process_with("instance-a", &[("RUST_LOG", "debug")]).await;
    add_peer(
        &a,
        "b",
        &format!("{}/hooks/default/kite", sink.url),
        "kfed_z",
        &["*"],
        3,
    )
    .await;
    let secrets = [
        ("x-gitlab-token", "glsecret-1"),
        ("x-api-token", "apisecret-2"),
        ("authorization", "Bearer bearersecret-3"),
        ("cookie", "session=cookiesecret-4"),
        ("x-hub-signature-256", "sha256=sigsecret-5"),
        ("stripe-signature", "t=1,v1=sigsecret-6"),
        ("x-custom-auth", "customsecret-7"),
    ];
    let headers: Vec<(&str, &str)> = secrets
        .iter()
        .copied()
        .chain([("x-gitlab-event", "Push Hook"), ("user-agent", "GitLab/17")])
        .collect();
    let gitlab = json!({"object_kind":"push","id":"gl-1"});
    let (ids, (s, v)) = tokio::join!(
        legit(&a, "ok", 10),
        a.hook_with("gitlab", &gitlab, &headers)
    );
    assert_eq!(s, 202, "{v}");
    let mut all = ids;
    all.push(v["id"].as_str().expect("id").to_string());
    sink.assert_once(&all).await;
    let (_, list) = a.get("/api/events?limit=1000").await;
    let stored = list.to_string();
    let dump = tokio::process::Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--data-only",
            &a.db_name,
        ])
        .output()
        .await
        .expect("pg_dump");
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    let forwarded = format!("{:?}", sink.seen.lock().expect("lock").requests);
    let logs = a.logs.lock().expect("logs").join("\n");
    for (_, secret) in secrets {
        let needle = secret.rsplit([' ', '=']).next().unwrap_or(secret);
        for (place, text) in [
            ("listing", &stored),
            ("database", &dump),
            ("forwarded copy", &forwarded),
            ("log", &logs),
        ] {
            assert!(!text.contains(needle), "{needle} found in the {place}");
        }
    }
    // What is worth keeping is kept.
    assert!(
        stored.contains("Push Hook") && stored.contains("GitLab/17"),
        "{stored}"
    );
}

#[tokio::test]
async fn ssrf_guard_refuses_every_ipv6_spelling_of_a_private_address() {
    let a = Instance::start_with("instance-a", &[("KITE_ALLOW_PRIVATE_PEERS", "false")]).await;
    let (ids, ()) = tokio::join!(legit(&a, "ok", 10), async {
        for host in [
            "[::127.0.0.1]",
            "[::ffff:0:7f00:1]",
            "[2002:7f00:1::1]",
            "[64:ff9b::a00:1]",
            "[fec0::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::]",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
            "[64:ff9b:1::a00:1]",
        ] {
            let url = format!("http://{host}:8080/hooks/default/kite");
            let (s, v) = a
                .post(
                    "/api/federation/peers",
                    json!({"name":"p","peer_hook_url":url,"outbound_token":"t"}),
                )
                .await;
            assert_eq!((s, code(&v)), (400, "forbidden_destination"), "{url}: {v}");
        }
    });
    assert_eq!(ids.len(), 10);
    // At connect time too: a row written behind the API's back with a mapped loopback
    // address (if the guard failed, the request would stay on loopback).
    let sink = Sink::start(|_| 200).await;
    let port = sink.url.rsplit(':').next().expect("port");
    insert_peer_row(
        &a,
        "mapped",
        &format!("http://[::ffff:7f00:1]:{port}/hooks/default/kite"),
    )
    .await;
    let row = hook_until_attempted(&a, "evt_v6", WAIT).await;
    assert_refused_by_guard(&row);
    assert!(sink.seen.lock().expect("lock").requests.is_empty());
}
