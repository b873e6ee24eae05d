//! Relaying, scopes, hops and loops.

use super::*;

#[tokio::test]
async fn getting_started_relays_a_stripe_event_and_listen_prints_it() {
    let a = Instance::process_with("instance-a", &[]).await;
    let b = Instance::process_with("instance-b", &[]).await;
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

    // One attempt (as its story lists), no failure, and B took it as new.
    let row = wait_state(&a, &peer_id, "evt_gs_1", "delivered").await;
    assert_eq!(
        (&row["attempts"], &row["failures"], &row["peer_answer"]),
        (&json!(1), &json!(0), &json!("accepted")),
        "{row}"
    );
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
