//! The accepting side's terms, and origins proven by the origin (live and in a backfill).

use super::*;

#[tokio::test]
async fn an_accepting_server_sends_what_its_admin_asked_never_what_the_inviter_answers() {
    let b = Instance::start("tb").await;
    let c = Instance::start("tc").await;
    handshake(&b, &c, "*", "*").await;
    let h = HostilePeer::start("th").await.expect("hostile");
    let offer = Terms {
        scopes: vec!["stripe.*".into()],
        max_hops: 3,
    };
    let answer = |yours: &[&str], your_hops: i32, theirs: &[&str]| {
        json!({"server_name": "th", "team": "default", "scopes": theirs, "max_hops": 3,
               "your_scopes": yours, "your_max_hops": your_hops})
    };
    let accept = |inv: String| {
        let b = &b;
        async move {
            peer_cmd(
                b,
                &[
                    "accept",
                    &inv,
                    "--scopes",
                    "stripe.*",
                    "--max-hops",
                    "2",
                    "--output",
                    "json",
                ],
            )
            .await
        }
    };
    // The answer widens what B sends (everything, 1000 hops; everything; more hops), or
    // says the inviter sends more than its invitation offered: refused, nothing kept.
    for wrong in [
        answer(&["*"], 1000, &["stripe.*"]),
        answer(&["*"], 2, &["stripe.*"]),
        answer(&["stripe.*"], 3, &["stripe.*"]),
        answer(&["stripe.*"], 2, &["*"]),
    ] {
        h.set(|x| x.accept = Answer::Json(200, wrong.clone()));
        let run = accept(h.invitation(offer.clone())).await;
        assert_eq!(run.code, Some(1), "{wrong}: {run:?}");
        assert!(run.err.contains("peering_terms_refused"), "{run:?}");
        assert!(peer_of(&b, "th").await.is_none(), "{wrong}");
    }
    // B asked for its own terms.
    let asked: Value = serde_json::from_slice(&h.seen_at("/accept")[0].body).expect("json");
    assert_eq!(
        (&asked["scopes"], &asked["max_hops"]),
        (&json!(["stripe.*"]), &json!(2))
    );

    // An honest answer: B's record holds what B's admin asked for.
    h.set(|x| x.accept = Answer::Honest);
    let on_b = accept(h.invitation(offer)).await.ok().json();
    assert_eq!(on_b["scopes"], json!(["stripe.*"]), "{on_b}");
    assert_eq!(on_b["max_hops"], 2, "{on_b}");
    // B sends the inviter Stripe events only; its genuine peer C gets both.
    let (s, _) = b
        .hook("stripe", &stripe_event("t_stripe", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let (s, _) = github_push(&b, "t_github").await;
    assert_eq!(s, 202);
    holds(&c, "t_stripe").await;
    holds(&c, "t_github").await;
    eventually("the Stripe event at the inviter", WAIT, || async {
        delivered_to(&h)
            .contains(&"t_stripe".to_string())
            .then_some(())
    })
    .await;
    let h_id = on_b["id"].as_str().expect("id");
    assert_eq!(b.outbox(&format!("peer_id={h_id}")).await.len(), 1);
    assert!(!delivered_to(&h).contains(&"t_github".to_string()));
}

#[tokio::test]
async fn only_an_origin_proves_an_origin_live_or_in_a_backfill() {
    let a = Instance::start("oa").await;
    let b = Instance::start("ob").await;
    handshake(&a, &b, "*", "*").await;
    let h = joined(&b, "oh", "*").await;
    let to_b = at(&b);
    let (a_key_id, a_key) = keys_of(&a)
        .await
        .into_iter()
        .map(|(k, s)| (k.key_id, s))
        .next()
        .expect("a key");

    // Its own event, signed: taken.
    let (s, v) = h.send_event(to_b, &h.event(STRIPE, "h_own")).await;
    assert_eq!(s, 202, "{v}");

    let forged_a = Key::generate();
    let mine = h.key();
    let refusals = [
        // Claiming A's origin unsigned.
        (
            unsigned("f_unsigned", STRIPE, "oa", &["oa", "oh"]),
            401,
            "invalid_origin_signature",
        ),
        // Claiming A's origin, signed with its own key as itself.
        (
            h.sign_as(
                &unsigned("f_self", STRIPE, "oa", &["oa", "oh"]),
                "oh",
                &mine,
            ),
            401,
            "invalid_origin_signature",
        ),
        // Claiming A's origin and A's signature, with a key A never published.
        (
            h.sign_as(
                &unsigned("f_fake_key", STRIPE, "oa", &["oa", "oh"]),
                "oa",
                &forged_a,
            ),
            401,
            "invalid_origin_signature",
        ),
        // Its own, unsigned.
        (
            unsigned("f_own_unsigned", STRIPE, "oh", &["oh"]),
            401,
            "invalid_origin_signature",
        ),
        // A chain that does not end with it.
        (
            h.sign_as(
                &unsigned("f_chain", STRIPE, "oh", &["oh", "oa"]),
                "oh",
                &mine,
            ),
            400,
            "invalid_chain",
        ),
        // Hops that are not the chain's length.
        (
            h.sign_as(
                &unsigned("f_hops", STRIPE, "oh", &["oh"])
                    .replace("\"kitefedhops\":1", "\"kitefedhops\":5"),
                "oh",
                &mine,
            ),
            400,
            "invalid_chain",
        ),
    ];
    for (i, (event, status, want)) in refusals.iter().enumerate() {
        // Genuine A → B traffic at the same moment.
        let id = format!("g_{i}");
        let (s, _) = a
            .hook("stripe", &stripe_event(&id, "charge.succeeded"))
            .await;
        assert_eq!(s, 202);
        let (s, v) = h.send_event(to_b, event).await;
        assert_eq!((s, code(&v)), (*status, *want), "{event}: {v}");
        holds(&b, &id).await;
    }
    // A's genuine event, signed with A's key, but forwarded by H as if H were on its way:
    // it verifies, and its chain ends with H, so it is taken as A's.
    let relayed = provenance::sign_text(
        &unsigned("a_relayed", STRIPE, "oa", &["oa", "oh"]),
        "oa",
        &a_key_id,
        &a_key,
    )
    .expect("sign");
    let (s, v) = h.send_event(to_b, &relayed).await;
    assert_eq!(s, 202, "{v}");

    // A backfill page holds the same forgeries: each is refused, the genuine one stored.
    let page: Vec<String> = refusals
        .iter()
        .map(|(e, _, _)| e.replace("\"id\":\"f_", "\"id\":\"bf_"))
        .chain([h.event(STRIPE, "bf_genuine")])
        .collect();
    h.set(|x| x.page = page);
    let done = peer_cmd(&b, &["backfill", "oh", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (&done["fetched"], &done["stored"], &done["rejected"]),
        (
            &json!(refusals.len() + 1),
            &json!(1),
            &json!(refusals.len())
        ),
        "{done}"
    );
    for (e, _, _) in &refusals {
        let id = serde_json::from_str::<Value>(e).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(b.count_events(&id).await, 0, "{id}");
        assert_eq!(
            b.count_events(&id.replacen("f_", "bf_", 1)).await,
            0,
            "{id}"
        );
    }
    holds(&b, "bf_genuine").await;

    // As stored and listed, H's event keeps its origin signature, which checks with H's key.
    let listed = b.event("h_own").await.expect("h_own listed");
    let ev = listed["event"].as_object().expect("object").clone();
    let sig = provenance::read(&ev).expect("readable").expect("signed");
    assert_eq!(sig.server_name, "oh");
    let hk = PublicKey::from_base64(&h.key().published.public_key).expect("key");
    assert!(provenance::verify(&ev, &sig, &hk));
}

#[tokio::test]
async fn a_copy_sent_first_under_the_senders_own_origin_never_hides_the_real_event() {
    // A peer that learned an event's id and source (a webhook it saw, a guess) sends its own
    // copy first, under the only origin it can prove, its own. The real event, when its
    // origin forwards it, is stored too: it is no duplicate of the copy.
    let a = Instance::start("twa").await;
    let b = Instance::start("twb").await;
    handshake(&a, &b, "*", "*").await;
    let h = joined(&b, "twh", "*").await;
    let to_b = peer_of(&a, "twb").await.expect("a's peer b")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{to_b}"),
            json!({"status": "paused"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_twin", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let real = a.event("evt_twin").await.expect("the event on a");
    let copy = json!({
        "specversion": "1.0", "id": "evt_twin", "source": real["event"]["source"],
        "type": real["event"]["type"], "datacontenttype": "application/json",
        "data": {"forged": true},
        "kitefedorigin": "twh", "kitefedchain": "[\"twh\"]", "kitefedhops": 1
    })
    .to_string();
    let (s, v) = h
        .send_event(at(&b), &h.sign_as(&copy, "twh", &h.key()))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(b.count_events("evt_twin").await, 1);
    // The copy again: a duplicate of itself.
    let (s, v) = h
        .send_event(at(&b), &h.sign_as(&copy, "twh", &h.key()))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );

    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{to_b}"),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("the real event on b", WAIT, || async {
        (b.count_events("evt_twin").await == 2).then_some(())
    })
    .await;
    let (s, v) = b.get("/api/events?limit=1000").await;
    assert_eq!(s, 200);
    let origins: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["event"]["id"] == "evt_twin")
        .filter_map(|e| e["event"]["kitefedorigin"].as_str())
        .collect();
    assert_eq!(origins, ["twh", "twa"], "{v}");
}
