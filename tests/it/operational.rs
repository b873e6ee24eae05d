//! Operational events: kite tells a team when something goes wrong (a peer degraded,
//! unreachable, recovered; a delivery dead; a peer joined or revoked; the identity rotated),
//! at the team's operational endpoint (signed, checked with the official `standardwebhooks`
//! library), on its stream (`kite listen --type 'kite.*'`), never to a peer, and bounded.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::{admin, admin_json};
use common::http::code;
use common::listen::Listen;
use common::tools::standardwebhooks_verify;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// What a sink was sent: each request's headers and body.
type Seen = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// A loopback endpoint answering each request as `answer` says (given the request's number
/// and body), recording them all.
async fn sink(answer: impl Fn(usize, &str) -> u16 + Send + Sync + 'static) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let n = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let (s, n, answer) = (s.clone(), n.clone(), answer.clone());
        async move {
            let status = answer(n.fetch_add(1, Ordering::SeqCst), &body);
            let hs = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            s.lock().expect("lock").push((hs, body));
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The operational events an endpoint received, in order: (type, event).
fn received(seen: &Seen) -> Vec<(String, Value)> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e))
        .collect()
}

/// Waits until the endpoint received an event of type `ty` matching `pred`.
async fn wait_for(seen: &Seen, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("{ty} at the operational endpoint"),
        WAIT,
        || async {
            received(seen)
                .into_iter()
                .find(|(t, e)| t == ty && pred(e))
                .map(|(_, e)| e)
        },
    )
    .await
}

/// Sets the team's operational endpoint to `url`; answers its secret.
async fn set_endpoint(inst: &Instance, url: &str) -> String {
    let (s, v) = inst
        .api(
            reqwest::Method::PUT,
            "/api/operational-endpoint",
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["secret"].as_str().expect("the secret, once").to_string()
}

#[tokio::test]
async fn a_peer_taken_down_reports_degraded_then_recovered_signed_on_the_endpoint_and_the_stream() {
    let a = Instance::start_with(
        "opa",
        &[
            ("KITE_OPERATIONAL_WINDOW_MS", "1000"),
            ("KITE_RETRY_MAX_ATTEMPTS", "30"),
            ("KITE_PEER_FAILURE_THRESHOLD", "3"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let (ops_url, ops) = sink(|_, _| 200).await;

    // The endpoint: made with its secret once; shown and changed without it.
    let (s, v) = a.get("/api/operational-endpoint").await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = a
        .api(
            reqwest::Method::PUT,
            "/api/operational-endpoint",
            Some(json!({"url": "ftp://x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "validation_error"), "{v}");
    let secret = set_endpoint(&a, &ops_url).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (s, v) = a
        .api(
            reqwest::Method::PUT,
            "/api/operational-endpoint",
            Some(json!({"url": ops_url})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("secret").is_none(), "{v}");
    let (s, v) = a.get("/api/operational-endpoint").await;
    assert_eq!((s, v["url"].as_str()), (200, Some(ops_url.as_str())), "{v}");
    assert!(v.get("secret").is_none(), "{v}");

    let mut listen = Listen::start(&a, &["--type", "kite.*", "--json"]).await;

    // A peer that is down: its deliveries fail until it is back.
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    let (peer_url, peer_seen) =
        sink(move |_, _| if d.load(Ordering::SeqCst) { 503 } else { 200 }).await;
    add_peer(
        &a,
        "flaky",
        &format!("{peer_url}hooks"),
        "tok-ops",
        &["*"],
        3,
    )
    .await;
    let joined = wait_for(&ops, "kite.peer.joined", |_| true).await;
    assert_eq!(joined["data"]["peer"]["name"], "flaky", "{joined}");

    for i in 0..3 {
        let (s, _) = a
            .hook(
                "stripe",
                &stripe_event(&format!("evt_ops_{i}"), "charge.succeeded"),
            )
            .await;
        assert_eq!(s, 202);
    }
    let degraded = wait_for(&ops, "kite.peer.degraded", |_| true).await;
    assert_eq!(degraded["data"]["peer"]["name"], "flaky", "{degraded}");
    assert_eq!(
        degraded["source"].as_str().map(|s| s.starts_with("/kite/")),
        Some(true)
    );
    // Failures go on past the threshold: the peer is reported unreachable, then back.
    let unreachable = wait_for(&ops, "kite.peer.unreachable", |_| true).await;
    assert_eq!(
        unreachable["data"]["peer"]["name"], "flaky",
        "{unreachable}"
    );
    assert_eq!(
        unreachable["data"]["health"], "unreachable",
        "{unreachable}"
    );
    down.store(false, Ordering::SeqCst);
    let recovered = wait_for(&ops, "kite.peer.recovered", |_| true).await;
    assert_eq!(recovered["data"]["peer"]["name"], "flaky", "{recovered}");
    // Degraded, then unreachable, then recovered: nothing reported the peer as well before it was down.
    let order: Vec<String> = received(&ops).into_iter().map(|(t, _)| t).collect();
    let first = |t: &str| order.iter().position(|x| x == t);
    assert!(
        first("kite.peer.degraded") < first("kite.peer.unreachable")
            && first("kite.peer.unreachable") < first("kite.peer.recovered"),
        "{order:?}"
    );

    // Every request verifies with the official library, with the secret shown once.
    for (headers, body) in ops.lock().expect("lock").iter() {
        standardwebhooks_verify(&secret, headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(standardwebhooks_verify(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            headers,
            body.as_bytes()
        )
        .is_err());
    }

    // On the team's stream too, as CloudEvents of type kite.*.
    // (Listen::json waits for a line, within its own deadline.)
    let streamed = loop {
        let e = listen.json().await;
        if e["type"] == "kite.peer.degraded" {
            break e;
        }
    };
    assert_eq!(streamed["data"]["peer"]["name"], "flaky");

    // Never to a peer: the peer (scope *) got the webhooks only.
    eventually("the webhooks delivered", WAIT, || async {
        (a.outbox("state=delivered").await.len() == 3).then_some(())
    })
    .await;
    let to_peer = peer_seen.lock().expect("lock").clone();
    assert!(
        to_peer.iter().all(|(_, b)| !b.contains("\"type\":\"kite.")),
        "an operational event went to a peer"
    );

    // A rotation of the identity key is reported to each team.
    let (s, _) = a.post("/api/federation/identity/rotate", json!({})).await;
    assert_eq!(s, 200);
    let rotated = wait_for(&ops, "kite.identity.rotated", |_| true).await;
    assert!(rotated["data"]["key_id"].is_string(), "{rotated}");

    let (s, v) = a.delete("/api/operational-endpoint").await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = a.get("/api/operational-endpoint").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_poison_event_reports_its_dead_delivery_and_a_revoked_peer_is_reported() {
    let a = Instance::start_with("opd", &[("KITE_OPERATIONAL_WINDOW_MS", "1000")]).await;
    let (ops_url, ops) = sink(|_, _| 200).await;
    // Set from the CLI: the secret is printed once, `show` never prints it.
    let set = admin_json(&a, &["operational", "set", "--url", &ops_url]).await;
    let secret = set["secret"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    let shown = admin_json(&a, &["operational", "show"]).await;
    assert_eq!(shown["url"], ops_url.as_str(), "{shown}");
    assert!(shown.get("secret").is_none(), "{shown}");
    let again = admin_json(&a, &["operational", "set", "--url", &ops_url]).await;
    assert!(again.get("secret").is_none(), "{again}");
    // A listener that asked for everything gets webhooks, not kite's own events.
    let mut everything = Listen::start(&a, &["--json"]).await;
    // The peer refuses one event for what it is (400): no retry helps it.
    let (peer_url, _) = sink(|_, body| {
        if body.contains("evt_poison") {
            400
        } else {
            200
        }
    })
    .await;
    let peer = add_peer(
        &a,
        "picky",
        &format!("{peer_url}hooks"),
        "tok-dead",
        &["*"],
        3,
    )
    .await;
    for id in ["evt_fine", "evt_poison"] {
        a.hook("stripe", &stripe_event(id, "charge.succeeded"))
            .await;
    }
    let dead = wait_for(&ops, "kite.delivery.dead", |_| true).await;
    assert_eq!(dead["data"]["event"]["id"], "evt_poison", "{dead}");
    assert_eq!(dead["data"]["peer"]["name"], "picky", "{dead}");
    assert_eq!(dead["data"]["count"], 1, "{dead}");
    assert!(
        dead["data"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("400")),
        "{dead}"
    );
    // The peer is not reported degraded for one bad message.
    assert!(!received(&ops)
        .iter()
        .any(|(t, _)| t == "kite.peer.degraded"));

    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{peer}"),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let revoked = wait_for(&ops, "kite.peer.revoked", |_| true).await;
    assert_eq!(revoked["data"]["peer"]["name"], "picky", "{revoked}");
    a.hook("stripe", &stripe_event("evt_after", "charge.succeeded"))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(everything.json().await["id"].clone());
    }
    assert_eq!(
        got,
        [json!("evt_fine"), json!("evt_poison"), json!("evt_after")]
    );

    // Nobody else speaks for kite: a CloudEvent of a kite.* type is refused at any hook,
    // and so is the reverse-DNS form a `kite.*` scope or stream filter also takes.
    for ty in ["kite.peer.recovered", "com.kite.peer.revoked"] {
        let forged = json!({"specversion": "1.0", "id": format!("forged-{ty}"), "source": "/x",
                            "type": ty, "data": {}});
        let r = reqwest::Client::new()
            .post(format!("{}/hooks/default/custom", a.url))
            .header("content-type", "application/cloudevents+json")
            .body(forged.to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 400, "{ty}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(
            (code(&v), v["error"]["field"].as_str()),
            ("invalid_attribute", Some("type")),
            "{v}"
        );
    }
    for (headers, body) in ops.lock().expect("lock").iter() {
        standardwebhooks_verify(&secret, headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {body}"));
    }
    // The endpoint's deliveries are counted where it is shown.
    let shown = admin_json(&a, &["operational", "show"]).await;
    assert!(
        shown["delivered"].as_i64().is_some_and(|n| n >= 3),
        "{shown}"
    );
    admin(&a, &["operational", "delete"]).await.ok();
    let gone = admin(&a, &["operational", "show"]).await;
    assert_ne!(gone.code, Some(0), "{gone:?}");
    assert!(
        gone.err.contains("not_found") || gone.err.contains("no operational endpoint"),
        "{gone:?}"
    );
}

#[tokio::test]
async fn a_flapping_peer_produces_a_bounded_number_of_events() {
    const WINDOW_MS: u64 = 2000;
    let a = Instance::process_with(
        "opf",
        &[
            ("KITE_OPERATIONAL_WINDOW_MS", "2000"),
            ("KITE_RETRY_MAX_ATTEMPTS", "30"),
            ("KITE_RETRY_BASE_MS", "20"),
            ("KITE_RETRY_MAX_DELAY_MS", "40"),
            ("KITE_PEER_FAILURE_THRESHOLD", "1000"),
        ],
    )
    .await;
    let (ops_url, ops) = sink(|_, _| 200).await;
    set_endpoint(&a, &ops_url).await;
    // The peer is down for 100 ms, up for 100 ms, over and over: its health flips with it.
    let epoch = std::time::Instant::now();
    let (peer_url, peer_seen) = sink(move |_, _| {
        if (epoch.elapsed().as_millis() / 100).is_multiple_of(2) {
            503
        } else {
            200
        }
    })
    .await;
    add_peer(
        &a,
        "flapper",
        &format!("{peer_url}hooks"),
        "tok-flap",
        &["*"],
        3,
    )
    .await;
    let started = std::time::Instant::now();
    for i in 0..150 {
        a.hook(
            "stripe",
            &stripe_event(&format!("evt_flap_{i}"), "charge.succeeded"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("every flap delivered", WAIT, || async {
        (a.outbox("state=delivered").await.len() == 150).then_some(())
    })
    .await;
    assert!(peer_seen.lock().expect("lock").len() > 150);
    // Quiet now: what waited for its window's end is out, and it says the peer is well.
    let health = || {
        received(&ops)
            .into_iter()
            .filter(|(t, _)| t.starts_with("kite.peer.") && t != "kite.peer.joined")
            .count()
    };
    eventually("the last state reported", WAIT, || async {
        let r = received(&ops);
        r.iter()
            .rev()
            .find(|(t, _)| t.starts_with("kite.peer.") && t != "kite.peer.joined")
            .filter(|(t, _)| t == "kite.peer.recovered")
            .map(|_| ())
    })
    .await;
    let elapsed = started.elapsed().as_millis() as u64;
    // One event at once, then at most one a window (plus one for a pass's timing).
    let bound = 2 + elapsed / WINDOW_MS;
    let emitted = health() as u64;
    let text = common::metrics::scrape(&a).await;
    let folded = common::metrics::value(
        &text,
        "kite_operational_coalesced_total",
        &[("team", "default")],
    )
    .unwrap_or(0.0) as u64;
    assert!(
        emitted <= bound,
        "{emitted} health events over {elapsed} ms"
    );
    // It is the coalescing that kept it there: the changes it folded in would have gone
    // past the bound.
    assert!(
        emitted + folded > bound,
        "{emitted} emitted, {folded} folded, bound {bound}"
    );
    let counted = common::metrics::value(
        &text,
        "kite_operational_events_total",
        &[("team", "default"), ("type", "kite.peer.recovered")],
    );
    assert!(counted.is_some_and(|n| n >= 1.0), "{text}");
}
