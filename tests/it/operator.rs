//! The operator's day through HTTP and the CLI: metrics on the main listener (two instances
//! on one host need no setting), numbers that agree between the outbox and the story, what a
//! peer did with an event, acting on one delivery (resend, cancel, replay by filter, each in
//! the row's story), the CLI's parity with the API, unsigned hooks marked, and sample events
//! from `kite trigger`.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::cli::{admin, admin_json, kite, Run};
use common::hostile::{Sink, WAIT};
use common::*;
use serde_json::{json, Value};

/// The story of event `id` at `inst`.
async fn story(inst: &Instance, id: &str) -> Value {
    let (s, v) = inst.get(&format!("/api/events/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The story's entry for peer `peer`.
fn delivery<'a>(story: &'a Value, peer: &str) -> &'a Value {
    story["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["peer"] == peer))
        .unwrap_or_else(|| panic!("no delivery to {peer}: {story}"))
}

/// The outbox row of event `id` for the only peer.
async fn row(inst: &Instance, id: &str) -> Value {
    inst.outbox("")
        .await
        .into_iter()
        .find(|r| r["event_id"] == id)
        .unwrap_or_else(|| panic!("no row for {id}"))
}

#[tokio::test]
async fn two_instances_on_one_host_serve_metrics_on_their_own_listeners() {
    // Two `kite serve` processes with the defaults: neither needs a metrics setting.
    let a = Instance::process_with("two-a", &[]).await;
    let b = Instance::process_with("two-b", &[]).await;
    for i in [&a, &b] {
        assert_eq!(i.metrics_url, format!("{}/metrics", i.url), "ready line");
        // The standard process metric names, as every Prometheus client library's (the
        // process is sampled every 2 s, from its start).
        let text = eventually("process metrics sampled", WAIT, || async {
            let r = reqwest::get(&i.metrics_url).await.ok()?;
            assert_eq!(r.status(), 200);
            let text = r.text().await.ok()?;
            text.contains("\nprocess_resident_memory_bytes ")
                .then_some(text)
        })
        .await;
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(!text.contains("kite_process_"), "{text}");
        assert!(text.contains("kite_db_pool_connections_max"), "{text}");
    }

    // Off loopback's allow-list, the token reads it; nothing else does.
    let c = Instance::start_with(
        "metrics-token",
        &[
            ("KITE_METRICS_ALLOW", "none"),
            ("KITE_METRICS_TOKEN", "scrape-secret"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http.get(&c.metrics_url).send().await.expect("scrape");
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("error JSON");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let r = http
        .get(&c.metrics_url)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 403);
    let r = http
        .get(&c.metrics_url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .expect("text")
        .contains("process_resident_memory_bytes"));

    // /health names the revision, as `kite --version` does.
    let (_, h) = a.get("/health").await;
    assert_eq!(h["version"], kite::VERSION, "{h}");
    assert!(kite::VERSION.contains(" ("), "{}", kite::VERSION);
}

/// The operator key of the instances that make a second team.
const OPERATOR: &str = "kite_op_0123456789abcdef0123456789abcdef";

static TAKES: AtomicBool = AtomicBool::new(false);

fn takes_when_told(_: &str) -> u16 {
    if TAKES.load(Ordering::SeqCst) {
        200
    } else {
        400
    }
}

#[tokio::test]
async fn the_outbox_and_the_story_agree_and_one_delivery_is_resent_cancelled_or_replayed() {
    let sink = Sink::start(takes_when_told).await;
    let a = Instance::start_with(
        "ops-a",
        &[
            ("KITE_RETRY_MAX_ATTEMPTS", "2"),
            ("KITE_OPERATOR_KEY", OPERATOR),
        ],
    )
    .await;
    let (s, p) = a
        .post(
            "/api/federation/peers",
            json!({"name": "sink", "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
                   "outbound_token": "t"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let peer_id = p["id"].as_str().expect("id").to_owned();
    for (id, ty) in [
        ("evt_ops_1", "charge.succeeded"),
        ("evt_ops_2", "charge.refunded"),
        ("evt_ops_3", "invoice.paid"),
    ] {
        assert_eq!(a.hook("stripe", &stripe_event(id, ty)).await.0, 202);
    }
    eventually("three dead rows", WAIT, || async {
        (a.outbox("status=dead").await.len() == 3).then_some(())
    })
    .await;

    // A dead row's attempts: the same number in the outbox and its story.
    let dead = row(&a, "evt_ops_1").await;
    let st = story(&a, "evt_ops_1").await;
    let d = delivery(&st, "sink");
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert_eq!(d["attempts"].as_array().map(Vec::len), Some(2), "{d}");
    assert_eq!(d["outbox_id"], dead["id"], "{d}");

    // Resend one row now: it is delivered, and the numbers still agree (3 attempts).
    TAKES.store(true, Ordering::SeqCst);
    let (s, r) = a
        .post(
            &format!("/api/federation/outbox/{}/resend", dead["id"]),
            json!({}),
        )
        .await;
    assert_eq!((s, &r["status"]), (200, &json!("pending")), "{r}");
    let delivered = eventually("the resent row delivered", WAIT, || async {
        let r = row(&a, "evt_ops_1").await;
        (r["status"] == "delivered").then_some(r)
    })
    .await;
    let st = story(&a, "evt_ops_1").await;
    let d = delivery(&st, "sink");
    assert_eq!(delivered["attempts"], 3, "{delivered}");
    assert_eq!(d["attempts"].as_array().map(Vec::len), Some(3), "{d}");
    assert_eq!(d["outcome"], "delivered");
    let (_, session) = a.get("/api/session").await;
    assert_eq!(d["actions"][0]["action"], "resend", "{d}");
    assert_eq!(d["actions"][0]["by"], session["key_id"], "{d} {session}");

    // Replay by filter: only the refunded charge, by type.
    let (s, r) = a
        .post(
            "/api/federation/outbox/replay",
            json!({"peer": "sink", "type": "com.stripe.charge.*", "since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!((s, &r["replayed"]), (200, &json!(1)), "{r}");
    eventually("evt_ops_2 delivered", WAIT, || async {
        (row(&a, "evt_ops_2").await["status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(row(&a, "evt_ops_3").await["status"], "dead");
    let st = story(&a, "evt_ops_2").await;
    assert_eq!(delivery(&st, "sink")["actions"][0]["action"], "replay");
    // A filter it does not know, or a bad glob, is refused naming the field.
    let (s, r) = a
        .post("/api/federation/outbox/replay", json!({"status": "dead"}))
        .await;
    assert_eq!(
        (s, &r["error"]["code"]),
        (400, &json!("unknown_field")),
        "{r}"
    );
    let (s, r) = a
        .post(
            "/api/federation/outbox/replay",
            json!({"since": "yesterday"}),
        )
        .await;
    assert_eq!((s, &r["error"]["field"]), (400, &json!("since")), "{r}");

    // Cancel a pending row (the peer is paused, so it waits), and it never goes out.
    let (s, _) = a
        .patch(
            &format!("/api/federation/peers/{peer_id}"),
            json!({"status": "paused"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_ops_4", "charge.succeeded"))
            .await
            .0,
        202
    );
    let pending = eventually("evt_ops_4 pending", WAIT, || async {
        a.outbox("status=pending")
            .await
            .into_iter()
            .find(|r| r["event_id"] == "evt_ops_4")
    })
    .await;
    // A pending row is in line already: a resend would start a second retry chain.
    let (s, r) = a
        .post(
            &format!("/api/federation/outbox/{}/resend", pending["id"]),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, &r["error"]["code"]),
        (409, &json!("not_resendable")),
        "{r}"
    );
    // Another team's admin key sees no such row.
    let (s, t) = a
        .client_with_key(OPERATOR)
        .call(
            reqwest::Method::POST,
            "/api/teams",
            Some(&json!({"id": "other"})),
        )
        .await
        .map(|r| (r.status, r.body))
        .expect("create a team");
    assert_eq!(s, 201, "{t}");
    let other = a.client_with_key(t["admin_key"].as_str().expect("admin key"));
    for verb in ["cancel", "resend"] {
        let r = other
            .call(
                reqwest::Method::POST,
                &format!("/api/federation/outbox/{}/{verb}", pending["id"]),
                None,
            )
            .await
            .expect("call");
        assert_eq!(r.status, 404, "{verb}: {}", r.text);
    }
    let (s, r) = a
        .post(
            &format!("/api/federation/outbox/{}/cancel", pending["id"]),
            json!({}),
        )
        .await;
    assert_eq!((s, &r["status"]), (200, &json!("cancelled")), "{r}");
    let (s, r) = a
        .post(
            &format!("/api/federation/outbox/{}/cancel", pending["id"]),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, &r["error"]["code"]),
        (409, &json!("not_pending")),
        "{r}"
    );
    let (s, r) = a
        .post("/api/federation/outbox/999999/resend", json!({}))
        .await;
    assert_eq!((s, &r["error"]["code"]), (404, &json!("not_found")), "{r}");
    let st = story(&a, "evt_ops_4").await;
    let d = delivery(&st, "sink");
    assert_eq!(
        (&d["outcome"], &d["actions"][0]["action"]),
        (&json!("cancelled"), &json!("cancel")),
        "{d}"
    );
    // Resumed, a later event goes out; the cancelled one does not.
    a.patch(
        &format!("/api/federation/peers/{peer_id}"),
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_ops_5", "charge.succeeded"))
            .await
            .0,
        202
    );
    sink.assert_once(&["evt_ops_5".to_string()]).await;
    // Its result is written just after the peer's answer (results share a write).
    eventually("evt_ops_5 delivered", WAIT, || async {
        (row(&a, "evt_ops_5").await["status"] == "delivered").then_some(())
    })
    .await;
    // The peer's queue is in order: the cancelled row's message came before evt_ops_5's,
    // and was dropped (no attempt was made for it).
    let cancelled = row(&a, "evt_ops_4").await;
    assert_eq!(
        (&cancelled["status"], &cancelled["attempts"]),
        (&json!("cancelled"), &json!(0)),
        "{cancelled}"
    );
    assert!(
        !sink
            .seen
            .lock()
            .expect("lock")
            .accepted
            .iter()
            .any(|i| i == "evt_ops_4"),
        "a cancelled delivery never goes out"
    );

    // The peer's charts count those attempts: delivered and failed, in the last hour and day.
    for (window, n) in [("hour", 12), ("day", 24)] {
        let (s, v) = a
            .get(&format!(
                "/api/federation/peers/{peer_id}/stats?window={window}"
            ))
            .await;
        assert_eq!(s, 200, "{v}");
        let buckets = v["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), n, "{v}");
        let sum = |k: &str| buckets.iter().filter_map(|b| b[k].as_i64()).sum::<i64>();
        assert!(sum("delivered") >= 3 && sum("failed") >= 6, "{v}");
        assert!(buckets.iter().any(|b| b["p50_ms"].is_i64()), "{v}");
    }
    let (s, v) = a
        .get(&format!(
            "/api/federation/peers/{peer_id}/stats?window=week"
        ))
        .await;
    assert_eq!((s, &v["error"]["field"]), (400, &json!("window")), "{v}");

    // A read key may not act.
    let (_, k) = a.post("/api/keys", json!({"permission": "read"})).await;
    let reader = a.client_with_key(k["key"].as_str().expect("key"));
    for path in [
        format!("/api/federation/outbox/{}/resend", dead["id"]),
        format!("/api/federation/outbox/{}/cancel", dead["id"]),
        "/api/federation/outbox/replay".to_string(),
    ] {
        let r = reader
            .call(reqwest::Method::POST, &path, Some(&json!({})))
            .await
            .expect("call");
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn the_sender_sees_what_the_peer_did_with_an_event() {
    let a = Instance::start("answer-a").await;
    let b = Instance::start("answer-b").await;
    kite_kit::client::peer_by_invitation(&a.client(), &b.client(), &["*"], 3)
        .await
        .expect("peered");
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_ans_1", "charge.succeeded"))
            .await
            .0,
        202
    );
    let first = eventually("delivered to B", WAIT, || async {
        let r = row(&a, "evt_ans_1").await;
        (r["status"] == "delivered").then_some(r)
    })
    .await;
    assert_eq!(first["peer_answer"], "accepted", "{first}");
    assert_eq!(first["attempts"], 1, "{first}");

    // Sent again, B holds it already and says so: the outbox and the story tell it.
    let (s, _) = a
        .post(
            &format!("/api/federation/outbox/{}/resend", first["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let again = eventually("resent and answered", WAIT, || async {
        let r = row(&a, "evt_ans_1").await;
        (r["status"] == "delivered" && r["attempts"] == 2).then_some(r)
    })
    .await;
    assert_eq!(again["peer_answer"], "duplicate_ignored", "{again}");
    let st = story(&a, "evt_ans_1").await;
    let d = delivery(&st, b.name.as_str());
    assert_eq!(d["peer_answer"], "duplicate_ignored", "{d}");
    let answers: Vec<&Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["peer_answer"])
        .collect();
    assert_eq!(
        answers,
        [&json!("accepted"), &json!("duplicate_ignored")],
        "{d}"
    );
    // B stored it once.
    let (_, events) = b.get("/api/events?limit=100").await;
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );

    // The CLI's outbox table names it too.
    let table = admin(&a, &["outbox"]).await.ok().out;
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("PEER_ANSWER"))
            && table.contains("duplicate_ignored"),
        "{table}"
    );
}

#[tokio::test]
async fn the_cli_has_what_the_api_has() {
    let sink = Sink::start(|_| 400).await;
    let a = Instance::start_with("cli-ops", &[("KITE_RETRY_MAX_ATTEMPTS", "1")]).await;
    a.post(
        "/api/federation/peers",
        json!({"name": "sink", "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
               "outbound_token": "t"}),
    )
    .await;

    // kite trigger: realistic samples, signed when given the source's secret.
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kite(&args).await
    };
    let t = run(vec![
        "trigger".into(),
        "stripe".into(),
        "payment_intent.succeeded".into(),
        "--instance".into(),
        a.url.clone(),
    ])
    .await
    .ok();
    assert!(
        t.out
            .contains("posted a sample stripe payment_intent.succeeded (unsigned)"),
        "{t:?}"
    );
    let t = run(vec![
        "trigger".into(),
        "github".into(),
        "push".into(),
        "--instance".into(),
        a.url.clone(),
    ])
    .await
    .ok();
    assert!(t.out.contains(": 202 "), "{t:?}");
    let t = run(vec![
        "trigger".into(),
        "slack".into(),
        "app_mention".into(),
        "--instance".into(),
        a.url.clone(),
    ])
    .await
    .ok();
    assert!(t.out.contains(": 202 "), "{t:?}");
    let t = run(vec![
        "trigger".into(),
        "stripe".into(),
        "nope".into(),
        "--instance".into(),
        a.url.clone(),
    ])
    .await;
    assert!(
        t.code == Some(1) && t.err.contains("payment_intent.succeeded"),
        "{t:?}"
    );
    admin_json(
        &a,
        &[
            "sources",
            "create",
            "--name",
            "shop",
            "--scheme",
            "stripe",
            "--secret",
            "whsec_shop",
        ],
    )
    .await;
    let signed = |secret: &str| {
        vec![
            "trigger".to_string(),
            "stripe".into(),
            "charge.succeeded".into(),
            "--instance".into(),
            a.url.clone(),
            "--source".into(),
            "shop".into(),
            "--secret".into(),
            secret.into(),
        ]
    };
    let t = run(signed("whsec_shop")).await.ok();
    assert!(
        t.out.contains("(signed)") && t.out.contains(": 202 "),
        "{t:?}"
    );
    let t = run(signed("whsec_wrong")).await;
    assert!(t.code == Some(1) && t.err.contains("401"), "{t:?}");
    let (_, evs) = a.get("/api/events?limit=100").await;
    let types: Vec<&str> = evs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["event"]["type"].as_str())
        .collect();
    for want in [
        "com.stripe.payment_intent.succeeded",
        "com.github.push",
        "com.shop.charge.succeeded",
    ] {
        assert!(types.contains(&want), "{want} in {types:?}");
    }

    // Unsigned hooks are marked: the stripe source took unsigned posts, shop is signed.
    let (_, src) = a.get("/api/sources").await;
    let unsigned: Vec<&str> = src["unsigned"]
        .as_array()
        .expect("unsigned")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(
        unsigned.contains(&"stripe") && !unsigned.contains(&"shop"),
        "{src}"
    );
    let table = admin(&a, &["sources"]).await.ok();
    let line = |name: &str| {
        table
            .out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {table:?}"))
            .to_owned()
    };
    assert!(
        line("stripe").contains("NO: accepts anyone's posts"),
        "{table:?}"
    );
    assert!(line("shop").contains("yes"), "{table:?}");
    assert!(
        table.err.contains("kite admin sources create --name"),
        "{table:?}"
    );

    // Listings take the API's filters.
    let since = "2020-01-01T00:00:00Z";
    let listed = admin_json(&a, &["events", "--type", "com.github.*", "--since", since]).await;
    let items = listed["items"].as_array().expect("items");
    assert!(
        !items.is_empty()
            && items
                .iter()
                .all(|e| e["event"]["type"] == "com.github.push"),
        "{listed}"
    );
    let listed = admin_json(&a, &["events", "--source", "slack"]).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let future = admin_json(&a, &["events", "--until", since]).await;
    assert_eq!(future["items"], json!([]), "{future}");
    eventually("rows dead", WAIT, || async {
        (a.outbox("status=dead").await.len() >= 4).then_some(())
    })
    .await;
    let rows = admin_json(
        &a,
        &[
            "outbox",
            "--status",
            "dead",
            "--type",
            "com.shop.*",
            "--source",
            "shop",
        ],
    )
    .await;
    let rows = rows["items"].as_array().expect("items").clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row_id = rows[0]["id"].as_i64().expect("id").to_string();

    // Act on it: resend, replay by filter, and its story in a table.
    let r = admin_json(&a, &["outbox", "resend", &row_id]).await;
    assert_eq!(r["status"], "pending", "{r}");
    // Resent, it waits a second (a peer refuses a signed request it took already) and can
    // be cancelled meanwhile; cancelled, it is not pending, and the CLI says why.
    let out = admin(&a, &["outbox", "cancel", &row_id]).await.ok().out;
    assert!(
        out.lines().any(|l| squeeze(l) == "status: cancelled"),
        "{out}"
    );
    let r = admin(&a, &["outbox", "cancel", &row_id]).await;
    assert!(r.code == Some(1) && r.err.contains("not_pending"), "{r:?}");
    let r = admin_json(
        &a,
        &[
            "outbox",
            "replay",
            "--peer",
            "sink",
            "--type",
            "com.github.*",
        ],
    )
    .await;
    assert_eq!(r["replayed"], 1, "{r}");
    let ev = rows[0]["event_id"].as_str().expect("event id");
    let shown = admin(&a, &["events", "show", ev]).await.ok().out;
    assert!(
        shown.contains("PEER") && shown.contains("OUTCOME") && shown.contains("ATTEMPTS"),
        "{shown}"
    );
    assert!(
        shown.contains("attempt refused 400"),
        "every attempt listed: {shown}"
    );
    assert!(
        shown.contains("resend by key "),
        "the resend is in its story: {shown}"
    );

    // peers pause|resume print one line; a row held by the pause is cancelled.
    let Run { out, .. } = admin(&a, &["peers", "pause", "sink"]).await.ok();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("sink (") && out.contains("paused"), "{out}");
    run(vec![
        "trigger".into(),
        "stripe".into(),
        "customer.created".into(),
        "--instance".into(),
        a.url.clone(),
    ])
    .await
    .ok();
    let held = eventually("a row held by the pause", WAIT, || async {
        a.outbox("status=pending")
            .await
            .into_iter()
            .find(|r| r["event_type"] == "com.stripe.customer.created")
    })
    .await;
    let held_id = held["id"].as_i64().expect("id").to_string();
    let out = admin(&a, &["outbox", "cancel", &held_id]).await.ok().out;
    assert!(
        out.lines().any(|l| squeeze(l) == "status: cancelled"),
        "{out}"
    );
    let Run { out, .. } = admin(&a, &["peers", "resume", "sink"]).await.ok();
    assert!(
        out.lines().count() == 1 && out.contains("status active"),
        "{out}"
    );
    let Run { out, .. } = admin(&a, &["identity", "rotate"]).await.ok();
    let header = out
        .lines()
        .find(|l| l.starts_with("KEY_ID"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        header.contains("STATE") && header.contains("VALID_UNTIL"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains(" current ")), "{out}");
    assert!(out.lines().any(|l| l.contains(" previous ")), "{out}");
}
