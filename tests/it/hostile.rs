//! One hostile request never stalls, crashes or poisons kite: deliveries a peer refuses,
//! what can never be forwarded, rows no reader can decode, claimed identities and rows the
//! database refuses. Each test sends what an attacker would, over HTTP or `/ws`, while
//! legitimate traffic flows, and checks both the refusal and that the legitimate events
//! arrive once. Bounds before authentication are in `hostile_bounds.rs`.

use crate::common;

use std::time::Duration;

use common::hostile::*;
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_delivery_the_peer_refuses_for_good_never_wedges_the_peer() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_PEER_FAILURE_THRESHOLD", "2"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "300"),
        ],
    )
    .await;
    let port = free_port();
    let peer = add_peer(
        &a,
        "b",
        &format!("http://127.0.0.1:{port}/hooks/default/kite"),
        "kfed_x",
        &["*"],
        3,
    )
    .await;

    // The peer is down: a poison event queues first, then good ones, and the peer parks.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_poison_0", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let early = legit(&a, "early", 5).await;
    eventually("peer unreachable", WAIT, || async {
        (peer_view(&a, &peer).await["health"] == "unreachable").then_some(())
    })
    .await;

    // It comes back refusing the poison for good (400): the probe settles that row as the
    // message's failure and moves on, so everything else flows.
    let sink = Sink::on(port, |id| if id.contains("poison") { 400 } else { 200 }).await;
    let poison = async {
        for i in 1..=3 {
            let (s, _) = a
                .hook(
                    "stripe",
                    &stripe_event(&format!("evt_poison_{i}"), "charge.succeeded"),
                )
                .await;
            assert_eq!(s, 202);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (during, ()) = tokio::join!(legit(&a, "during", 30), poison);
    sink.assert_once(&early).await;
    sink.assert_once(&during).await;

    // Every poison row spent its attempts and is dead; the peer was never parked for them.
    let rows = eventually("poison rows dead", WAIT, || async {
        let rows: Vec<Value> = a
            .outbox(&format!("peer_id={peer}"))
            .await
            .into_iter()
            .filter(|r| r["event_id"].as_str().unwrap_or("").contains("poison"))
            .collect();
        (rows.len() == 4 && rows.iter().all(|r| r["status"] == "dead")).then_some(rows)
    })
    .await;
    for r in rows {
        assert_eq!(r["attempts"], a.max_attempts, "{r}");
        assert_eq!(r["last_status_code"], 400, "{r}");
    }
    let p = peer_view(&a, &peer).await;
    assert_eq!(
        (p["status"].as_str(), p["health"].as_str()),
        (Some("active"), Some("active")),
        "{p}"
    );

    // 410 Gone pauses the peer and says why; what was not delivered waits, unspent.
    let gone_sink = Sink::start(|id| if id.contains("gone") { 410 } else { 200 }).await;
    let gone_peer = add_peer(
        &a,
        "c",
        &format!("{}/hooks/default/kite", gone_sink.url),
        "kfed_y",
        &["com.stripe.customer.*"],
        3,
    )
    .await;
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_gone_1", "customer.deleted"))
        .await;
    assert_eq!(s, 202);
    let p = eventually("peer paused by 410", WAIT, || async {
        let p = peer_view(&a, &gone_peer).await;
        (p["status"] == "paused").then_some(p)
    })
    .await;
    assert!(
        p["last_error"].as_str().unwrap_or("").contains("410"),
        "{p}"
    );
    let row = a
        .outbox(&format!("peer_id={gone_peer}"))
        .await
        .pop()
        .expect("row");
    // The 410 is an attempt (the story lists it) that spends no retry.
    assert_eq!(
        (
            row["status"].as_str(),
            row["attempts"].as_i64(),
            row["failures"].as_i64()
        ),
        (Some("pending"), Some(1), Some(0)),
        "{row}"
    );
    // The first peer is untouched.
    let more = legit(&a, "after", 5).await;
    sink.assert_once(&more).await;
}

#[tokio::test]
async fn ingress_refuses_what_can_never_be_forwarded() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    let attack = async {
        let mut answers = Vec::new();
        // A CloudEvent id with a newline cannot be sent as a header.
        let nl = br#"{"specversion":"1.0","id":"a\nb","source":"/s","type":"t"}"#.to_vec();
        answers.push((
            "newline id",
            raw(&a, "/hooks/default/acme", nl, &[ce_json()]).await,
            400,
            "invalid_attribute",
        ));
        let ctl = br#"{"specversion":"1.0","id":"x","source":"/s","type":"t\u0001"}"#.to_vec();
        answers.push((
            "control type",
            raw(&a, "/hooks/default/acme", ctl, &[ce_json()]).await,
            400,
            "invalid_attribute",
        ));
        // 127 levels deep.
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes();
        answers.push((
            "deep body",
            raw(&a, "/hooks/default/acme", deep, &[]).await,
            400,
            "too_deep",
        ));
        // Under the raw body limit, but over it once wrapped and forwarded.
        let big =
            format!(r#"{{"type":"x","k":"{}"}}"#, "y".repeat(256 * 1024 - 3_000)).into_bytes();
        answers.push((
            "near-limit body",
            raw(&a, "/hooks/default/acme", big, &[]).await,
            413,
            "payload_too_large",
        ));
        let quotes = "\"".repeat(200 * 1024).into_bytes();
        answers.push((
            "text body that grows a third as base64",
            raw(
                &a,
                "/hooks/default/slack",
                quotes,
                &[("content-type", "text/plain".into())],
            )
            .await,
            413,
            "payload_too_large",
        ));
        answers
    };
    let (ids, answers) = tokio::join!(legit(&a, "ok", 30), attack);
    for (what, (s, v), want_s, want_c) in answers {
        assert_eq!((s, code(&v)), (want_s, want_c), "{what}: {v}");
    }
    // A big event that fits as forwarded is accepted and reaches B whole.
    let fits = format!(
        r#"{{"id":"evt_big","type":"x","k":"{}"}}"#,
        "y".repeat(200 * 1024)
    );
    let (s, v) = raw(&a, "/hooks/default/stripe", fits.into_bytes(), &[]).await;
    assert_eq!(s, 202, "{v}");
    let mut all = ids;
    all.push("evt_big".into());
    assert_all_once(&b, &all, WAIT).await;
    let db = a.db().await;
    let refused: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE hook_source IN ('acme', 'slack')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refused, 0, "nothing refused was stored");
}

#[tokio::test]
async fn no_stored_row_can_crash_a_reader() {
    let a = Instance::start("instance-a").await;
    let mut ws = ws_open(&a, &a.key, Some("reader")).await;
    assert_eq!(
        frame(&mut ws).await.expect("connected")["type"],
        "connected"
    );

    // The deepest accepted body, and a deeper one.
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let (s, v) = raw(&a, "/hooks/default/deep", ok.into_bytes(), &[]).await;
    assert_eq!(s, 202, "{v}");
    let too = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let (s, v) = raw(&a, "/hooks/default/deep", too.into_bytes(), &[]).await;
    assert_eq!((s, code(&v)), (400, "too_deep"));
    assert_eq!(v["error"]["max_depth"], 64);

    // A row no reader can decode (written behind kite's back), between two good events.
    a.hook("stripe", &stripe_event("evt_before", "x")).await;
    a.db()
        .await
        .execute(
            "INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event, routed_at)
             VALUES ('default', '/x', 'broken', 'x', 'com.x', '[\"not an object\"]'::json, now())",
            &[],
        )
        .await
        .expect("insert broken row");
    a.hook("stripe", &stripe_event("evt_after", "x")).await;

    // The stream moves past it.
    let mut got = Vec::new();
    let mut last_acked = 0;
    while got.len() < 3 {
        let f = frame(&mut ws).await.expect("stream still open");
        if f["type"] == "event" {
            last_acked = f["seq"].as_i64().unwrap_or(0);
            ws.send(Message::Text(
                json!({"type":"ack","seq":f["seq"]}).to_string().into(),
            ))
            .await
            .expect("ack");
            got.push(f["event"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(got[1..], ["evt_before", "evt_after"]);
    // So do event listings, page after page.
    let (s, v) = a.get("/api/events?limit=2").await;
    assert_eq!(s, 200, "{v}");
    let (s, v2) = a
        .get(&format!("/api/events?limit=10&after={}", v["next_cursor"]))
        .await;
    assert_eq!(s, 200, "{v2}");
    let listed: Vec<&str> = v["items"]
        .as_array()
        .into_iter()
        .chain(v2["items"].as_array())
        .flatten()
        .map(|e| e["event"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.contains(&"broken"));
    // A named listener that comes back resumes past it too.
    drop(ws);
    // (Once the first connection's last ack is saved.)
    let mut again = eventually("the reader's cursor saved", WAIT, || async {
        let mut again = ws_open(&a, &a.key, Some("reader")).await;
        let c = frame(&mut again).await.expect("connected");
        assert_eq!(c["type"], "connected");
        (c["last_seq"].as_i64() >= Some(last_acked)).then_some(again)
    })
    .await;
    a.hook("stripe", &stripe_event("evt_later", "x")).await;
    let f = loop {
        let f = frame(&mut again).await.expect("open");
        if f["type"] == "event" {
            break f;
        }
    };
    assert_eq!(f["event"]["id"], "evt_later");
}

#[tokio::test]
async fn an_unauthenticated_post_cannot_claim_another_identity() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    for (name, scheme, secret, hdr) in [
        ("stripe", "stripe", "whsec_s", None),
        ("gh", "github", "gh-secret", None),
        (
            "orders",
            "hmac-sha256",
            "h-secret",
            Some("x-orders-signature"),
        ),
    ] {
        let (s, v) = a
            .post(
                "/api/sources",
                json!({"name":name,"scheme":scheme,"secret":secret,"header":hdr}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    eventually("sources cached", WAIT, || async {
        let (s, _) = raw(&a, "/hooks/default/orders", b"{}".to_vec(), &[]).await;
        (s == 401).then_some(())
    })
    .await;

    let attack = async {
        // Federation extensions on a plain hook.
        let fed = json!({"specversion":"1.0","id":"evt_1","source":"/hooks/default/stripe","type":"com.stripe.charge.succeeded","kitefedorigin":"instance-z"});
        let (s, v) = raw(
            &a,
            "/hooks/default/acme",
            fed.to_string().into_bytes(),
            &[ce_json()],
        )
        .await;
        assert_eq!((s, code(&v)), (400, "reserved_extension"));
        // The same identity, claimed without extensions: stored under the hook it used.
        let claim = json!({"specversion":"1.0","id":"evt_1","source":"/hooks/default/stripe","type":"com.stripe.charge.succeeded"});
        let (s, v) = raw(
            &a,
            "/hooks/default/acme",
            claim.to_string().into_bytes(),
            &[ce_json()],
        )
        .await;
        assert_eq!(s, 202, "{v}");
        let binary = [
            ("ce-specversion", "1.0".to_string()),
            ("ce-id", "evt_1".to_string()),
            ("ce-source", "/hooks/default/stripe".to_string()),
            ("ce-type", "com.stripe.charge.succeeded".to_string()),
            ("content-type", "application/json".to_string()),
        ];
        let (s, v) = raw(&a, "/hooks/default/acme2", b"{}".to_vec(), &binary).await;
        assert_eq!(s, 202, "{v}");
    };
    let (ids, ()) = tokio::join!(legit_signed(&a, "ok", 20), attack);

    // The genuine, signed Stripe event with that id is new, not a duplicate.
    let body = serde_json::to_vec(&stripe_event("evt_1", "charge.succeeded")).expect("json");
    let t = chrono::Utc::now().timestamp();
    let sig = hmac_hex(b"whsec_s", &[t.to_string().as_bytes(), b".", &body]);
    let (s, v) = raw(
        &a,
        "/hooks/default/stripe",
        body,
        &[("stripe-signature", format!("t={t},v1={sig}"))],
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (202, Some("accepted")), "{v}");

    let db = a.db().await;
    let rows = db
        .query(
            "SELECT hook_source, ce_source, event->>'kiteclaimedsource' FROM events WHERE ce_id = 'evt_1' ORDER BY seq",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "acme".into(),
                "/hooks/default/acme".into(),
                Some("/hooks/default/stripe".into())
            ),
            (
                "acme2".into(),
                "/hooks/default/acme2".into(),
                Some("/hooks/default/stripe".into())
            ),
            ("stripe".into(), "/hooks/default/stripe".into(), None),
        ]
    );
    // What B got from A names the hook each came through.
    let mut all = ids.clone();
    all.push("evt_1".into());
    eventually("three evt_1 at B", WAIT, || async {
        (b.count_events("evt_1").await == 3).then_some(())
    })
    .await;
    assert_all_once(&b, &ids, WAIT).await;

    // Unsigned ce-* headers cannot choose a signed event's identity, and an exact replay of
    // a captured signed delivery is a duplicate, whatever the source is called.
    let push = br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/app"}}"#.to_vec();
    let gh_sig = format!("sha256={}", hmac_hex(b"gh-secret", &[&push]));
    let gh = vec![
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "gh-d-1".to_string()),
        ("x-hub-signature-256", gh_sig),
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", "chosen".to_string()),
        ("ce-type", "com.chosen".to_string()),
        ("ce-source", "/chosen".to_string()),
    ];
    let (s, v) = raw(&a, "/hooks/default/gh", push.clone(), &gh).await;
    assert_eq!((s, v["id"].as_str()), (202, Some("gh-d-1")), "{v}");
    let (s, v) = raw(&a, "/hooks/default/gh", push, &gh).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );
    let ty: String = db
        .query_one("SELECT ce_type FROM events WHERE ce_id = 'gh-d-1'", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(ty, "com.gh.push");
    let order = br#"{"order":42}"#.to_vec();
    let o_sig = vec![("x-orders-signature", hmac_hex(b"h-secret", &[&order]))];
    let (s, v) = raw(&a, "/hooks/default/orders", order.clone(), &o_sig).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = raw(&a, "/hooks/default/orders", order, &o_sig).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );
}

/// Legitimate signed Stripe events (source `stripe` signed with `whsec_s`).
#[tokio::test]
async fn one_bad_request_never_fails_another() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    // A row the database refuses (here a constraint made for the test): it shares group
    // commits with legitimate events under load.
    a.db()
        .await
        .batch_execute("ALTER TABLE events ADD CONSTRAINT test_refuses_poison CHECK (ce_id NOT LIKE 'evt_poison%')")
        .await
        .expect("constraint");
    let nul =
        |i: usize| format!(r#"{{"id":"evt_nul_{i}","type":"x","note":"a\u0000b"}}"#).into_bytes();
    let results = futures::future::join_all((0..200).map(|i| {
        let a = &a;
        async move {
            match i % 10 {
                0 => (
                    "poison",
                    raw(
                        a,
                        "/hooks/default/stripe",
                        serde_json::to_vec(&stripe_event(&format!("evt_poison_{i}"), "x"))
                            .expect("json"),
                        &[],
                    )
                    .await,
                    format!("evt_poison_{i}"),
                ),
                5 => (
                    "nul",
                    raw(a, "/hooks/default/stripe", nul(i), &[]).await,
                    format!("evt_nul_{i}"),
                ),
                _ => (
                    "ok",
                    raw(
                        a,
                        "/hooks/default/stripe",
                        serde_json::to_vec(&stripe_event(&format!("evt_ok_{i}"), "x"))
                            .expect("json"),
                        &[],
                    )
                    .await,
                    format!("evt_ok_{i}"),
                ),
            }
        }
    }))
    .await;
    let mut delivered = Vec::new();
    for (kind, (s, v), id) in results {
        match kind {
            "poison" => assert_eq!((s, code(&v)), (400, "unstorable_event"), "{id}: {v}"),
            _ => {
                assert_eq!(s, 202, "{id}: {v}");
                delivered.push(id);
            }
        }
    }
    assert_all_once(&b, &delivered, WAIT).await;
    // The NUL travelled intact.
    let note: String = b
        .db()
        .await
        .query_one(
            "SELECT event::text FROM events WHERE ce_id = 'evt_nul_5'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    let event: Value = serde_json::from_str(&note).expect("stored JSON");
    assert_eq!(event["data"]["note"], "a\u{0}b");
}
