//! The federation pipeline end to end: real instances, Postgres and RabbitMQ, over HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

async fn outbox_state(inst: &Instance, peer_id: &str, event_id: &str) -> Option<Value> {
    inst.outbox(&format!("peer_id={peer_id}"))
        .await
        .into_iter()
        .find(|r| r["event_id"] == event_id)
}

async fn wait_state(inst: &Instance, peer_id: &str, event_id: &str, state: &str) -> Value {
    eventually(
        &format!("{event_id} {state} on {}", inst.name),
        WAIT,
        || async {
            outbox_state(inst, peer_id, event_id)
                .await
                .filter(|r| r["status"] == state)
        },
    )
    .await
}

async fn wait_event(inst: &Instance, id: &str) -> Value {
    eventually(&format!("{id} at {}", inst.name), WAIT, || inst.event(id)).await
}

#[tokio::test]
async fn getting_started_relays_a_stripe_event_and_listen_prints_it() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (peer_id, _) = peer(&a, &b, &["stripe.*"], 3).await;

    // Token listings never show the secret.
    let (s, tokens) = b.get("/api/federation/tokens").await;
    assert_eq!(s, 200);
    assert_eq!(tokens["items"].as_array().map(Vec::len), Some(1));
    assert!(tokens["items"][0].get("token").is_none());
    assert!(tokens["items"][0]["label"].is_string());
    let (_, peers) = a.get("/api/federation/peers").await;
    assert!(peers["items"][0].get("outbound_token").is_none());

    let mut listen = Listen::start(&b, &["--source", "kite", "--json"]).await;

    let (s, v) = a
        .hook(
            "stripe",
            &stripe_event("evt_gs_1", "payment_intent.succeeded"),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["id"], "evt_gs_1");
    assert!(v["created_at"].is_string());

    let at_b = wait_event(&b, "evt_gs_1").await;
    let ev = &at_b["event"];
    assert_eq!(at_b["source"], "kite");
    assert_eq!(ev["type"], "com.stripe.payment_intent.succeeded");
    assert_eq!(ev["kitefedorigin"], "instance-a");
    assert_eq!(ev["kitefedchain"], "[\"instance-a\"]");
    assert_eq!(ev["kitefedhops"], 1);
    assert_eq!(ev["data"]["type"], "payment_intent.succeeded");

    let row = wait_state(&a, &peer_id, "evt_gs_1", "delivered").await;
    assert_eq!(row["attempts"], 0);
    let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(p["peer_instance_id"], "instance-b");

    let printed = listen.json().await;
    assert_eq!(printed["id"], "evt_gs_1");
    assert_eq!(printed["kitefedorigin"], "instance-a");
    assert_eq!(printed["kitefedhops"], 1);
    let _ = listen.child.kill().await;
}

#[tokio::test]
async fn scopes_select_what_each_peer_gets() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let c = Instance::start("instance-c").await;
    let (to_b, _) = peer(&a, &b, &["stripe.*"], 3).await;
    let (to_c, _) = peer(&a, &c, &["*"], 3).await;

    assert_eq!(
        a.hook(
            "stripe",
            &stripe_event("evt_sc_1", "payment_intent.succeeded")
        )
        .await
        .0,
        202
    );
    assert_eq!(github_push(&a, "gh-sc-1").await.0, 202);

    wait_event(&b, "evt_sc_1").await;
    wait_event(&c, "evt_sc_1").await;
    let gh = wait_event(&c, "gh-sc-1").await;
    assert_eq!(gh["event"]["type"], "com.github.push");
    wait_state(&a, &to_c, "gh-sc-1", "delivered").await;
    wait_state(&a, &to_b, "evt_sc_1", "delivered").await;
    // The GitHub event was routed (C has it) but never matched B's scopes: no row, no event.
    assert!(outbox_state(&a, &to_b, "gh-sc-1").await.is_none());
    assert_eq!(b.count_events("gh-sc-1").await, 0);
}

#[tokio::test]
async fn a_to_b_to_c_counts_hops_and_max_hops_stops_it() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let c = Instance::start("instance-c").await;
    peer(&a, &b, &["*"], 3).await;
    let (b_to_c, _) = peer(&b, &c, &["*"], 3).await;

    assert_eq!(
        a.hook("stripe", &stripe_event("evt_abc_1", "charge.succeeded"))
            .await
            .0,
        202
    );
    let at_c = wait_event(&c, "evt_abc_1").await;
    assert_eq!(at_c["event"]["kitefedhops"], 2);
    assert_eq!(
        at_c["event"]["kitefedchain"],
        "[\"instance-a\",\"instance-b\"]"
    );
    assert_eq!(at_c["event"]["kitefedorigin"], "instance-a");

    let (s, p) = b
        .patch(
            &format!("/api/federation/peers/{b_to_c}"),
            json!({"max_hops": 1}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["max_hops"], 1);
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_abc_2", "charge.succeeded"))
            .await
            .0,
        202
    );
    let row = wait_state(&b, &b_to_c, "evt_abc_2", "skipped").await;
    assert_eq!(row["reason"], "max_hops");
    assert_eq!(c.count_events("evt_abc_2").await, 0);
}

#[tokio::test]
async fn two_way_peering_stores_once_on_each_and_stops_the_loop() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (a_to_b, _) = peer(&a, &b, &["*"], 3).await;
    let (b_to_a, _) = peer(&b, &a, &["*"], 3).await;

    assert_eq!(
        a.hook("stripe", &stripe_event("evt_loop_1", "charge.succeeded"))
            .await
            .0,
        202
    );
    wait_state(&a, &a_to_b, "evt_loop_1", "delivered").await;
    // B forwards back to A (it does not know A's id yet); A sees itself in the chain and
    // answers loop_ignored, which B records as delivered and learns A's id.
    let back = eventually("B's row to A settled", WAIT, || async {
        outbox_state(&b, &b_to_a, "evt_loop_1")
            .await
            .filter(|r| r["status"] == "delivered" || r["status"] == "skipped")
    })
    .await;
    assert!(back["status"] == "delivered" || back["reason"] == "loop");
    assert_eq!(a.count_events("evt_loop_1").await, 1);
    assert_eq!(b.count_events("evt_loop_1").await, 1);
    // Nothing else is in flight: A never routed the event a second time.
    assert_eq!(a.outbox("").await.len(), 1);
    assert_eq!(b.outbox("").await.len(), 1);
    let (_, p) = b.get(&format!("/api/federation/peers/{b_to_a}")).await;
    assert_eq!(p["peer_instance_id"], "instance-a");

    // Now that B knows A's id, a second event stops at B's router: skipped, reason loop.
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_loop_2", "charge.succeeded"))
            .await
            .0,
        202
    );
    let row = wait_state(&b, &b_to_a, "evt_loop_2", "skipped").await;
    assert_eq!(row["reason"], "loop");
    assert_eq!(a.count_events("evt_loop_2").await, 1);
}

fn sign(token: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut m =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(token.as_bytes()).expect("key");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

#[tokio::test]
async fn federation_inbound_rejects_forged_requests_and_stores_nothing() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (_, token) = peer(&a, &b, &["*"], 3).await;
    let body = serde_json::to_vec(
        &json!({"specversion":"1.0","id":"forged-1","source":"/x","type":"com.stripe.charge",
        "kitefedorigin":"instance-a","kitefedchain":"[\"instance-a\"]","kitefedhops":1}),
    )
    .expect("json");
    let url = format!("{}/hooks/default/kite", b.url);
    let send = |bearer: Option<String>, sig: Option<String>| {
        let mut r = b
            .http
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(body.clone());
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        if let Some(s) = sig {
            r = r.header("x-kite-signature", s);
        }
        async move {
            let resp = r.send().await.expect("send");
            let s = resp.status().as_u16();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cases = [
        (
            Some(token.clone()),
            Some(sign(&token, b"other body")),
            "invalid_signature",
        ),
        (
            Some(token.clone()),
            Some("sha256=zz".to_string()),
            "invalid_signature",
        ),
        (Some(token.clone()), None, "invalid_signature"),
        (
            Some("kfed_unknown".to_string()),
            Some(sign("kfed_unknown", &body)),
            "unknown_sender",
        ),
        (None, Some(sign(&token, &body)), "unknown_sender"),
    ];
    for (bearer, sig, code) in cases {
        let (s, v) = send(bearer, sig).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    // A correct body-only Kite signature is refused unless the sender is marked legacy.
    let (s, v) = send(Some(token.clone()), Some(sign(&token, &body))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "{v}"
    );
    assert_eq!(b.total_events().await, 0);
    let (_, senders) = b.get("/api/federation/trusted-senders").await;
    let sid = senders["items"][0]["id"]
        .as_str()
        .expect("sender id")
        .to_string();
    let (s, v) = b
        .patch(
            &format!("/api/federation/trusted-senders/{sid}"),
            json!({"legacy_signature": true}),
        )
        .await;
    assert_eq!(
        (s, v["legacy_signature"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    let accepted = eventually("legacy signature accepted", WAIT, || async {
        let (s, v) = send(Some(token.clone()), Some(sign(&token, &body))).await;
        (s == 202).then_some(v)
    })
    .await;
    assert_eq!(accepted["id"], "forged-1");
    assert_eq!(b.count_events("forged-1").await, 1);
}

#[tokio::test]
async fn dead_deliveries_replay_exactly_once_when_the_peer_is_back() {
    // A high failure threshold keeps the peer from being parked, so rows run out of attempts.
    let a = Instance::start_with("instance-a", &[("KITE_PEER_FAILURE_THRESHOLD", "1000")]).await;
    let (peer_id, token, port) = peer_at_free_port(&a).await;
    let ids: Vec<String> = (0..5).map(|i| format!("evt_dead_{i}")).collect();
    for id in &ids {
        assert_eq!(
            a.hook("stripe", &stripe_event(id, "charge.failed")).await.0,
            202
        );
    }
    for id in &ids {
        let row = wait_state(&a, &peer_id, id, "dead").await;
        assert_eq!(row["attempts"], 3);
        assert!(
            row["last_error"].as_str().unwrap_or("").contains("connect"),
            "{row}"
        );
    }
    let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert!(p["consecutive_failures"].as_i64().unwrap_or(0) >= 15, "{p}");

    let b = Instance::start_with("instance-b", &[("KITE_PORT", &port.to_string())]).await;
    let (s, v) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"instance-a","inbound_token": token}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = a
        .post(
            &format!("/api/federation/peers/{peer_id}/replay-dead"),
            json!({"limit": 100}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replayed"], 5);
    for id in &ids {
        wait_state(&a, &peer_id, id, "delivered").await;
        assert_eq!(b.count_events(id).await, 1);
    }
    // A second replay finds nothing dead.
    let (_, v) = a
        .post(
            &format!("/api/federation/peers/{peer_id}/replay-dead"),
            json!({"limit": 100}),
        )
        .await;
    assert_eq!(v["replayed"], 0);
    assert_eq!(b.total_events().await, 5);
}

#[tokio::test]
async fn pause_holds_resume_delivers_and_delete_cancels() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (peer_id, _) = peer(&a, &b, &["*"], 3).await;
    let (s, p) = a
        .patch(
            &format!("/api/federation/peers/{peer_id}"),
            json!({"status":"paused"}),
        )
        .await;
    assert_eq!((s, p["status"].as_str()), (200, Some("paused")));

    for i in 0..3 {
        assert_eq!(
            a.hook(
                "stripe",
                &stripe_event(&format!("evt_pause_{i}"), "charge.succeeded")
            )
            .await
            .0,
            202
        );
    }
    for i in 0..3 {
        wait_state(&a, &peer_id, &format!("evt_pause_{i}"), "pending").await;
    }
    // Held: while paused, B stays empty. Checked over a window while rows stay pending.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        assert_eq!(b.total_events().await, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _) = a
        .patch(
            &format!("/api/federation/peers/{peer_id}"),
            json!({"status":"active"}),
        )
        .await;
    assert_eq!(s, 200);
    for i in 0..3 {
        wait_state(&a, &peer_id, &format!("evt_pause_{i}"), "delivered").await;
        assert_eq!(b.count_events(&format!("evt_pause_{i}")).await, 1);
    }

    // Delete: pending rows become cancelled and nothing more is sent.
    a.patch(
        &format!("/api/federation/peers/{peer_id}"),
        json!({"status":"paused"}),
    )
    .await;
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_del_1", "charge.succeeded"))
            .await
            .0,
        202
    );
    wait_state(&a, &peer_id, "evt_del_1", "pending").await;
    let (s, v) = a.delete(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cancelled"], 1);
    let row = outbox_state(&a, &peer_id, "evt_del_1")
        .await
        .expect("row kept");
    assert_eq!(row["status"], "cancelled");
    let (s, _) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(s, 404);
    assert_eq!(b.count_events("evt_del_1").await, 0);
}

#[tokio::test]
async fn duplicate_ingest_is_ignored_and_routed_once() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (peer_id, _) = peer(&a, &b, &["*"], 3).await;
    let ev = stripe_event("evt_dup_1", "charge.succeeded");
    assert_eq!(a.hook("stripe", &ev).await.0, 202);
    let (s, v) = a.hook("stripe", &ev).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"status":"duplicate_ignored","id":"evt_dup_1"}));
    wait_state(&a, &peer_id, "evt_dup_1", "delivered").await;
    assert_eq!(a.count_events("evt_dup_1").await, 1);
    assert_eq!(b.count_events("evt_dup_1").await, 1);
    assert_eq!(a.outbox(&format!("peer_id={peer_id}")).await.len(), 1);
    // Concurrent repeats of one new event: exactly one is accepted.
    let ev2 = stripe_event("evt_dup_2", "charge.succeeded");
    let answers = futures::future::join_all((0..8).map(|_| a.hook("stripe", &ev2))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let dups = answers
        .iter()
        .filter(|(s, v)| *s == 200 && v["status"] == "duplicate_ignored")
        .count();
    assert_eq!((accepted, dups), (1, 7), "{answers:?}");
}

#[tokio::test]
async fn events_are_routed_as_they_are_stored_without_a_router() {
    // No router role anywhere on A: the ingest transaction writes the outbox rows and
    // publishes the deliveries itself.
    let a = Instance::start_with("instance-a", &[("KITE_ROLES", "ingress,delivery")]).await;
    let b = Instance::start("instance-b").await;
    let (to_b, _) = peer(&a, &b, &["stripe.*"], 3).await;
    let (s, v) = a
        .hook(
            "stripe",
            &stripe_event("evt_ingest_route_1", "charge.succeeded"),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(github_push(&a, "gh-ingest-route-1").await.0, 202);
    wait_event(&b, "evt_ingest_route_1").await;
    wait_state(&a, &to_b, "evt_ingest_route_1", "delivered").await;
    // Both events are routed (the GitHub one matched no scope: no row), in the same
    // transaction that stored them.
    let db = a.db().await;
    let rows = db
        .query(
            "SELECT ce_id, routed_at IS NOT NULL AND routed_at = received_at FROM events ORDER BY seq",
            &[],
        )
        .await
        .expect("events");
    let routed: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        routed,
        vec![
            ("evt_ingest_route_1".to_string(), true),
            ("gh-ingest-route-1".to_string(), true)
        ]
    );
    assert!(outbox_state(&a, &to_b, "gh-ingest-route-1").await.is_none());
}

/// A federated event as a peer forwards it: from instance-a, one hop.
fn forwarded(id: &str, chain: &[&str]) -> Value {
    json!({"specversion":"1.0","id":id,"source":"/batch","type":"com.stripe.charge",
        "kitefedorigin":"instance-a","kitefedchain":serde_json::to_string(chain).expect("chain"),
        "kitefedhops":chain.len(),"data":{"n":1}})
}

#[tokio::test]
async fn a_batch_is_authenticated_once_and_taken_event_by_event() {
    use kite_wire::{batch, signature};
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let (_, token) = peer(&a, &b, &["*"], 3).await;
    let url = format!("{}/hooks/default/kite", b.url);
    let post = |events: Vec<Value>, signed_over: Option<Vec<u8>>| {
        let body = serde_json::to_vec(&events).expect("json");
        let now = chrono::Utc::now().timestamp();
        let over = signed_over.unwrap_or_else(|| body.clone());
        let mut r = b.http.post(&url).body(body);
        for (k, v) in signature::federation_headers(&token, &[], None, "msg_batch_t", now, &over) {
            if k != "content-type" {
                r = r.header(k, v);
            }
        }
        let r = r.header("content-type", batch::CONTENT_TYPE);
        async move {
            let resp = r.send().await.expect("send");
            let s = resp.status().as_u16();
            let offer = resp
                .headers()
                .get(batch::OFFER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (s, offer, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Refused whole: a signature over another body, a body that is no batch, too many events.
    let (s, _, v) = post(
        vec![forwarded("b-1", &["instance-a"])],
        Some(b"other".to_vec()),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "{v}"
    );
    let many = (0..=batch::MAX_EVENTS)
        .map(|i| forwarded(&format!("m-{i}"), &["instance-a"]))
        .collect();
    let (s, _, v) = post(many, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("batch_too_large")),
        "{v}"
    );
    let (s, _, v) = post(Vec::new(), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_batch")),
        "{v}"
    );
    assert_eq!(b.total_events().await, 0);

    // Each event on its own: a bad one fails alone, a loop is ignored, the rest are stored.
    let mut bad = forwarded("b-bad", &["instance-a"]);
    bad.as_object_mut().expect("object").remove("type");
    let (s, offer, v) = post(
        vec![
            forwarded("b-1", &["instance-a"]),
            bad,
            forwarded("b-loop", &["instance-b", "instance-a"]),
            forwarded("b-2", &["instance-a"]),
        ],
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(offer.as_deref(), Some("64"), "B offers batches");
    let r = &v["results"];
    assert_eq!(
        (r[0]["status"].as_str(), r[0]["id"].as_str()),
        (Some("accepted"), Some("b-1")),
        "{v}"
    );
    assert!(r[0]["seq"].as_i64().is_some(), "{v}");
    assert_eq!(r[1]["status"], "rejected", "{v}");
    assert_eq!(r[1]["http_status"], 400, "{v}");
    assert_eq!(r[1]["error"]["code"], "invalid_cloudevent", "{v}");
    assert_eq!(r[2]["status"], "loop_ignored", "{v}");
    assert_eq!(
        (r[3]["status"].as_str(), r[3]["id"].as_str()),
        (Some("accepted"), Some("b-2")),
        "{v}"
    );
    // Sent again, it is held already.
    let (s, _, v) = post(vec![forwarded("b-1", &["instance-a"])], None).await;
    assert_eq!(
        (s, v["results"][0]["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );
    assert_eq!(b.count_events("b-1").await, 1);
    assert_eq!(b.count_events("b-2").await, 1);
    assert_eq!(b.total_events().await, 2);
    // Counted event by event.
    let k = [("source", "kite"), ("team", "default")];
    let with = |o: &'static str| [k[0], k[1], ("outcome", o)];
    common::metrics::reaches(&b, "kite_ingest_total", &with("accepted"), 2.0).await;
    common::metrics::reaches(&b, "kite_ingest_total", &with("duplicate"), 1.0).await;
    common::metrics::reaches(&b, "kite_ingest_total", &with("loop"), 1.0).await;
}

#[tokio::test]
async fn a_kite_peer_that_offers_batches_gets_what_waits_in_one_request() {
    batches_carry_what_waits(false).await;
}

#[tokio::test]
async fn a_handshake_peer_gets_batches_and_checks_each_origin_signature() {
    batches_carry_what_waits(true).await;
}

/// A delivers to B (a token peer, or a handshake peer whose events carry A's origin
/// signature); B offers batches on its first answer; rows that died while B was down are
/// replayed as one message and go in one request, each stored once.
async fn batches_carry_what_waits(handshake: bool) {
    // One attempt a row and a peer never parked: rows die while B is down.
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_RETRY_MAX_ATTEMPTS", "1"),
            ("KITE_PEER_FAILURE_THRESHOLD", "1000"),
        ],
    )
    .await;
    let mut b = Instance::start("instance-b").await;
    let peer_id = if handshake {
        kite_kit::client::peer_by_invitation(&a.client(), &b.client(), &["*"], 3)
            .await
            .expect("peer by invitation")
            .0
    } else {
        peer(&a, &b, &["*"], 3).await.0
    };
    // The first event goes alone; B's answer offers batches.
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_batch_0", "charge.paid"))
            .await
            .0,
        202
    );
    wait_state(&a, &peer_id, "evt_batch_0", "delivered").await;
    b.kill().await;
    let ids: Vec<String> = (1..=5).map(|i| format!("evt_batch_{i}")).collect();
    for id in &ids {
        assert_eq!(
            a.hook("stripe", &stripe_event(id, "charge.paid")).await.0,
            202
        );
    }
    for id in &ids {
        wait_state(&a, &peer_id, id, "dead").await;
    }
    b.spawn().await;
    let labels = [("team", "default")];
    let read = |text: &str, name: &str| common::metrics::value(text, name, &labels).unwrap_or(0.0);
    let before = common::metrics::scrape(&a).await;
    // Replayed rows are one message: what waits goes in one request.
    let (s, v) = a
        .post(
            &format!("/api/federation/peers/{peer_id}/replay-dead"),
            json!({"limit": 100}),
        )
        .await;
    assert_eq!((s, v["replayed"].as_i64()), (200, Some(5)), "{v}");
    for id in &ids {
        wait_state(&a, &peer_id, id, "delivered").await;
        assert_eq!(b.count_events(id).await, 1);
    }
    let after = common::metrics::scrape(&a).await;
    let delta = |name| read(&after, name) - read(&before, name);
    assert_eq!(delta("kite_delivery_batches_total"), 1.0, "{after}");
    assert_eq!(delta("kite_delivery_batched_events_total"), 5.0, "{after}");
    assert_eq!(b.total_events().await, 6);
    if handshake {
        // B checked and kept each event's origin signature: A's.
        let db = b.db().await;
        for id in &ids {
            let row = db
                .query_one(
                    "SELECT fed_sigkey FROM events WHERE ce_id = $1",
                    &[&id.as_str()],
                )
                .await
                .expect("event row");
            let key: Option<String> = row.get(0);
            assert!(
                key.as_deref().is_some_and(|k| k.starts_with("instance-a ")),
                "{key:?}"
            );
        }
    }
}
