//! Peering the way federations do it, over real instances and the `kite` CLI: invite and
//! accept, events both ways signed with identity keys, heartbeats and the peer state
//! machine, policy, key rotation with an overlap, revocation, health.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::cli::*;
use common::peering::*;
use common::*;
use kite_wire::identity::{self, SecretKey};
use kite_wire::peering::Invitation;
use serde_json::{json, Value};

/// `inst`'s public server descriptor.
async fn descriptor(inst: &Instance) -> Value {
    reqwest::get(format!("{}/.well-known/kite/server", inst.url))
        .await
        .expect("descriptor")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn invite_and_accept_peer_both_ways_with_pinned_keys_and_heartbeats() {
    let a = Instance::start_with("pa", FAST_HEARTBEATS).await;
    let b = Instance::start_with("pb", FAST_HEARTBEATS).await;

    // The descriptor is public, and the admin API and CLI show the same.
    let desc: Value = descriptor(&a).await;
    assert_eq!(desc["server_name"], "pa");
    assert_eq!(desc["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        desc["keys"][0]["public_key"].as_str().map(str::len),
        Some(43)
    );
    assert!(desc["keys"][0]["valid_until"].is_null());
    assert_eq!(desc["endpoints"]["base_url"], a.url.as_str());
    // Admins see the descriptor, and when the key rotates next (yearly by default).
    let mut shown = admin(&a, &["identity", "show", "--output", "json"])
        .await
        .ok()
        .json();
    let next = shown
        .as_object_mut()
        .and_then(|o| o.remove("next_rotation_at"))
        .and_then(|t| t.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok()))
        .expect("next_rotation_at");
    assert!(next > Utc::now() + chrono::Duration::days(360), "{next}");
    assert_eq!(shown, desc);

    let inv = invite(&a, &["--scopes", "stripe.*", "--ttl", "1h"]).await;
    let token = Invitation::decode(&inv).expect("invitation").token;
    // Only the token's SHA-256 digest is kept.
    let stored: Vec<String> = a
        .db()
        .await
        .query("SELECT token_hash FROM invitations", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, vec![kite_wire::token::digest(&token)]);

    let on_b = peer_cmd(
        &b,
        &[
            "accept",
            &inv,
            "--scopes",
            "com.github.*",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(on_b["server_name"], "pa");
    assert_eq!(on_b["status"], "accepted");
    assert_eq!(on_b["scopes"], json!(["com.github.*"]));
    assert_eq!(on_b["keys"][0]["public_key"], desc["keys"][0]["public_key"]);
    let on_a = peer_of(&a, "pb").await.expect("A holds a peer for B");
    assert_eq!(on_a["scopes"], json!(["stripe.*"]));
    let (_, shown) = a
        .get(&format!(
            "/api/federation/peers/{}",
            on_a["id"].as_str().unwrap_or("")
        ))
        .await;
    let b_desc = admin(&b, &["identity", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["keys"][0]["key_id"], b_desc["keys"][0]["key_id"]);
    assert!(shown.get("outbound_token").is_none());
    let listed = admin(&a, &["invitations", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed["items"][0]["used_by"], "pb");
    assert!(!listed.to_string().contains(&token));

    // Heartbeats take both sides to active.
    status_becomes(&a, "pb", "active").await;
    status_becomes(&b, "pa", "active").await;

    // An event each way, signed with identity keys.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_ab", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("A's event on B", WAIT, || async {
        (b.count_events("evt_ab").await == 1).then_some(())
    })
    .await;
    let (s, _) = github_push(&b, "gh-ba").await;
    assert_eq!(s, 202);
    eventually("B's event on A", WAIT, || async {
        (a.count_events("gh-ba").await == 1).then_some(())
    })
    .await;

    // Health moves: sent on one side, received on the other, last seen.
    let health = eventually("A's health counters", WAIT, || async {
        peer_of(&a, "pb")
            .await
            .filter(|p| p["events_sent_24h"] == 1 && p["events_received_24h"] == 1)
    })
    .await;
    assert!(health["last_seen"].is_string() && health["last_heartbeat_at"].is_string());
    let listed = peer_cmd(&b, &["list"]).await.ok().out;
    for col in [
        "SERVER",
        "LAST_SEEN",
        "LAST_HEARTBEAT",
        "SENT_24H",
        "RECEIVED_24H",
    ] {
        assert!(listed.contains(col), "{listed}");
    }
    assert!(
        listed.contains("pa") && listed.contains("active"),
        "{listed}"
    );
}

#[tokio::test]
async fn an_invitation_works_once_until_it_expires_and_only_with_its_token() {
    let a = Instance::start("ia").await;
    let b = Instance::start("ib").await;
    let c = Instance::start("ic").await;

    let inv = invite(&a, &["--scopes", "*"]).await;
    peer_cmd(&b, &["accept", &inv]).await.ok();
    // A second use.
    let again = peer_cmd(&c, &["accept", &inv]).await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.err.contains("invitation_used"), "{again:?}");
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": inv}),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "invitation_used"), "{v}");

    // A wrong token.
    let mut forged = Invitation::decode(&inv).expect("invitation");
    forged.token = Invitation::mint_token();
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": forged.encode()}),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "invalid_invitation"), "{v}");

    // An expired one.
    let short = a
        .client()
        .create_invitation(&invitation(1))
        .await
        .expect("invitation");
    let until: DateTime<Utc> = short.expires_at;
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": short.invitation}),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "invitation_expired"), "{v}");

    // A revoked one.
    let revoked = a
        .client()
        .create_invitation(&invitation(kite_api::invitations::DEFAULT_TTL_SECS))
        .await
        .expect("inv");
    admin(&a, &["invitations", "delete", &revoked.id.to_string()])
        .await
        .ok();
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": revoked.invitation}),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "invalid_invitation"), "{v}");

    // Nothing of the refused ones stayed on either side.
    let (_, on_c) = c.get("/api/federation/peers").await;
    assert_eq!(on_c["items"], json!([]), "{on_c}");
    let (_, on_a) = a.get("/api/federation/peers").await;
    assert_eq!(on_a["items"].as_array().map(Vec::len), Some(1), "{on_a}");
    assert!(peer_of(&a, "ib").await.is_some());
}

#[tokio::test]
async fn closed_and_invite_only_policies_refuse_with_nothing_stored() {
    let a = Instance::start("ca").await;
    let b = Instance::start("cb").await;
    let c = Instance::start("cc").await;
    handshake(&a, &b, "*", "*").await;
    // A Kite token sender too, for "every federation request".
    peer(&c, &a, &["*"], 3).await;

    let set = admin(
        &a,
        &["policy", "set", "--mode", "closed", "--output", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(set["default_mode"], "closed");
    let before = a.total_events().await;

    // An existing peer's event is refused, and the sender's record names the code.
    let (s, _) = github_push(&b, "closed-1").await;
    assert_eq!(s, 202);
    let refused = eventually("B to see A's refusal", WAIT, || async {
        peer_of(&b, "ca").await.filter(|p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("federation_closed"))
        })
    })
    .await;
    assert_eq!(refused["last_status_code"], 403, "{refused}");
    // The token sender's too.
    let (s, _) = github_push(&c, "closed-2").await;
    assert_eq!(s, 202);
    eventually("C to see A's refusal", WAIT, || async {
        let (_, v) = c.get("/api/federation/peers").await;
        v["items"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("federation_closed"))
            .then_some(())
    })
    .await;
    // And a new handshake.
    let inv = invite(&a, &[]).await;
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": inv}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "federation_closed"), "{v}");
    assert_eq!(a.total_events().await, before);

    // invite_only: only allowed servers may accept.
    admin(
        &a,
        &[
            "policy",
            "set",
            "--mode",
            "invite_only",
            "--allowed-peers",
            "someone-else",
        ],
    )
    .await
    .ok();
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": inv}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "peer_not_allowed"), "{v}");
    assert!(peer_of(&a, "cc").await.is_none());
    let (_, on_c) = c.get("/api/federation/peers").await;
    assert_eq!(
        on_c["items"].as_array().map(Vec::len),
        Some(1),
        "only the token peer: {on_c}"
    );
    admin(&a, &["policy", "set", "--allowed-peers", "someone-else,cc"])
        .await
        .ok();
    let shown = admin(&a, &["policy", "--output", "json"]).await.ok().json();
    assert_eq!(shown["default_mode"], "invite_only");
    assert_eq!(shown["allowed_peers"], json!(["someone-else", "cc"]));
    let (s, v) = c
        .post(
            "/api/federation/invitations/accept",
            json!({"invitation": inv}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(peer_of(&a, "cc").await.is_some());
}

#[tokio::test]
async fn a_stopped_peer_goes_degraded_and_comes_back_active() {
    let a = Instance::process_with("da", FAST_HEARTBEATS).await;
    let mut b = Instance::process_with("db", FAST_HEARTBEATS).await;
    handshake(&a, &b, "*", "*").await;
    status_becomes(&a, "db", "active").await;
    b.kill().await;
    let degraded = status_becomes(&a, "db", "degraded").await;
    assert!(degraded["last_error"].is_string(), "{degraded}");
    b.spawn().await;
    status_becomes(&a, "db", "active").await;
    status_becomes(&b, "da", "active").await;
}

#[tokio::test]
async fn rotation_needs_no_repeering_and_an_old_key_ends_with_its_overlap() {
    let a = Instance::start_with("ra", &[("KITE_KEY_OVERLAP_SECS", "3")]).await;
    let b = Instance::start("rb").await;
    handshake(&a, &b, "*", "*").await;
    let (old, old_key) = keys_of(&a).await.remove(0);

    let rotated = admin(&a, &["identity", "rotate", "--output", "json"])
        .await
        .ok()
        .json();
    let keys = rotated["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2, "{rotated}");
    assert!(keys[0]["valid_until"].is_null() && keys[0]["key_id"] != old.key_id.as_str());
    assert_eq!(keys[1]["key_id"], old.key_id.as_str());

    // A signs with the new key from now on; B learns it without re-peering.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_new_key", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("the new key's event on B", WAIT, || async {
        (b.count_events("evt_new_key").await == 1).then_some(())
    })
    .await;
    let on_b = peer_of(&b, "ra").await.expect("peer");
    let (_, shown) = b
        .get(&format!(
            "/api/federation/peers/{}",
            on_b["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(shown["keys"].as_array().map(Vec::len), Some(2), "{shown}");

    // The old key inside its overlap: accepted.
    let (s, v) = post_signed_as(
        &b,
        "ra",
        &old.key_id,
        &old_key,
        signed_event(STRIPE, "old-in", "ra", &old.key_id, &old_key),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    // Past it: refused, nothing stored.
    let until: DateTime<Utc> = keys[1]["valid_until"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("valid_until");
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    let (s, v) = post_signed_as(
        &b,
        "ra",
        &old.key_id,
        &old_key,
        signed_event(STRIPE, "old-out", "ra", &old.key_id, &old_key),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"), "{v}");
    assert_eq!(b.count_events("old-out").await, 0);
    let desc: Value = descriptor(&a).await;
    assert_eq!(desc["keys"].as_array().map(Vec::len), Some(1), "{desc}");

    // A key A never published: refused, even after B asks A again.
    let stranger = SecretKey::generate();
    let (s, v) = post_signed_as(
        &b,
        "ra",
        &identity::new_key_id(),
        &stranger,
        signed_event(STRIPE, "never-published", "ra", "ed25519:x", &stranger),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"), "{v}");
    // A published key id with another key's signature: refused.
    let current = keys[0]["key_id"].as_str().unwrap_or_default();
    let (s, v) = post_signed_as(
        &b,
        "ra",
        current,
        &stranger,
        signed_event(STRIPE, "forged", "ra", current, &stranger),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"), "{v}");
    assert_eq!(
        b.count_events("never-published").await + b.count_events("forged").await,
        0
    );
}

#[tokio::test]
async fn a_revocation_reaches_the_other_side_on_its_next_request() {
    let a = Instance::start_with("va", FAST_HEARTBEATS).await;
    let b = Instance::start_with("vb", FAST_HEARTBEATS).await;
    handshake(&a, &b, "*", "*").await;
    status_becomes(&a, "vb", "active").await;

    let revoked = peer_cmd(&b, &["revoke", "va", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(revoked["status"], "revoked");
    // A's next request (a heartbeat) is refused: A revokes B too and says why.
    let seen = status_becomes(&a, "vb", "revoked").await;
    assert_eq!(seen["last_error"], "peer_revoked", "{seen}");
    // And A's events are refused with nothing stored.
    let (s, v) = post_signed_as(
        &b,
        "va",
        keys_of(&a).await[0].0.key_id.as_str(),
        &keys_of(&a).await[0].1,
        federated_event(STRIPE, "after-revoke", "va"),
    )
    .await;
    assert_eq!((s, code(&v)), (403, "peer_revoked"), "{v}");
    assert_eq!(b.count_events("after-revoke").await, 0);
}

/// An invitation to anything, with the default hop limit, valid for `ttl` seconds.
fn invitation(ttl: i64) -> kite_api::invitations::NewInvitation {
    kite_api::invitations::NewInvitation {
        scopes: vec!["*".into()],
        ttl,
        ..Default::default()
    }
}
