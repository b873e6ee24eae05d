//! Provenance and history over real instances and the CLI: origin signatures checked through
//! a mesh (A → B → C, C no peer of A), backfill of missed history with every event verified,
//! and scoped, expiring grants.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::cli::*;
use common::listen::Listen;
use common::peering::*;
use common::*;
use kite_wire::identity::{self, SecretKey};
use kite_wire::provenance;
use serde_json::Value;

const GITHUB: &str = "com.github.push";

/// `event` as `origin` signs it where it enters the federation, then as `via` forwarded it.
fn signed_through(
    ty: &str,
    id: &str,
    origin: &str,
    via: &str,
    key_id: &str,
    key: &SecretKey,
) -> String {
    let first = String::from_utf8(federated_event(ty, id, origin)).expect("utf-8");
    let signed = provenance::sign_text(&first, origin, key_id, key).expect("sign");
    signed
        .replace(
            &format!("\"kitefedchain\":\"[\\\"{origin}\\\"]\""),
            &format!("\"kitefedchain\":\"[\\\"{origin}\\\",\\\"{via}\\\"]\""),
        )
        .replace("\"kitefedhops\":1", "\"kitefedhops\":2")
}

/// The identity key `inst` signs with now.
async fn current_key(inst: &Instance) -> (String, SecretKey) {
    let (k, key) = keys_of(inst)
        .await
        .into_iter()
        .find(|(k, _)| k.valid_until.is_none())
        .expect("a current key");
    (k.key_id, key)
}

#[tokio::test]
async fn a_mesh_carries_the_origin_signature_and_an_altered_body_is_refused() {
    let a = Instance::start("ma").await;
    let b = Instance::start("mb").await;
    let c = Instance::start("mc").await;
    handshake(&a, &b, "*", "*").await;
    handshake(&b, &c, "*", "*").await;
    let mut listen = Listen::start(&c, &["--source", "kite", "--json"]).await;

    // A → B → C: C is no peer of A and checks A's signature with the key B vouches for.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_mesh", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("A's event on C", WAIT, || async {
        (c.count_events("evt_mesh").await == 1).then_some(())
    })
    .await;
    let on_c = c.event("evt_mesh").await.expect("event");
    assert_eq!(on_c["event"]["kitefedorigin"], "ma");
    assert_eq!(on_c["event"]["kitefedchain"], "[\"ma\",\"mb\"]");
    // As C lists it (the listing, the event's story, `kite listen --json`), it keeps A's
    // signature, which checks with the key A publishes in its descriptor.
    let a_descriptor: Value = reqwest::get(format!("{}/.well-known/kite/server", a.url))
        .await
        .expect("descriptor")
        .json()
        .await
        .expect("json");
    let verifies_with_a = |event: &Value| {
        let ev = event.as_object().expect("object").clone();
        let sig = provenance::read(&ev).expect("readable").expect("signed");
        assert_eq!(sig.server_name, "ma", "{event}");
        let published = a_descriptor["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["key_id"] == sig.key_id.as_str())
            .and_then(|k| k["public_key"].as_str())
            .and_then(kite_wire::identity::PublicKey::from_base64)
            .expect("A publishes the key");
        provenance::verify(&ev, &sig, &published)
    };
    assert!(verifies_with_a(&on_c["event"]), "{on_c}");
    let (s, story) = c.get("/api/events/evt_mesh").await;
    assert_eq!(s, 200, "{story}");
    assert!(verifies_with_a(&story["event"]), "{story}");
    let streamed = listen.json().await;
    assert_eq!(streamed["id"], "evt_mesh");
    assert!(verifies_with_a(&streamed), "{streamed}");

    // B signs A's event itself while it still names A as its origin: only A proves A.
    let (b_key_id, b_key) = current_key(&b).await;
    let mut as_a: serde_json::Map<String, Value> =
        serde_json::from_value(on_c["event"].clone()).expect("object");
    provenance::strip(&mut as_a);
    as_a.insert("id".into(), Value::from("evt_b_as_a"));
    let b_signed = provenance::sign_text(&Value::Object(as_a).to_string(), "mb", &b_key_id, &b_key)
        .expect("sign");
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, b_signed.into_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    assert_eq!(c.count_events("evt_b_as_a").await, 0);
    // B claims A's event as its own: signed by A, not by the origin it names. Refused.
    let claimed = serde_json::to_string(&on_c["event"])
        .expect("json")
        .replace("\"kitefedorigin\":\"ma\"", "\"kitefedorigin\":\"mb\"")
        .replace(
            "\"kitefedchain\":\"[\\\"ma\\\",\\\"mb\\\"]\"",
            "\"kitefedchain\":\"[\\\"mb\\\"]\"",
        )
        .replace("\"kitefedhops\":2", "\"kitefedhops\":1")
        .replace("\"id\":\"evt_mesh\"", "\"id\":\"evt_claimed\"");
    assert!(claimed.contains("\"kitefedorigin\":\"mb\""), "{claimed}");
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, claimed.into_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    assert_eq!(c.count_events("evt_claimed").await, 0);

    // The same, sent to C by B by hand: as A signed it, accepted; its body altered at B,
    // refused with nothing stored.
    let (a_key_id, a_key) = current_key(&a).await;
    let (b_key_id, b_key) = current_key(&b).await;
    let genuine = signed_through(STRIPE, "evt_genuine", "ma", "mb", &a_key_id, &a_key);
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, genuine.clone().into_bytes()).await;
    assert_eq!(s, 202, "{v}");
    let altered = signed_through(STRIPE, "evt_altered", "ma", "mb", &a_key_id, &a_key).replace(
        "\"data\":{\"id\":\"evt_altered\"}",
        "\"data\":{\"id\":\"evt_altered\",\"amount\":1}",
    );
    assert_ne!(altered, genuine);
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, altered.into_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    assert_eq!(c.count_events("evt_altered").await, 0);

    // Signed by a server nobody here or at B knows: its key cannot be had, refused.
    let stranger = SecretKey::generate();
    let forged = signed_through(
        STRIPE,
        "evt_forged",
        "nobody",
        "mb",
        &identity::new_key_id(),
        &stranger,
    );
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, forged.into_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    // Claiming to be A with another key: refused too.
    let impostor = signed_through(STRIPE, "evt_impostor", "ma", "mb", &a_key_id, &stranger);
    let (s, v) = post_signed_as(&c, "mb", &b_key_id, &b_key, impostor.into_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_origin_signature"), "{v}");
    assert_eq!(
        c.count_events("evt_forged").await + c.count_events("evt_impostor").await,
        0
    );
}

#[tokio::test]
async fn an_event_from_a_kite_token_peer_is_signed_by_the_first_kite_instance_it_reaches() {
    let k = Instance::start("tk").await;
    let b = Instance::start("tb").await;
    let c = Instance::start("tc").await;
    // K peers with B by a shared token (as a Kite instance would), B with C by invitation.
    peer(&k, &b, &["*"], 3).await;
    handshake(&b, &c, "*", "*").await;
    let (s, _) = k
        .hook(
            "stripe",
            &stripe_event("evt_from_token", "charge.succeeded"),
        )
        .await;
    assert_eq!(s, 202);
    eventually("K's event on C", WAIT, || async {
        (c.count_events("evt_from_token").await == 1).then_some(())
    })
    .await;
    // B holds it as K sent it; C holds it signed by B as its origin, the chain naming K first.
    let on_b = b.event("evt_from_token").await.expect("on B");
    assert_eq!(on_b["event"]["kitefedorigin"], "tk");
    assert!(on_b["event"].get("kitefedsig").is_none(), "{on_b}");
    let on_c = c.event("evt_from_token").await.expect("on C");
    assert_eq!(on_c["event"]["kitefedorigin"], "tb", "{on_c}");
    assert_eq!(on_c["event"]["kitefedchain"], "[\"tk\",\"tb\"]");
    assert_eq!(on_c["event"]["kitefedhops"], 2);
    let ev = on_c["event"].as_object().expect("object").clone();
    let sig = provenance::read(&ev).expect("readable").expect("signed");
    assert_eq!(sig.server_name, "tb");
    let (b_key_id, b_key) = current_key(&b).await;
    assert_eq!(sig.key_id, b_key_id);
    assert!(provenance::verify(&ev, &sig, &b_key.public()));
}

#[tokio::test]
async fn a_backfill_fills_a_gap_once_page_by_page_and_only_with_granted_types() {
    // Rows to a down peer exhaust their attempts instead of parking.
    let a = Instance::process_with("ba", &[("KITE_PEER_FAILURE_THRESHOLD", "1000")]).await;
    let mut b = Instance::process_with("bb", &[]).await;
    handshake(&a, &b, "*", "*").await;
    let since = Utc::now() - chrono::Duration::seconds(1);

    let (s, _) = a
        .hook("stripe", &stripe_event("bf_1", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("bf_1 on B", WAIT, || async {
        (b.count_events("bf_1").await == 1).then_some(())
    })
    .await;

    // B is down for longer than A's retries.
    b.kill().await;
    for id in ["bf_2", "bf_3"] {
        let (s, _) = a
            .hook("stripe", &stripe_event(id, "charge.succeeded"))
            .await;
        assert_eq!(s, 202);
    }
    let (s, _) = github_push(&a, "bf_gh").await;
    assert_eq!(s, 202);
    let b_on_a = peer_of(&a, "bb").await.expect("peer");
    let b_id = b_on_a["id"].as_str().unwrap_or_default().to_string();
    // Every row settles: dead (attempts spent on a closed port). A row a stranger that took
    // B's port answered would settle otherwise; B still lacks the event either way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = a.outbox(&format!("peer_id={b_id}")).await;
        if rows.len() == 4 && rows.iter().all(|r| r["status"] != "pending") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never gave up on B: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.spawn().await;

    // Without a backfill grant at A: refused.
    let refused = peer_cmd(&b, &["backfill", "ba"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.err.contains("not_granted"), "{refused:?}");

    // A grants B backfill of Stripe events, two a request.
    let grant = peer_cmd(
        &a,
        &[
            "grant",
            "bb",
            "--permission",
            "backfill",
            "--scopes",
            "stripe.*",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(grant["permissions"], serde_json::json!(["backfill"]));
    admin(&a, &["policy", "set", "--max-backfill", "2"])
        .await
        .ok();

    let mut listen = Listen::start(&b, &["--source", "kite", "--json"]).await;
    let done = peer_cmd(
        &b,
        &[
            "backfill",
            "ba",
            "--since",
            &since.to_rfc3339(),
            "--limit",
            "10",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(done["fetched"], 3, "{done}");
    assert_eq!(done["stored"], 2, "{done}");
    assert_eq!(done["duplicates"], 1, "{done}");
    assert_eq!(done["rejected"], 0, "{done}");
    assert!(done["pages"].as_u64().unwrap_or(0) >= 2, "paged: {done}");
    for id in ["bf_1", "bf_2", "bf_3"] {
        assert_eq!(b.count_events(id).await, 1, "{id}");
    }
    // The GitHub event has no grant: none of it came.
    assert_eq!(b.count_events("bf_gh").await, 0);
    // A listener on B sees them like any other event.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line: Value = listen.json().await;
        seen.push(line["id"].as_str().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["bf_2", "bf_3"]);

    // Again: nothing new.
    let again = peer_cmd(
        &b,
        &[
            "backfill",
            "ba",
            "--since",
            &since.to_rfc3339(),
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        (again["stored"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3)),
        "{again}"
    );
}

#[tokio::test]
async fn a_send_grant_decides_what_a_peer_may_send_and_ends_when_it_expires() {
    let a = Instance::start("ga").await;
    let b = Instance::start("gb").await;
    // A sends Stripe events: that is what B grants A at the handshake.
    handshake(&a, &b, "stripe.*", "stripe.*").await;
    let (key_id, key) = current_key(&a).await;
    let send = |id: &'static str, ty: &'static str| {
        let (key_id, key) = (key_id.clone(), key.clone());
        let b = &b;
        async move {
            let event = signed_event(ty, id, "ga", &key_id, &key);
            post_signed_as(b, "ga", &key_id, &key, event).await
        }
    };
    let grants = peer_cmd(&b, &["grants", "ga", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        grants["items"][0]["permissions"],
        serde_json::json!(["send"])
    );
    assert_eq!(
        grants["items"][0]["scopes"],
        serde_json::json!(["stripe.*"])
    );

    let (s, v) = send("g_stripe", STRIPE).await;
    assert_eq!(s, 202, "{v}");
    // Outside the grant: refused, nothing stored.
    let (s, v) = send("g_gh_1", GITHUB).await;
    assert_eq!((s, code(&v)), (403, "not_granted"), "{v}");
    assert_eq!(b.count_events("g_gh_1").await, 0);

    // Granted for a few seconds: accepted, then refused again.
    let grant = peer_cmd(
        &b,
        &[
            "grant",
            "ga",
            "--permission",
            "send",
            "--scopes",
            "github.*",
            "--ttl",
            "3s",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let (s, v) = send("g_gh_2", GITHUB).await;
    assert_eq!(s, 202, "{v}");
    let until: DateTime<Utc> = grant["expires_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("expires_at");
    tokio::time::sleep(
        (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100),
    )
    .await;
    let (s, v) = send("g_gh_3", GITHUB).await;
    assert_eq!((s, code(&v)), (403, "not_granted"), "{v}");
    assert_eq!(b.count_events("g_gh_3").await, 0);

    // A deleted grant stops at once.
    let grant = peer_cmd(
        &b,
        &[
            "grant",
            "ga",
            "--permission",
            "send",
            "--scopes",
            "github.*",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let (s, _) = send("g_gh_4", GITHUB).await;
    assert_eq!(s, 202);
    peer_cmd(
        &b,
        &[
            "revoke-grant",
            "ga",
            grant["id"].as_str().unwrap_or_default(),
        ],
    )
    .await
    .ok();
    let (s, v) = send("g_gh_5", GITHUB).await;
    assert_eq!((s, code(&v)), (403, "not_granted"), "{v}");
}
