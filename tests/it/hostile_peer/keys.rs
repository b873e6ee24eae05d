//! A peer's keys: validity and bounds; vouches for other servers' keys.

use super::*;

#[tokio::test]
async fn a_peers_keys_have_validity_and_bounds() {
    let b = Instance::start("kb").await;
    let h = joined(&b, "kh", "*").await;
    let h_id = peer_of(&b, "kh").await.expect("peer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let pinned = || async {
        let (s, v) = b.get(&format!("/api/federation/peers/{h_id}")).await;
        assert_eq!(s, 200, "{v}");
        v["keys"].as_array().cloned().unwrap_or_default()
    };
    let pinned_key = |keys: &[Value], id: &str| {
        keys.iter()
            .find(|k| k["key_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };

    // H rotates; B pins the new key, the old one with its end.
    let k1 = h.key();
    let k2 = h.rotate(Duration::from_secs(60));
    let sent = h.heartbeat(at(&b), None, Some(&k2)).await;
    assert_eq!(sent.reply.0, 200, "{:?}", sent.reply);
    let keys = pinned().await;
    assert!(pinned_key(&keys, &k2.published.key_id)["valid_until"].is_null());
    let k1_end = pinned_key(&keys, &k1.published.key_id)["valid_until"].clone();
    assert!(k1_end.is_string(), "{keys:?}");

    // Signed with the rotated-out key, a heartbeat calls it current again: its end stays,
    // and the current key is not ended.
    let old_again = PublishedKey {
        valid_until: None,
        ..k1.published.clone()
    };
    let sent = h.heartbeat(at(&b), Some(vec![old_again]), Some(&k1)).await;
    assert_eq!(sent.reply.0, 200, "{:?}", sent.reply);
    let keys = pinned().await;
    assert_eq!(
        pinned_key(&keys, &k1.published.key_id)["valid_until"],
        k1_end
    );
    assert!(pinned_key(&keys, &k2.published.key_id)["valid_until"].is_null());
    let (s, v) = h.send_event(at(&b), &h.event(STRIPE, "k_current")).await;
    assert_eq!(s, 202, "{v}");

    // Ended by a heartbeat of the current key, the old key never comes back.
    let sent = h
        .heartbeat(at(&b), Some(vec![k2.published.clone()]), Some(&k2))
        .await;
    assert_eq!(sent.reply.0, 200);
    let sent = h
        .heartbeat(
            at(&b),
            Some(vec![
                k2.published.clone(),
                PublishedKey {
                    valid_until: None,
                    ..k1.published.clone()
                },
            ]),
            Some(&k2),
        )
        .await;
    assert_eq!(sent.reply.0, 200);
    let sent = h.heartbeat(at(&b), None, Some(&k1)).await;
    assert_eq!(
        (sent.reply.0, code(&sent.reply.1)),
        (401, "invalid_signature"),
        "{:?}",
        sent.reply
    );

    // A peer pins a few keys, however many it lists or however often it changes them.
    let many: Vec<PublishedKey> = (0..40).map(|_| Key::generate().published).collect();
    let sent = h.heartbeat(at(&b), Some(many), Some(&k2)).await;
    assert_eq!(
        (sent.reply.0, code(&sent.reply.1)),
        (400, "invalid_keys"),
        "{:?}",
        sent.reply
    );
    for _ in 0..60 {
        let mut keys: Vec<PublishedKey> = (0..7).map(|_| Key::generate().published).collect();
        keys.push(k2.published.clone());
        let sent = h.heartbeat(at(&b), Some(keys), Some(&k2)).await;
        assert!([200, 429].contains(&sent.reply.0), "{:?}", sent.reply);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: i64 = b
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM peer_keys WHERE peer_id::text = $1",
            &[&h_id],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        rows <= kite_store::federation::MAX_PINNED_ROWS,
        "{rows} rows"
    );
    let (s, v) = h.send_event(at(&b), &h.event(STRIPE, "k_still")).await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test]
async fn a_vouch_counts_for_its_team_and_its_peer_only_and_stays_bounded() {
    const OPERATOR: &str = "kite_op_0123456789abcdef0123456789abcdef";
    let a = Instance::start("va").await;
    let b = Instance::start("vb").await;
    let c = Instance::start_with("vc", &[("KITE_OPERATOR_KEY", OPERATOR)]).await;
    handshake(&a, &b, "*", "*").await;
    // C's second team peers with B; C's default team with the hostile peer.
    let operator = kite_kit::client::ApiClient::with_http(c.http.clone(), &c.url, OPERATOR);
    let made = operator
        .call(
            reqwest::Method::POST,
            "/api/teams",
            Some(&json!({"id": "t2"})),
        )
        .await
        .expect("team");
    assert_eq!(made.status, 201, "{}", made.body);
    let t2_key = made.body["admin_key"]
        .as_str()
        .expect("admin key")
        .to_owned();
    let t2 = kite_kit::client::ApiClient::with_http(c.http.clone(), &c.url, &t2_key);
    let inv = t2
        .call(
            reqwest::Method::POST,
            "/api/federation/invitations",
            Some(&json!({"scopes": ["*"]})),
        )
        .await
        .expect("invitation");
    let inv = inv.body["invitation"]
        .as_str()
        .expect("invitation")
        .to_owned();
    peer_cmd(&b, &["accept", &inv, "--scopes", "*"]).await.ok();
    let h = joined(&c, "vh", "*").await;

    // H vouches a fake key under A's key id and forges A's events with it into C's
    // default team.
    let (a_key_id, _) = keys_of(&a)
        .await
        .into_iter()
        .map(|(k, s)| (k.key_id, s))
        .next()
        .expect("a key");
    let fake = Key {
        published: PublishedKey {
            key_id: a_key_id.clone(),
            ..Key::generate().published
        },
        secret: Key::generate().secret,
    };
    let fake = Key {
        published: PublishedKey {
            public_key: fake.secret.public().to_base64(),
            ..fake.published
        },
        ..fake
    };
    h.set(|x| x.vouches = vec![("va".into(), fake.published.clone())]);
    let forged = h.sign_as(
        &unsigned("forged_a", STRIPE, "va", &["va", "vh"]),
        "va",
        &fake,
    );
    // A vouch is a peer's word: in C's default team, H's events claiming A (no peer of that
    // team) are checked with the key H vouches for; this is what a vouch is bounded to.
    let _ = h.send_event(at(&c), &forged).await;

    // A's genuine events reach C's other team through B, checked with the key B vouches for.
    let (s, _) = a
        .hook("stripe", &stripe_event("genuine_a", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("A's event in C's team t2", WAIT, || async {
        let r = t2
            .call(reqwest::Method::GET, "/api/events?limit=100", None)
            .await
            .ok()?;
        r.body["items"]
            .as_array()?
            .iter()
            .any(|e| e["event"]["id"] == "genuine_a" && e["event"]["kitefedorigin"] == "va")
            .then_some(())
    })
    .await;
    // H's vouch never reached team t2.
    let r = t2
        .call(reqwest::Method::GET, "/api/events?limit=100", None)
        .await
        .expect("events");
    assert!(
        !r.body.to_string().contains("forged_a"),
        "a vouch made in one team counts in another: {}",
        r.body
    );

    // However many keys H vouches for, C holds a bounded number of them.
    let rss_before = rss(&c).await;
    for i in 0..400 {
        let k = Key::generate();
        h.set(|x| x.vouches = vec![("vx".into(), k.published.clone())]);
        let e = h.sign_as(
            &unsigned(&format!("vx_{i}"), STRIPE, "vx", &["vx", "vh"]),
            "vx",
            &k,
        );
        let (s, v) = h.send_event(at(&c), &e).await;
        assert!([202, 429].contains(&s), "{v}");
    }
    let text = scrape(&c).await;
    let vouched = value(&text, "kite_federation_vouched_keys", &[]).expect("gauge");
    // At most 256 for H's team, and the one B vouched for in t2.
    assert!(vouched <= 257.0, "{vouched} vouched keys held");
    assert!(rss(&c).await < rss_before + 64.0 * MIB);
}
