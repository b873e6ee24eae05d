//! Trust at the edges: API keys, secrets at rest, replay-proof federation signatures and
//! secret rotation, over HTTP. Provider signatures, SSRF, rate limits and hostile input are
//! in `security_edges.rs`.

use crate::common;

use std::time::Duration;

use common::*;
use kite_wire::provider::sign_standard;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn api_keys_have_permissions_and_revocation_is_immediate() {
    let a = Instance::start("instance-a").await;
    let mut keys = Vec::new();
    for p in ["read", "write", "admin"] {
        let (s, v) = a
            .post("/api/keys", json!({"permission": p, "label": p}))
            .await;
        assert_eq!(s, 201, "{v}");
        let key = v["key"].as_str().expect("key shown once").to_string();
        let parts: Vec<&str> = key.split('_').collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("kite", 8, 32));
        assert!(parts[1..]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit())));
        keys.push((v["id"].as_str().expect("id").to_string(), key));
    }
    let (_, list) = a.get("/api/keys").await;
    let text = list.to_string();
    for (_, k) in &keys {
        assert!(!text.contains(k.as_str()), "listings never show a key");
    }
    let get = |key: String, path: &'static str| {
        let r = a.http.get(format!("{}{path}", a.url)).bearer_auth(key);
        async move {
            let resp = r.send().await.expect("send");
            let s = resp.status().as_u16();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (read, write, admin) = (keys[0].1.clone(), keys[1].1.clone(), keys[2].1.clone());
    assert_eq!(get(read.clone(), "/api/events").await.0, 200);
    // A read key sees peers and the outbox (the dashboard's read-only view)...
    assert_eq!(get(read.clone(), "/api/federation/peers").await.0, 200);
    assert_eq!(get(read.clone(), "/api/federation/outbox").await.0, 200);
    let (s, v) = get(read.clone(), "/api/session").await;
    assert_eq!((s, &v["permission"]), (200, &json!("read")), "{v}");
    // ...but acting on them takes an admin key.
    let refused = a
        .http
        .post(format!("{}/api/federation/peers", a.url))
        .bearer_auth(&read)
        .json(&json!({"name":"x","peer_hook_url":"http://127.0.0.1:9/x","outbound_token":"t"}))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(get(read.clone(), "/api/federation/tokens").await.0, 403);
    assert_eq!(get(write.clone(), "/api/federation/tokens").await.0, 403);
    assert_eq!(get(admin.clone(), "/api/federation/peers").await.0, 200);
    // Revoke the admin key: it fails on the very next request.
    let (s, _) = a.delete(&format!("/api/keys/{}", keys[2].0)).await;
    assert_eq!(s, 200);
    let (s, v) = get(admin, "/api/federation/peers").await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));

    // The same verbs from the CLI.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "admin",
            "--instance",
            &a.url,
            "--api-key",
            &a.key,
            "--output",
            "json",
            "keys",
            "create",
            "--permission",
            "write",
            "--label",
            "ci",
        ])
        .output()
        .await
        .expect("kite admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(created["permission"], "write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "admin",
            "--instance",
            &a.url,
            "--api-key",
            &a.key,
            "--output",
            "json",
            "keys",
            "revoke",
            created["id"].as_str().expect("id"),
        ])
        .output()
        .await
        .expect("kite admin");
    assert!(out.status.success());
    let revoked: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(revoked["revoked_at"].is_string());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["admin", "secret-key"])
        .output()
        .await
        .expect("kite admin secret-key");
    let k = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(kite_wire::secret_box::SecretBox::from_base64(&k).is_ok());
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_secret_key() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .arg("serve")
        .env_remove("KITE_SECRET_KEY")
        .env_remove("KITE_DEV")
        .env("KITE_DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KITE_SECRET_KEY") && err.contains("kite admin secret-key"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_database_logs_or_listings() {
    let log = [("RUST_LOG", "debug")];
    let a = Instance::process_with("instance-a", &log).await;
    let b = Instance::process_with("instance-b", &log).await;
    let (peer_id, token) = peer(&a, &b, &["*"], 3).await;
    let (s, _) = a
        .post(
            "/api/sources",
            json!({"name":"stripe","scheme":"stripe","secret":"whsec_source_secret_123"}),
        )
        .await;
    assert_eq!(s, 201);
    let body = serde_json::to_vec(&stripe_event("evt_secret_1", "charge.succeeded")).expect("json");
    let t = now();
    let sig = hmac_hex(
        b"whsec_source_secret_123",
        &[t.to_string().as_bytes(), b".", &body],
    );
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/stripe",
        &body,
        &[
            ("content-type", "application/json".into()),
            ("stripe-signature", format!("t={t},v1={sig}")),
        ],
    )
    .await;
    assert_eq!(s, 202, "{v}");
    eventually("relayed", WAIT, || b.event("evt_secret_1")).await;
    let (_, row) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(row["health"], "active");

    let secret_key_a = a.env.get("KITE_SECRET_KEY").expect("key").to_owned();
    let secrets = [
        token.clone(),
        a.key.clone(),
        b.key.clone(),
        "whsec_source_secret_123".to_string(),
        secret_key_a,
    ];
    // Listings.
    for inst in [&a, &b] {
        for path in [
            "/api/federation/peers",
            "/api/federation/trusted-senders",
            "/api/federation/tokens",
            "/api/sources",
            "/api/keys",
        ] {
            let (_, v) = inst.get(path).await;
            for sec in &secrets {
                assert!(
                    !v.to_string().contains(sec.as_str()),
                    "{path} shows a secret"
                );
            }
        }
    }
    // Logs (at debug level) of the whole flow.
    for inst in [&a, &b] {
        let logs = inst.logs.lock().expect("logs").clone();
        assert!(logs.len() > 10, "debug logs were captured");
        for line in &logs {
            for sec in &secrets {
                assert!(
                    !line.contains(sec.as_str()),
                    "a log line of {} holds a secret: {line}",
                    inst.name
                );
            }
        }
    }
    // A dump of each database.
    for inst in [&a, &b] {
        let out = tokio::process::Command::new("pg_dump")
            .arg(inst.db_url())
            .output()
            .await
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(dump.contains("evt_secret_1"), "the dump has the data");
        for sec in &secrets {
            assert!(
                !dump.contains(sec.as_str()),
                "the database of {} holds a secret in plain text",
                inst.name
            );
        }
    }
}

#[tokio::test]
async fn federation_signatures_are_replay_proof() {
    let b = Instance::start("instance-b").await;
    let (s, t) = b
        .post("/api/federation/tokens", json!({"label":"from a"}))
        .await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().expect("token").to_string();
    let (s, snd) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"instance-a","inbound_token": token}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        snd["key_id"], t["id"],
        "the key id is the minted token's id"
    );
    let key_id = snd["key_id"].as_str().expect("key id").to_string();
    let ev = |id: &str| {
        serde_json::to_vec(&json!({"specversion":"1.0","id":id,"source":"/hooks/default/stripe","type":"com.stripe.charge",
            "kitefedorigin":"instance-a","kitefedchain":"[\"instance-a\"]","kitefedhops":1})).expect("json")
    };
    let kid = ("x-kite-key-id", key_id.clone());
    // Named by key id, signed the Standard Webhooks way, no secret on the wire.
    let body = ev("fed-1");
    let mut h = standard_headers(&[&token], "fed-1", now(), &body);
    h.push(kid.clone());
    let (s, v, _) = raw_post(&b, "/hooks/default/kite", &body, &h).await;
    assert_eq!(s, 202, "{v}");
    // The same request again: no second effect.
    let (s, v, _) = raw_post(&b, "/hooks/default/kite", &body, &h).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate_ignored")));
    assert_eq!(b.count_events("fed-1").await, 1);
    // Stale and future timestamps.
    for ts in [now() - 301, now() + 301] {
        let body = ev("fed-stale");
        let mut h = standard_headers(&[&token], "fed-stale", ts, &body);
        h.push(kid.clone());
        let (s, v, _) = raw_post(&b, "/hooks/default/kite", &body, &h).await;
        assert_eq!((s, code(&v)), (401, "stale_timestamp"), "{v}");
    }
    // Forged: wrong secret, altered body, unknown key id.
    let body = ev("fed-2");
    let mut h = standard_headers(&["kfed_wrong"], "fed-2", now(), &body);
    h.push(kid.clone());
    assert_eq!(
        code(&raw_post(&b, "/hooks/default/kite", &body, &h).await.1),
        "invalid_signature"
    );
    let mut h = standard_headers(&[&token], "fed-2", now(), &body);
    h.push(kid.clone());
    assert_eq!(
        code(
            &raw_post(&b, "/hooks/default/kite", &ev("fed-3"), &h)
                .await
                .1
        ),
        "invalid_signature"
    );
    let mut h = standard_headers(&[&token], "fed-2", now(), &body);
    h.push(("x-kite-key-id", "nope".into()));
    assert_eq!(
        code(&raw_post(&b, "/hooks/default/kite", &body, &h).await.1),
        "unknown_sender"
    );
    assert_eq!(
        b.count_events("fed-2").await
            + b.count_events("fed-3").await
            + b.count_events("fed-stale").await,
        0
    );

    // Rotation: the new secret works at once and the old one during the overlap.
    let sid = snd["id"].as_str().expect("id");
    let (s, _) = b
        .patch(
            &format!("/api/federation/trusted-senders/{sid}"),
            json!({"inbound_token":"kfed_rotated_secret"}),
        )
        .await;
    assert_eq!(s, 200);
    for (i, secret) in ["kfed_rotated_secret", token.as_str()].iter().enumerate() {
        let id = format!("fed-rot-{i}");
        let body = ev(&id);
        eventually("rotated secret accepted", WAIT, || {
            let mut h = standard_headers(&[secret], &id, now(), &body);
            h.push(kid.clone());
            let b = &b;
            let body = body.clone();
            async move {
                let (s, _, _) = raw_post(b, "/hooks/default/kite", &body, &h).await;
                (s == 202).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn a_sender_names_its_key_and_signs_with_every_secret_in_rotation() {
    let a = Instance::start("instance-a").await;
    let (url, seen) = recording_sink(200).await;
    let (s, p) = a
        .post(
            "/api/federation/peers",
            json!({"name":"sink","peer_hook_url": format!("{url}/hooks/default/kite"),
            "outbound_token":"kfed_first","key_id":"key-123","scopes":["*"]}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    a.hook("stripe", &stripe_event("evt_sig_1", "charge.succeeded"))
        .await;
    eventually("delivered", WAIT, || async {
        (!seen.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    let (hs, body) = seen.lock().expect("lock")[0].clone();
    assert_eq!(header(&hs, "x-kite-key-id"), Some("key-123"));
    assert!(
        header(&hs, "authorization").is_none(),
        "no secret on the wire"
    );
    let msg_1 = kite_wire::signature::message_id("/hooks/default/stripe", "evt_sig_1");
    assert_eq!(header(&hs, "webhook-id"), Some(msg_1.as_str()));
    let ts: i64 = header(&hs, "webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert!((now() - ts).abs() < 60);
    let expected = sign_standard(&["kfed_first"], &msg_1, ts, body.as_bytes());
    assert_eq!(header(&hs, "webhook-signature"), Some(expected.as_str()));

    let id = p["id"].as_str().expect("id");
    let (s, _) = a
        .patch(
            &format!("/api/federation/peers/{id}"),
            json!({"outbound_token":"kfed_second"}),
        )
        .await;
    assert_eq!(s, 200);
    a.hook("stripe", &stripe_event("evt_sig_2", "charge.succeeded"))
        .await;
    eventually("second delivered", WAIT, || async {
        (seen.lock().expect("lock").len() >= 2).then_some(())
    })
    .await;
    let (hs, body) = seen.lock().expect("lock")[1].clone();
    let ts: i64 = header(&hs, "webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    let msg_2 = kite_wire::signature::message_id("/hooks/default/stripe", "evt_sig_2");
    let both = sign_standard(&["kfed_second", "kfed_first"], &msg_2, ts, body.as_bytes());
    assert_eq!(
        header(&hs, "webhook-signature"),
        Some(both.as_str()),
        "old and new during the overlap"
    );
}
