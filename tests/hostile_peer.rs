//! A hostile peer can only hurt itself. kite against the kit's hostile peer: a fake kite
//! server with its own keys that joins through a genuine invitation (or invites) and then
//! misbehaves. One test per way it tries; each checks the refusal, that nothing was stored or
//! sent, and that genuine peers' traffic at the same moment went through.

mod common;

use std::time::Duration;

use common::cli::*;
use common::metrics::{scrape, value};
use common::peering::*;
use common::*;
use futures::StreamExt;
use kite_kit::hostile::{Answer, HostilePeer, Key};
use kite_wire::identity::PublicKey;
use kite_wire::peering::{PublishedKey, Terms};
use kite_wire::provenance;
use serde_json::{json, Value};

/// Where a genuine instance is, as a peer addresses it: its URL and server name.
fn at(inst: &Instance) -> (&str, &str) {
    (&inst.url, &inst.name)
}

/// A new invitation of `inst`'s (its API), sending `scopes`.
async fn invitation(inst: &Instance, scopes: &[&str]) -> String {
    let (s, v) = inst
        .post("/api/federation/invitations", json!({"scopes": scopes}))
        .await;
    assert_eq!(s, 201, "{v}");
    v["invitation"].as_str().expect("invitation").to_owned()
}

/// A hostile peer named `name`, joined to `inst` by an invitation of `inst`'s sending
/// `scopes`; it says it sends everything.
async fn joined(inst: &Instance, name: &str, scopes: &str) -> HostilePeer {
    let h = HostilePeer::start(name).await.expect("hostile peer");
    let inv = invitation(inst, &[scopes]).await;
    let (s, v) = h.join(&inv, &["*"]).await;
    assert_eq!(s, 200, "{name} joins {}: {v}", inst.name);
    h
}

/// A federated event `origin` sends, unsigned: origin and chain `chain`, hops its length.
fn unsigned(id: &str, ty: &str, origin: &str, chain: &[&str]) -> String {
    json!({
        "specversion": "1.0", "id": id, "source": "/hooks/default/x", "type": ty,
        "datacontenttype": "application/json", "data": {"id": id},
        "kitefedorigin": origin,
        "kitefedchain": serde_json::to_string(chain).expect("chain"),
        "kitefedhops": chain.len()
    })
    .to_string()
}

/// The process' resident memory, from its metrics.
async fn rss(inst: &Instance) -> f64 {
    value(
        &scrape(inst).await,
        "kite_process_resident_memory_bytes",
        &[],
    )
    .expect("resident memory")
}

const MIB: f64 = 1024.0 * 1024.0;

/// Waits until `inst` holds the event `id` once.
async fn holds(inst: &Instance, id: &str) {
    eventually(&format!("{id} on {}", inst.name), WAIT, || async {
        (inst.count_events(id).await == 1).then_some(())
    })
    .await;
}

/// The events the hostile peer was sent (their ids), in order.
fn delivered_to(h: &HostilePeer) -> Vec<String> {
    h.seen_at("/hooks/default/kite")
        .iter()
        .flat_map(|s| {
            let v: Value = serde_json::from_slice(&s.body).unwrap_or(Value::Null);
            match v {
                Value::Array(items) => items,
                one => vec![one],
            }
        })
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

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

#[tokio::test]
async fn junk_never_grows_what_kite_keeps() {
    let a = Instance::start("ja").await;
    let size_before = scrape(&a).await.len();
    let rss_before = rss(&a).await;
    // 3,000 hooks to as many made-up sources, half of them refused.
    let posts = futures::stream::iter(0..3000).map(|i| {
        let a = &a;
        async move {
            let body = if i % 2 == 0 {
                json!({"id": format!("junk_{i}"), "type": "x"}).to_string()
            } else {
                "{not json".to_string()
            };
            let r = a
                .http
                .post(format!("{}/hooks/default/junk-source-{i}", a.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post");
            r.status().as_u16()
        }
    });
    let statuses: Vec<u16> = posts.buffer_unordered(32).collect().await;
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1500);
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 1500);
    // Genuine traffic at the same moment keeps its own label.
    let (s, _) = a
        .hook("stripe", &stripe_event("j_stripe", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);

    let text = scrape(&a).await;
    let series = text
        .lines()
        .filter(|l| l.starts_with("kite_ingest_total{"))
        .count();
    assert!(series <= 6, "{series} kite_ingest_total series:\n{text}");
    let other = |outcome| {
        value(
            &text,
            "kite_ingest_total",
            &[
                ("team", "default"),
                ("source", "other"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (other("accepted"), other("rejected")),
        (Some(1500.0), Some(1500.0))
    );
    assert_eq!(
        value(
            &text,
            "kite_ingest_total",
            &[("source", "stripe"), ("outcome", "accepted")]
        ),
        Some(1.0)
    );
    assert!(
        text.len() < size_before + 32 * 1024,
        "/metrics grew from {size_before} to {} bytes",
        text.len()
    );
    assert!(rss(&a).await < rss_before + 64.0 * MIB);
}

#[tokio::test]
async fn policy_names_and_tokens_are_checked_before_anything_else() {
    let b = Instance::start("pb").await;
    let t = Instance::start("pt").await;
    admin(
        &b,
        &[
            "policy",
            "set",
            "--mode",
            "invite_only",
            "--allowed-peers",
            "ph,pt",
        ],
    )
    .await
    .ok();
    let h = HostilePeer::start("ph").await.expect("hostile");

    // Names that are no server names: refused, nothing stored.
    let inv = invitation(&b, &["*"]).await;
    for name in ["<img src=x onerror=alert(1)>".to_string(), "a".repeat(2048)] {
        let (s, v) = h.claiming(&name).join(&inv, &["*"]).await;
        assert_eq!((s, code(&v)), (400, "invalid_server_name"), "{v}");
    }
    // A wrong token is refused before the given URL is even looked at.
    let (s, v) = h
        .join_with(&inv, &["*"], |r| {
            r.token = "wrong".into();
            r.server.endpoints.base_url = "http://no-such-host.invalid".into();
        })
        .await;
    assert_eq!((s, code(&v)), (401, "invalid_invitation"), "{v}");
    // Claiming the allowed name `pt` with its own keys: the server at the URL it gives says
    // otherwise. Giving pt's URL: pt publishes other keys.
    let (s, v) = h.claiming("pt").join(&inv, &["*"]).await;
    assert_eq!((s, code(&v)), (401, "descriptor_mismatch"), "{v}");
    let (s, v) = h
        .claiming("pt")
        .join_with(&inv, &["*"], |r| {
            r.server.endpoints = kite_wire::peering::Endpoints::at(&t.url)
        })
        .await;
    assert_eq!((s, code(&v)), (401, "descriptor_mismatch"), "{v}");
    assert!(peer_of(&b, "pt").await.is_none() && peer_of(&b, "ph").await.is_none());
    // The invitation was not spent: the genuine pt takes it.
    peer_cmd(&t, &["accept", &inv, "--scopes", "*"]).await.ok();
    peer_of(&b, "pt").await.expect("pt peers with B");

    // H joins under its own name. Asked about pt with the key id pt publishes to anyone,
    // B says what it says of a server it does not know: H learns nothing of B's peers.
    let (s, v) = h.join(&invitation(&b, &["*"]).await, &["*"]).await;
    assert_eq!(s, 200, "{v}");
    let pt_key = keys_of(&t).await.remove(0).0.key_id;
    let (s1, v1) = h.key_query(at(&b), "pt", &pt_key).await;
    let (s2, v2) = h.key_query(at(&b), "nobody", &pt_key).await;
    assert_eq!((s1, code(&v1)), (404, "not_found"), "{v1}");
    assert_eq!((s2, code(&v2)), (404, "not_found"), "{v2}");
    // Once pt's own event went to H through B, B vouches for the key it was signed with.
    let (s, _) = t
        .hook("stripe", &stripe_event("p_to_h", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("pt's event at H", WAIT, || async {
        delivered_to(&h)
            .contains(&"p_to_h".to_string())
            .then_some(())
    })
    .await;
    let (s, v) = h.key_query(at(&b), "pt", &pt_key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1));

    // Once the policy no longer names H, it is refused on every request, while pt is not.
    assert_eq!(h.heartbeat(at(&b), None, None).await.reply.0, 200);
    admin(&b, &["policy", "set", "--allowed-peers", "pt"])
        .await
        .ok();
    let sent = h.heartbeat(at(&b), None, None).await;
    assert_eq!(
        (sent.reply.0, code(&sent.reply.1)),
        (403, "peer_not_allowed"),
        "{:?}",
        sent.reply
    );
    let (s, v) = h.send_event(at(&b), &h.event(STRIPE, "p_after")).await;
    assert_eq!((s, code(&v)), (403, "peer_not_allowed"), "{v}");
    assert_eq!(b.count_events("p_after").await, 0);
    let (s, _) = t
        .hook("stripe", &stripe_event("p_genuine", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    holds(&b, "p_genuine").await;
}

#[tokio::test]
async fn a_peers_server_to_server_calls_are_rate_limited_by_peer_and_address() {
    let b = Instance::start_with(
        "lb",
        &[
            ("KITE_RATE_PEER_PER_SEC", "2"),
            ("KITE_RATE_PEER_BURST", "5"),
            ("KITE_HEARTBEAT_INTERVAL_SECS", "1"),
            ("KITE_HEARTBEAT_MISSES", "3"),
        ],
    )
    .await;
    let c = Instance::start_with("lc", FAST_HEARTBEATS).await;
    handshake(&b, &c, "*", "*").await;
    status_becomes(&b, "lc", "active").await;
    let h = joined(&b, "lh", "*").await;

    let mut limited = 0;
    for _ in 0..30 {
        let sent = h.heartbeat(at(&b), None, None).await;
        if sent.reply.0 == 429 {
            assert_eq!(code(&sent.reply.1), "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 20, "{limited} of 30 limited");
    // Junk signed by nobody is charged to its address.
    let mut junk_limited = 0;
    for _ in 0..150 {
        let r = b
            .http
            .post(format!("{}/federation/v1/teams/default/heartbeat", b.url))
            .header("x-kite-server", "lh")
            .header("x-kite-key-id", "ed25519:0")
            .header("x-kite-destination", "lb")
            .body("{}")
            .send()
            .await
            .expect("post");
        if r.status() == 429 {
            junk_limited += 1;
        }
    }
    assert!(junk_limited > 0);
    // The genuine peer's heartbeats and events went on meanwhile.
    let (s, _) = c
        .hook("stripe", &stripe_event("l_genuine", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    holds(&b, "l_genuine").await;
    assert_eq!(peer_of(&b, "lc").await.expect("peer")["status"], "active");
}

#[tokio::test]
async fn a_revocation_applies_before_it_is_answered_and_everywhere_within_the_bound() {
    let b = Instance::start("xb").await;
    // In the process that made it: every time, at once.
    for i in 0..40 {
        let name = format!("xh{i}");
        let h = joined(&b, &name, "*").await;
        let id = peer_of(&b, &name).await.expect("peer")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (s, v) = b
            .patch(
                &format!("/api/federation/peers/{id}"),
                json!({"status": "revoked"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let sent = h.heartbeat(at(&b), None, None).await;
        assert_eq!(
            (sent.reply.0, code(&sent.reply.1)),
            (403, "peer_revoked"),
            "try {i}: {:?}",
            sent.reply
        );
    }
    // In another process of the same instance: within the caches' bound.
    let other = Proc::start(&b, "ingress").await;
    let other_url = other.url.clone().expect("url");
    let h = joined(&b, "xlast", "*").await;
    assert_eq!(
        h.heartbeat((&other_url, "xb"), None, None).await.reply.0,
        200
    );
    let id = peer_of(&b, "xlast").await.expect("peer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (s, _) = b
        .patch(
            &format!("/api/federation/peers/{id}"),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 200);
    let bound = kite_store::cache::MAX_AGE + Duration::from_secs(2);
    eventually(
        "the other process refuses the revoked peer",
        bound,
        || async {
            (h.heartbeat((&other_url, "xb"), None, None).await.reply.0 == 403).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kite_admin_into_head_ends_quietly() {
    let a = Instance::start("ha").await;
    for i in 0..300 {
        let (s, _) = a
            .hook(
                "stripe",
                &stripe_event(&format!("head_{i}"), "charge.succeeded"),
            )
            .await;
        assert_eq!(s, 202);
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "admin",
            "--instance",
            &a.url,
            "--api-key",
            &a.key,
            "events",
            "--limit",
            "1000",
            "--output",
            "json",
        ])
        .env("HOME", "/nonexistent")
        .env_remove("KITE_INSTANCE")
        .env_remove("KITE_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kite admin");
    // `| head -1`: one line read, then the pipe closed.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = lines.next_line().await.expect("read").expect("a line");
    assert_eq!(first.trim(), "{");
    drop(lines);
    let out = child.wait_with_output().await.expect("exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}
