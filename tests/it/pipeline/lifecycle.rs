//! What becomes of an event's rows: forged requests refused, dead deliveries replayed, pause, resume and delete, duplicates, routing at ingest.

use super::*;

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
            "SELECT ce_id, routed_at IS NOT NULL AND routed_at = received_at FROM events
             WHERE hook_source <> '_kite' ORDER BY seq",
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
