//! The federation guides, to the letter: the Kite guide's commands as it writes them (its
//! curl bodies, its `kite listen` line) between two instances, both ways; and what ScaiWave's
//! and Powernode's documents ask: a least signature protocol, refreshing a peer, keys
//! rotated on schedule, protocol versions, and a peer's health that says what fails and
//! recovers. (The policy checked on every request is in tests/hostile_peer.rs.)

use crate::common;

use std::time::Duration;

use common::cli::*;
use common::listen::Listen;
use common::peering::*;
use common::*;
use kite_kit::hostile::HostilePeer;
use kite_wire::peering::Terms;
use serde_json::{json, Value};

/// `curl -X METHOD $URL/path -H "Authorization: Bearer $KEY" -H 'content-type:
/// application/json' -d 'body'`: exactly this body.
async fn curl(inst: &Instance, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
    let r = inst
        .http
        .request(method, format!("{}{path}", inst.url))
        .header("authorization", format!("Bearer {}", inst.key))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The peer of `inst` named `name`.
async fn peer_of_named(inst: &Instance, name: &str) -> Option<Value> {
    let (_, v) = inst.get("/api/federation/peers").await;
    v["items"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// The guide's unsigned Stripe-shaped POST to `/hooks/default/stripe`.
async fn stripe_post(inst: &Instance, id: &str) -> u16 {
    inst.http
        .post(format!("{}/hooks/default/stripe", inst.url))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"id":"{id}","object":"event","type":"payment_intent.succeeded","data":{{"object":{{"id":"pi_1","amount":2000}}}}}}"#
        ))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_kite_guide_run_as_written_delivers_both_ways() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    let post = reqwest::Method::POST;

    // Step 1: a token on each side.
    let (s, v) = curl(
        &a,
        post.clone(),
        "/api/federation/tokens",
        r#"{"label":"peer-b-outbound"}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token_a_to_b = v["token"].as_str().expect("token").to_owned();
    let (s, v) = curl(
        &b,
        post.clone(),
        "/api/federation/tokens",
        r#"{"label":"peer-a-inbound"}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token_b_inbound = v["token"].as_str().expect("token").to_owned();

    // Step 2: A's peer for B, with the guide's body.
    let body = format!(
        r#"{{"name":"instance-b","peer_hook_url":"{}/hooks/default/kite","outbound_token":"{token_a_to_b}","inbound_token":"{token_b_inbound}","scopes":["stripe.*","com.kite.agent.message"],"max_hops":3}}"#,
        b.url
    );
    let (s, v) = curl(&a, post.clone(), "/api/federation/peers", &body).await;
    assert_eq!(s, 201, "{v}");
    // The inbound token is shown never: not in the answer, not in the listing.
    let (_, listed) = a.get("/api/federation/peers").await;
    assert!(!listed.to_string().contains(&token_b_inbound), "{listed}");
    assert!(!v.to_string().contains(&token_b_inbound), "{v}");
    assert_eq!(listed["items"][0]["has_inbound_token"], true);

    // Step 3: B trusts what carries the token it minted, and only that.
    let body = format!(r#"{{"name":"instance-a","inbound_token":"{token_b_inbound}"}}"#);
    let (s, v) = curl(&b, post.clone(), "/api/federation/trusted-senders", &body).await;
    assert_eq!(s, 201, "{v}");

    // Step 4: B's listener, A's unsigned Stripe webhook; within seconds it is at B.
    let mut listen = Listen::start(&b, &["--source", "kite"]).await;
    assert_eq!(stripe_post(&a, "evt_guide_1").await, 202);
    let line = listen.line().await;
    assert!(
        line.contains("com.stripe.payment_intent.succeeded")
            && line.contains("id=evt_guide_1")
            && line.contains("origin=instance-a hops=1"),
        "{line}"
    );

    // Both ways: B posts back to A with the token A expects (its peer's inbound token).
    let body = format!(
        r#"{{"name":"instance-a","peer_hook_url":"{}/hooks/default/kite","outbound_token":"{token_b_inbound}","scopes":["stripe.*"],"max_hops":3}}"#,
        a.url
    );
    let (s, v) = curl(&b, post.clone(), "/api/federation/peers", &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(stripe_post(&b, "evt_guide_back").await, 202);
    eventually("B's event at A", WAIT, || async {
        let e = a.event("evt_guide_back").await?;
        (e["event"]["kitefedorigin"] == "instance-b").then_some(())
    })
    .await;
    // A's event came back to A through B and stopped there: a loop, stored once.
    assert_eq!(a.count_events("evt_guide_1").await, 1);
    // A token names one sender: A refuses to trust the inbound token a second time.
    let body = format!(r#"{{"name":"again","inbound_token":"{token_b_inbound}"}}"#);
    let (s, v) = curl(&a, post.clone(), "/api/federation/trusted-senders", &body).await;
    assert_eq!((s, code(&v)), (409, "token_in_use"), "{v}");
    // Revoked on A, B's peer is a stranger there at once: its next event is refused, and B's
    // peer record says why.
    let a_peer = listed["items"][0]["id"].as_str().expect("id").to_owned();
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{a_peer}"),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(stripe_post(&b, "evt_after_revoke").await, 202);
    eventually("B's peer for A to say it is refused", WAIT, || async {
        let p = peer_of_named(&b, "instance-a").await?;
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown_sender"))
            .then_some(())
    })
    .await;
    assert_eq!(a.count_events("evt_after_revoke").await, 0);

    // The guide's replay of dead entries: 200 with how many.
    let peer_id = a_peer;
    let (s, v) = curl(
        &a,
        post,
        &format!("/api/federation/peers/{peer_id}/replay-dead"),
        r#"{"limit": 100}"#,
    )
    .await;
    assert_eq!((s, &v["replayed"]), (200, &json!(0)), "{v}");
}

#[tokio::test]
async fn the_guides_other_reading_and_what_kite_does_not_do_are_said() {
    // A parks a peer that refuses it, and probes it, so refused events wait for it.
    let a = Instance::process_with(
        "instance-a",
        &[
            ("KITE_PEER_FAILURE_THRESHOLD", "2"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "300"),
        ],
    )
    .await;
    let b = Instance::process_with("instance-b", &[]).await;
    let post = reqwest::Method::POST;
    // Read the other way: B is told A's outbound token and trusts it.
    let (_, v) = curl(
        &a,
        post.clone(),
        "/api/federation/tokens",
        r#"{"label":"peer-b-outbound"}"#,
    )
    .await;
    let token_a_to_b = v["token"].as_str().expect("token").to_owned();
    let body = format!(
        r#"{{"name":"instance-b","peer_hook_url":"{}/hooks/default/kite","outbound_token":"{token_a_to_b}","scopes":["stripe.*"],"max_hops":3}}"#,
        b.url
    );
    let (s, v) = curl(&a, post.clone(), "/api/federation/peers", &body).await;
    assert_eq!(s, 201, "{v}");
    let body = format!(r#"{{"name":"instance-a","inbound_token":"{token_a_to_b}"}}"#);
    let (s, v) = curl(&b, post.clone(), "/api/federation/trusted-senders", &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(stripe_post(&a, "evt_other_reading").await, 202);
    eventually("A's event at B", WAIT, || async {
        (b.count_events("evt_other_reading").await == 1).then_some(())
    })
    .await;

    // A field kite does not know is refused by name, and nothing is made (`filters` and
    // `ordering_key` it knows: tests/it/filters.rs, tests/it/conduct.rs).
    for (field, extra) in [
        ("ordered", r#""ordered":true"#),
        ("priority", r#""priority":"high""#),
    ] {
        let body = format!(
            r#"{{"name":"c","peer_hook_url":"{}/hooks/default/kite","outbound_token":"t",{extra}}}"#,
            b.url
        );
        let (s, v) = curl(&a, post.clone(), "/api/federation/peers", &body).await;
        assert_eq!(
            (s, code(&v), v["error"]["field"].as_str()),
            (400, "unknown_field", Some(field)),
            "{v}"
        );
    }
    let (_, listed) = a.get("/api/federation/peers").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // B's invite_only policy holds a token sender to its name too.
    admin(&b, &["policy", "set", "--mode", "invite_only"])
        .await
        .ok();
    assert_eq!(stripe_post(&a, "evt_not_allowed").await, 202);
    eventually("A's peer for B to say it is not allowed", WAIT, || async {
        let p = peer_of_named(&a, "instance-b").await?;
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("peer_not_allowed"))
            .then_some(())
    })
    .await;
    admin(&b, &["policy", "set", "--allowed-peers", "instance-a"])
        .await
        .ok();
    eventually("the waiting event at B once allowed", WAIT, || async {
        (b.count_events("evt_not_allowed").await == 1).then_some(())
    })
    .await;

    // `kite listen` with no key says exactly how to give one.
    let home = TempDir::new("listen-home");
    let run = kite_in(
        &home.0,
        &["listen", "--instance", &b.url, "--source", "kite"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    for how in [
        "--api-key",
        "KITE_API_KEY",
        "config.toml",
        "kite admin keys create",
    ] {
        assert!(run.err.contains(how), "{how}: {run:?}");
    }
    // A config file as the public Kite CLI writes it is read as it is.
    let dir = home.0.join(".config/kite");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[auth]\napi_key = \"{}\"\nteam_id = \"default\"\n\n[server]\nurl = \"{}/ws\"\n",
            b.key,
            b.url.replace("http://", "ws://")
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["listen", "--source", "kite", "--json"])
        .env_remove("KITE_API_KEY")
        .env_remove("KITE_INSTANCE")
        .env("HOME", &home.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kite listen");
    let mut err = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stderr.take().expect("stderr"),
    ));
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = err.next_line().await {
            if l.contains("connected") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(connected, Ok(true), "kite listen did not connect");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    assert_eq!(stripe_post(&a, "evt_config_file").await, 202);
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("a line");
    let ev: Value = serde_json::from_str(&first).expect("json");
    assert_eq!(ev["id"], "evt_config_file", "{first}");
}

#[tokio::test]
async fn a_peer_that_refuses_every_delivery_says_so_and_recovers() {
    let a = Instance::start_with(
        "ha",
        &[
            ("KITE_PEER_FAILURE_THRESHOLD", "2"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "300"),
        ],
    )
    .await;
    let b = Instance::start("hb").await;
    // A's peer for B carries a token B never trusted: every delivery is refused 401.
    let (_, v) = a
        .post("/api/federation/tokens", json!({"label": "to-b"}))
        .await;
    let token = v["token"].as_str().expect("token").to_owned();
    let peer = add_peer(
        &a,
        "hb",
        &format!("{}/hooks/default/kite", b.url),
        &token,
        &["*"],
        3,
    )
    .await;
    assert_eq!(stripe_post(&a, "evt_refused").await, 202);
    let failing = eventually("the peer's health to say so", WAIT, || async {
        let (_, p) = a.get(&format!("/api/federation/peers/{peer}")).await;
        (p["health"] != "active"
            && p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown_sender")))
        .then_some(p)
    })
    .await;
    assert!(failing["last_error_resolved_at"].is_null(), "{failing}");
    // `kite peer list` says it too.
    let run = peer_cmd(&a, &["list"]).await.ok();
    assert!(run.out.contains("unknown_sender"), "{}", run.out);
    // The event waits rather than dying one attempt after another.
    let rows = a.outbox(&format!("peer_id={peer}")).await;
    assert_eq!(rows[0]["status"], "pending", "{rows:?}");

    // B trusts the token: the waiting event goes, and the error is marked resolved.
    let (s, v) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name": "ha", "inbound_token": token}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    eventually("the waiting event at B", WAIT, || async {
        (b.count_events("evt_refused").await == 1).then_some(())
    })
    .await;
    let recovered = eventually("the error resolved", WAIT, || async {
        let (_, p) = a.get(&format!("/api/federation/peers/{peer}")).await;
        (p["health"] == "active" && p["last_error_resolved_at"].is_string()).then_some(p)
    })
    .await;
    assert!(recovered["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("unknown_sender")));
    let shown = peer_cmd(&a, &["list", "--output", "json"])
        .await
        .ok()
        .json();
    assert!(
        shown["items"][0]["last_error_resolved_at"].is_string(),
        "{shown}"
    );
}

#[tokio::test]
async fn a_team_can_take_identity_signatures_only() {
    let a = Instance::start("sa").await;
    let b = Instance::start("sb").await;
    let token_peer = add_peer(
        &a,
        "token-peer",
        &format!("{}/hooks/default/kite", b.url),
        "kfed_x",
        &["*"],
        3,
    )
    .await;
    // While a shared-token peer exists, the policy is refused, naming it.
    let run = admin(
        &a,
        &["policy", "set", "--min-signature-protocol", "identity"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.err.contains("shared_tokens_in_use"), "{run:?}");
    let (s, v) = a
        .api(
            reqwest::Method::PUT,
            "/api/federation/policy",
            Some(json!({"min_signature_protocol": "identity"})),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "shared_tokens_in_use"), "{v}");
    assert_eq!(v["error"]["peers"], json!(["token-peer"]), "{v}");
    a.delete(&format!("/api/federation/peers/{token_peer}"))
        .await;
    let set = admin_json(
        &a,
        &["policy", "set", "--min-signature-protocol", "identity"],
    )
    .await;
    assert_eq!(set["min_signature_protocol"], "identity");
    // Shared tokens are refused from now on; peering by invitation is not.
    for (path, body) in [
        (
            "/api/federation/peers",
            json!({"name": "t", "peer_hook_url": format!("{}/hooks/default/kite", b.url),
                   "outbound_token": "kfed_y"}),
        ),
        (
            "/api/federation/trusted-senders",
            json!({"name": "t", "inbound_token": "kfed_y"}),
        ),
        ("/api/federation/tokens", json!({"label": "t"})),
    ] {
        let (s, v) = a.post(path, body).await;
        assert_eq!(
            (s, code(&v)),
            (403, "identity_signatures_required"),
            "{path}: {v}"
        );
    }
    handshake(&a, &b, "*", "*").await;
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_identity", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("the event at B", WAIT, || async {
        (b.count_events("evt_identity").await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_peer_is_refreshed_by_hand_and_keys_rotate_on_schedule() {
    let a = Instance::start_with(
        "ra",
        &[
            ("KITE_KEY_ROTATION_SECS", "3"),
            ("KITE_KEY_OVERLAP_SECS", "600"),
        ],
    )
    .await;
    let b = Instance::start("rb").await;
    handshake(&a, &b, "*", "*").await;
    // The next rotation is shown, by the API and `kite peer identity`.
    let identity = peer_cmd(&a, &["identity", "--output", "json"])
        .await
        .ok()
        .json();
    assert!(identity["next_rotation_at"].is_string(), "{identity}");
    assert_eq!(identity["server_name"], "ra");
    // A rotates on its own; B refreshes A by hand and pins the new key.
    eventually("a scheduled rotation", WAIT, || async {
        let (_, d) = a.get("/api/federation/identity").await;
        (d["keys"].as_array().map(Vec::len) >= Some(2)).then_some(())
    })
    .await;
    let refreshed = peer_cmd(&b, &["refresh", "ra", "--output", "json"])
        .await
        .ok()
        .json();
    let (_, d) = a.get("/api/federation/identity").await;
    let current = d["keys"][0]["key_id"].clone();
    let pinned = refreshed["keys"].as_array().cloned().unwrap_or_default();
    assert!(pinned.iter().any(|k| k["key_id"] == current), "{refreshed}");
    // Events signed with the rotated key flow.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_rotated", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("the event at B", WAIT, || async {
        (b.count_events("evt_rotated").await == 1).then_some(())
    })
    .await;
    // A token peer has no descriptor to refresh.
    let token_peer = add_peer(
        &b,
        "plain",
        "http://127.0.0.1:9/hooks/default/kite",
        "t",
        &["*"],
        3,
    )
    .await;
    let (s, v) = b
        .post(
            &format!("/api/federation/peers/{token_peer}/refresh"),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "not_a_handshake_peer"), "{v}");
}

#[tokio::test]
async fn servers_with_no_protocol_version_in_common_do_not_peer() {
    let b = Instance::start("vb").await;
    let h = HostilePeer::start("vh").await.expect("hostile");
    h.speak(&["kite-federation/9"]);
    // Joining B, and B accepting its invitation: 422, nothing kept.
    let (s, v) = b
        .post("/api/federation/invitations", json!({"scopes": ["*"]}))
        .await;
    assert_eq!(s, 201, "{v}");
    let inv = v["invitation"].as_str().expect("invitation").to_owned();
    let (s, v) = h.join(&inv, &["*"]).await;
    assert_eq!((s, code(&v)), (422, "unsupported_protocol"), "{v}");
    let run = peer_cmd(
        &b,
        &[
            "accept",
            &h.invitation(Terms {
                scopes: vec!["*".into()],
                max_hops: 3,
            }),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.err.contains("unsupported_protocol"), "{run:?}");
    assert!(peer_of(&b, "vh").await.is_none());
    // Speaking a version in common it joins, and the version is recorded.
    h.speak(&["kite-federation/9", "kite-federation/2"]);
    let (s, v) = h.join(&inv, &["*"]).await;
    assert_eq!(s, 200, "{v}");
    let on_b = peer_of(&b, "vh").await.expect("peer");
    assert_eq!(on_b["protocol_version"], "kite-federation/2");
    // A heartbeat speaking none in common is refused.
    h.speak(&["kite-federation/9"]);
    let sent = h.heartbeat((&b.url, "vb"), None, None).await;
    assert_eq!(
        (sent.reply.0, code(&sent.reply.1)),
        (422, "unsupported_protocol"),
        "{:?}",
        sent.reply
    );
}
