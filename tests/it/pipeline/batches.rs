//! Batches between kite instances.

use super::*;

/// A federated event as a peer forwards it: from instance-a, one hop.
fn forwarded(id: &str, chain: &[&str]) -> Value {
    json!({"specversion":"1.0","id":id,"source":"/batch","type":"com.stripe.charge",
        "kitefedorigin":"instance-a","kitefedchain":serde_json::to_string(chain).expect("chain"),
        "kitefedhops":chain.len(),"data":{"n":1}})
}

#[tokio::test]
async fn a_batch_is_authenticated_once_and_taken_event_by_event() {
    use kite_wire::{batch, signature};
    let a = Instance::process_with("instance-a", &[]).await;
    let b = Instance::process_with("instance-b", &[]).await;
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
    let a = Instance::process_with(
        "instance-a",
        &[
            ("KITE_RETRY_MAX_ATTEMPTS", "1"),
            ("KITE_PEER_FAILURE_THRESHOLD", "1000"),
        ],
    )
    .await;
    let mut b = Instance::process_with("instance-b", &[]).await;
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
