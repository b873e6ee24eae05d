//! Every event's story (`GET /api/events/{id}`): for each peer of its team what happened to
//! it, with every delivery attempt; and the listings' filters.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::hostile::Sink;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn ok(_: &str) -> u16 {
    200
}

fn refuses(_: &str) -> u16 {
    422
}

/// 503 the first time, 200 after.
fn flaky(_: &str) -> u16 {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        503
    } else {
        200
    }
}

/// The story entry of `peer` in an event's story.
fn entry<'a>(story: &'a Value, peer: &str) -> &'a Value {
    story["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["peer"] == peer))
        .unwrap_or_else(|| panic!("no story for {peer}: {story}"))
}

#[tokio::test]
async fn an_events_story_tells_each_peers_outcome_and_every_attempt() {
    let a = Instance::start("sa").await;
    let b = Instance::start("sb").await;
    // The event enters at B and reaches A with one hop.
    peer(&b, &a, &["*"], 3).await;
    let (sink_ok, sink_flaky, sink_refuses) = (
        Sink::start(ok).await,
        Sink::start(flaky).await,
        Sink::start(refuses).await,
    );
    for (name, url, scopes, hops) in [
        ("ok", &sink_ok.url, &["*"][..], 3),
        ("flaky", &sink_flaky.url, &["*"], 3),
        ("refuses", &sink_refuses.url, &["*"], 3),
        ("other", &sink_ok.url, &["github.*"], 3),
        ("hops", &sink_ok.url, &["*"], 1),
    ] {
        add_peer(
            &a,
            name,
            &format!("{url}/hooks/default/kite"),
            "t",
            scopes,
            hops,
        )
        .await;
    }
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "paused", "peer_hook_url": format!("{}/hooks/default/kite", sink_ok.url),
                   "outbound_token": "t", "status": "paused"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    let (s, _) = b
        .hook("stripe", &stripe_event("evt_story", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let story = eventually("the story settles", WAIT, || async {
        let (s, v) = a.get("/api/events/evt_story").await;
        (s == 200
            && entry(&v, "refuses")["outcome"] == "dead"
            && entry(&v, "flaky")["outcome"] == "delivered"
            && entry(&v, "ok")["outcome"] == "delivered")
            .then_some(v)
    })
    .await;
    assert_eq!(story["event"]["id"], "evt_story");
    assert_eq!(story["source"], "kite");

    let ok = entry(&story, "ok");
    assert_eq!(ok["attempts"].as_array().map(Vec::len), Some(1), "{ok}");
    assert_eq!(ok["attempts"][0]["outcome"], "delivered");
    assert_eq!(ok["attempts"][0]["status_code"], 200);
    assert!(ok["attempts"][0]["duration_ms"].is_i64() && ok["delivered_at"].is_string());

    let flaky = entry(&story, "flaky");
    let outcomes: Vec<&Value> = flaky["attempts"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["outcome"]).collect())
        .unwrap_or_default();
    assert_eq!(outcomes, [&json!("failed"), &json!("delivered")], "{flaky}");
    assert_eq!(flaky["attempts"][0]["status_code"], 503);
    assert!(flaky["attempts"][0]["error"]
        .as_str()
        .unwrap_or("")
        .contains("503"));

    let refused = entry(&story, "refuses");
    let attempts = refused["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 3, "{refused}");
    assert!(attempts
        .iter()
        .all(|x| x["outcome"] == "refused" && x["status_code"] == 422));

    let other = entry(&story, "other");
    assert_eq!(other["outcome"], "no_match");
    assert_eq!(other["scopes"], json!(["github.*"]));
    let hops = entry(&story, "hops");
    assert_eq!(
        (&hops["outcome"], &hops["reason"]),
        (&json!("skipped"), &json!("max_hops"))
    );
    let paused = entry(&story, "paused");
    assert_eq!(
        (&paused["outcome"], &paused["reason"]),
        (&json!("waiting"), &json!("paused"))
    );

    // By sequence number too; an unknown one is 404.
    let seq = story["seq"].as_i64().expect("seq");
    let (s, by_seq) = a.get(&format!("/api/events/{seq}")).await;
    assert_eq!((s, &by_seq["event"]["id"]), (200, &json!("evt_story")));
    let (s, v) = a.get("/api/events/evt_none").await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");

    // Filters, with cursors; unknown ones refused.
    let (s, v) = a
        .get("/api/federation/outbox?peer=refuses&status=dead&type=com.stripe.*&source=kite")
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = a.get("/api/federation/outbox?type=com.github.*").await;
    assert_eq!(v["items"], json!([]), "{v}");
    let (_, v) = a.get("/api/federation/outbox?limit=2").await;
    let next = v["next_cursor"].as_i64().expect("a next page");
    let (_, v2) = a
        .get(&format!("/api/federation/outbox?limit=2&cursor={next}"))
        .await;
    assert_ne!(v["items"][0]["id"], v2["items"][0]["id"]);
    let since = story["received_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (s, v) = a
        .get(&format!(
            "/api/events?source=kite&type=com.stripe.*&since={}",
            urlencode(&since)
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = a.get("/api/events?source=github").await;
    assert_eq!(v["items"], json!([]));
    for path in [
        "/api/events?colour=blue",
        "/api/federation/outbox?peer_name=ok",
    ] {
        let (s, v) = a.get(path).await;
        assert_eq!((s, code(&v)), (400, "unknown_filter"), "{path}: {v}");
    }
    let (s, v) = a.get("/api/federation/outbox?peer=nobody").await;
    assert_eq!((s, code(&v)), (400, "validation_error"), "{v}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn retention_removes_an_events_deliveries_and_attempts_with_it() {
    let a = Instance::start_with(
        "sr",
        &[
            ("KITE_RETENTION_SECS", "2"),
            ("KITE_SWEEP_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let sink = Sink::start(ok).await;
    add_peer(
        &a,
        "ok",
        &format!("{}/hooks/default/kite", sink.url),
        "t",
        &["*"],
        3,
    )
    .await;
    let ids: Vec<String> = (0..3).map(|i| format!("evt_kept_{i}")).collect();
    for id in &ids {
        let (s, _) = a
            .hook("stripe", &stripe_event(id, "charge.succeeded"))
            .await;
        assert_eq!(s, 202);
    }
    // Each event was delivered: its delivery row settled together with its attempt's log
    // (one statement), and only settled events are pruned.
    sink.assert_once(&ids).await;
    let db = a.db().await;
    let left = || async {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox),
                        (SELECT count(*) FROM attempts)",
                &[],
            )
            .await
            .ok()?;
        Some((r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
    };
    eventually(
        "events pruned with their deliveries and attempts",
        WAIT,
        || async { (left().await? == (0, 0, 0)).then_some(()) },
    )
    .await;
    let (s, v) = a.get("/api/events/evt_kept_0").await;
    assert_eq!(s, 404, "{v}");
}
