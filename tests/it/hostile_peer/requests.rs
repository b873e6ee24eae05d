//! Signed requests good only at their destination and once; answers read up to a bound.

use super::*;

#[tokio::test]
async fn a_signed_request_is_good_only_at_its_destination_and_only_once() {
    let b = Instance::start_with("rb", FAST_HEARTBEATS).await;
    let c = Instance::start("rc").await;
    // C is B's genuine peer and lets B pull its history.
    handshake(&c, &b, "*", "*").await;
    peer_cmd(&c, &["grant", "rb", "--permission", "backfill"])
        .await
        .ok();
    let h = joined(&b, "rh", "*").await;

    // B pulls H's history: H keeps B's signed request and relays it to C, where B holds a
    // backfill grant. C refuses it: it was made for H.
    let page = vec![h.event(STRIPE, "h_page")];
    h.set(|x| x.page = page);
    peer_cmd(&b, &["backfill", "rh"]).await.ok();
    let asked = h.seen_at("/backfill").remove(0);
    let to_c = format!("{}/federation/v1/teams/default/backfill", c.url);
    let (s, v) = h
        .send_raw(
            &to_c,
            &asked.headers,
            "application/json",
            asked.body.to_vec(),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "wrong_destination"), "{v}");
    // Naming C instead breaks the signature.
    let renamed: Vec<(String, String)> = asked
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "x-kite-destination" => (k.clone(), "rc".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let (s, v) = h
        .send_raw(&to_c, &renamed, "application/json", asked.body.to_vec())
        .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"), "{v}");
    // B's heartbeats to H, relayed to C: refused the same way.
    eventually("a heartbeat from B at H", WAIT, || async {
        (!h.seen_at("/heartbeat").is_empty()).then_some(())
    })
    .await;
    let beat = h.seen_at("/heartbeat").remove(0);
    let (s, v) = h
        .send_raw(
            &format!("{}/federation/v1/teams/default/heartbeat", c.url),
            &beat.headers,
            "application/json",
            beat.body.to_vec(),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "wrong_destination"), "{v}");

    // B's own backfill from C works at the same moment.
    let (s, _) = c
        .hook("stripe", &stripe_event("c_history", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    holds(&b, "c_history").await;
    let done = peer_cmd(&b, &["backfill", "rc", "--output", "json"])
        .await
        .ok()
        .json();
    assert!(done["fetched"].as_u64() >= Some(1), "{done}");

    // H's own heartbeat, sent twice as it was: the second is a replay.
    let sent = h.heartbeat(at(&b), None, None).await;
    assert_eq!(sent.reply.0, 200, "{:?}", sent.reply);
    let heartbeat = format!("{}/federation/v1/teams/default/heartbeat", b.url);
    let (s, v) = h
        .send_raw(
            &heartbeat,
            &sent.headers,
            "application/json",
            sent.body.clone(),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "replayed_request"), "{v}");
    // An event POST replayed: refused too, and nothing stored twice.
    let first = h
        .post(
            &b.url,
            "rb",
            "/hooks/default/kite",
            "application/cloudevents+json",
            h.event(STRIPE, "h_once").into_bytes(),
            None,
        )
        .await;
    assert_eq!(first.reply.0, 202, "{:?}", first.reply);
    let (s, v) = h
        .send_raw(
            &format!("{}/hooks/default/kite", b.url),
            &first.headers,
            "application/cloudevents+json",
            first.body,
        )
        .await;
    assert_eq!((s, code(&v)), (401, "replayed_request"), "{v}");
    assert_eq!(b.count_events("h_once").await, 1);
}

#[tokio::test]
async fn what_a_peer_answers_is_read_up_to_a_bound() {
    let b = Instance::start("mb").await;
    let h = joined(&b, "mh", "*").await;
    let h_id = peer_of(&b, "mh").await.expect("peer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = rss(&b).await;
    const HUGE: u64 = 600 << 20;

    // A delivery answered with 600 MiB: delivered; the rest of the answer is not read.
    h.set(|x| x.hook = Answer::Huge(202, HUGE));
    let (s, _) = b
        .hook("stripe", &stripe_event("big_answer", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("the delivery settled", WAIT, || async {
        let rows = b.outbox(&format!("peer_id={h_id}")).await;
        rows.iter()
            .any(|r| r["status"] == "delivered")
            .then_some(())
    })
    .await;

    // A key query answered with 600 MiB: the event it was for is refused.
    h.set(|x| x.keys_query = Answer::Huge(200, HUGE));
    let stranger = Key::generate();
    let forwarded = h.sign_as(
        &unsigned("big_keys", STRIPE, "mx", &["mx", "mh"]),
        "mx",
        &stranger,
    );
    let (s, v) = h.send_event(at(&b), &forwarded).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    assert_eq!(b.count_events("big_keys").await, 0);

    // A backfill page of 600 MiB: refused.
    h.set(|x| x.backfill = Answer::Huge(200, HUGE));
    let run = peer_cmd(&b, &["backfill", "mh"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.err.contains("peer_unreachable"), "{run:?}");

    // A descriptor of 600 MiB, and an acceptance of 600 MiB: the invitations fail.
    let big_descriptor = HostilePeer::start("mhd").await.expect("hostile");
    big_descriptor.set(|x| x.descriptor = Answer::Huge(200, HUGE));
    let offer = Terms {
        scopes: vec!["*".into()],
        max_hops: 3,
    };
    let run = peer_cmd(&b, &["accept", &big_descriptor.invitation(offer.clone())]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let big_accept = HostilePeer::start("mha").await.expect("hostile");
    big_accept.set(|x| x.accept = Answer::Huge(200, HUGE));
    let run = peer_cmd(&b, &["accept", &big_accept.invitation(offer)]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(peer_of(&b, "mha").await.is_none() && peer_of(&b, "mhd").await.is_none());

    // An answer trickled a byte at a time, forever: the request timeout ends it, and the
    // peer's 202 stands (without a bound on the whole answer the row would never settle).
    h.set(|x| x.hook = Answer::Trickle(202));
    let (s, _) = b
        .hook("stripe", &stripe_event("slow_answer", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("the trickled delivery settled", WAIT, || async {
        let rows = b.outbox(&format!("peer_id={h_id}")).await;
        (rows.iter().filter(|r| r["status"] == "delivered").count() == 2).then_some(())
    })
    .await;

    // Through all of it, the memory stayed where it was.
    let after = rss(&b).await;
    assert!(
        after < before + 64.0 * MIB,
        "resident memory grew from {:.0} to {:.0} MiB",
        before / MIB,
        after / MIB
    );
}

#[tokio::test]
async fn what_a_peer_says_in_a_refusal_is_kept_within_bounds() {
    let b = Instance::start("wb").await;
    let h = joined(&b, "wh", "*").await;
    let h_id = peer_of(&b, "wh").await.expect("peer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Refusals whose code is no code and whose message is 100,000 characters long.
    let refusal = json!({"error": {"code": "X".repeat(10_000), "message": "m".repeat(100_000)}});
    h.set(|x| {
        x.hook = Answer::Json(400, refusal.clone());
        x.heartbeat = Answer::Json(400, refusal.clone());
    });
    let (s, _) = b
        .hook("stripe", &stripe_event("loud_refusal", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let row = eventually("the refusal was recorded", WAIT, || async {
        let rows = b.outbox(&format!("peer_id={h_id}")).await;
        rows.into_iter().find(|r| r["last_error"].is_string())
    })
    .await;
    let kept = row["last_error"].as_str().unwrap_or_default();
    assert!(kept.len() < 400, "{} bytes kept", kept.len());
    assert!(!kept.contains("XXXX"), "{kept}");
    // The event's story and the peer's record keep no more.
    let (s, story) = b.get(&format!("/api/events/{}", "loud_refusal")).await;
    assert_eq!(s, 200, "{story}");
    assert!(
        story.to_string().len() < 16_000,
        "{} bytes",
        story.to_string().len()
    );
    let peer = peer_of(&b, "wh").await.expect("peer");
    assert!(
        peer.to_string().len() < 8_000,
        "{} bytes",
        peer.to_string().len()
    );
}
