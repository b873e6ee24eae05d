//! Trust at the edges: API keys, secrets at rest, replay-proof federation signatures,
//! provider signatures, SSRF, rate limits and hostile input, over HTTP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{KeyInit, Mac};
use kite_protocol::provider::sign_standard;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn raw_post(
    inst: &Instance,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = inst
        .http
        .post(format!("{}{path}", inst.url))
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.expect("send");
    let s = resp.status().as_u16();
    let h = resp.headers().clone();
    (s, resp.json().await.unwrap_or(Value::Null), h)
}

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
    let (s, v) = get(read.clone(), "/api/federation/peers").await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
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
    assert!(kite_protocol::secret_box::SecretBox::from_base64(&k).is_ok());
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

/// A local endpoint recording each request's headers and body, answering `status`.
async fn recording_sink(status: u16) -> (String, Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let s = s.clone();
        async move {
            let hs = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            s.lock().expect("lock").push((hs, body));
            let mut r = axum::response::IntoResponse::into_response(
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK),
            );
            r.headers_mut().insert(
                "location",
                axum::http::HeaderValue::from_static("http://127.0.0.1:9/elsewhere"),
            );
            r
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn secrets_never_reach_the_database_logs_or_listings() {
    let log = [("RUST_LOG", "debug")];
    let a = Instance::start_with("instance-a", &log).await;
    let b = Instance::start_with("instance-b", &log).await;
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

    let secret_key_a = a
        .env
        .iter()
        .find(|(k, _)| k == "KITE_SECRET_KEY")
        .map(|(_, v)| v.clone())
        .expect("key");
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

fn standard_headers(
    secrets: &[&str],
    id: &str,
    ts: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/cloudevents+json".to_string()),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sign_standard(secrets, id, ts, body)),
    ]
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
    assert_eq!(header(&hs, "webhook-id"), Some("evt_sig_1"));
    let ts: i64 = header(&hs, "webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert!((now() - ts).abs() < 60);
    let expected = sign_standard(&["kfed_first"], "evt_sig_1", ts, body.as_bytes());
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
    let both = sign_standard(
        &["kfed_second", "kfed_first"],
        "evt_sig_2",
        ts,
        body.as_bytes(),
    );
    assert_eq!(
        header(&hs, "webhook-signature"),
        Some(both.as_str()),
        "old and new during the overlap"
    );
}

#[tokio::test]
async fn provider_sources_verify_each_scheme() {
    let a = Instance::start("instance-a").await;
    for (name, scheme, secret, hdr) in [
        ("stripe", "stripe", "whsec_stripe", None),
        ("github", "github", "It's a Secret to Everybody", None),
        ("slack", "slack", "8f742231b10e8888abcd99yyyzzz85a5", None),
        (
            "acme",
            "standard-webhooks",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            None,
        ),
        (
            "custom",
            "hmac-sha256",
            "s3cret",
            Some("x-custom-signature"),
        ),
    ] {
        let (s, v) = a
            .post(
                "/api/sources",
                json!({"name":name,"scheme":scheme,"secret":secret,"header":hdr}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert!(v.get("secret").is_none());
    }
    let (s, v) = a
        .post(
            "/api/sources",
            json!({"name":"x","scheme":"md5","secret":"s"}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("scheme")));
    let json_ct = ("content-type", "application/json".to_string());
    eventually("sources cached", WAIT, || async {
        let (s, _, _) = raw_post(
            &a,
            "/hooks/default/custom",
            b"{}",
            std::slice::from_ref(&json_ct),
        )
        .await;
        (s == 401).then_some(())
    })
    .await;

    // Stripe: t= and v1= over "{t}.{body}", five minutes of tolerance.
    let body = serde_json::to_vec(&stripe_event("evt_prov_1", "charge.succeeded")).expect("json");
    let t = now();
    let sig = hmac_hex(b"whsec_stripe", &[t.to_string().as_bytes(), b".", &body]);
    let ok = [
        json_ct.clone(),
        ("stripe-signature", format!("t={t},v1={sig}")),
    ];
    assert_eq!(
        raw_post(&a, "/hooks/default/stripe", &body, &ok).await.0,
        202
    );
    let old = t - 600;
    let sig_old = hmac_hex(b"whsec_stripe", &[old.to_string().as_bytes(), b".", &body]);
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/stripe",
        &body,
        &[
            json_ct.clone(),
            ("stripe-signature", format!("t={old},v1={sig_old}")),
        ],
    )
    .await;
    assert_eq!((s, code(&v)), (401, "stale_timestamp"));
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/stripe",
        &body,
        std::slice::from_ref(&json_ct),
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"));
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/stripe",
        &body,
        &[
            json_ct.clone(),
            ("stripe-signature", format!("t={t},v1={}", "0".repeat(64))),
        ],
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"));

    // GitHub: the documented example.
    let gh = [
        ("content-type", "text/plain".to_string()),
        (
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string(),
        ),
        ("x-github-event", "ping".to_string()),
        ("x-github-delivery", "gh-doc-1".to_string()),
    ];
    let (s, v, _) = raw_post(&a, "/hooks/default/github", b"Hello, World!", &gh).await;
    assert_eq!(s, 202, "{v}");
    let (s, _, _) = raw_post(&a, "/hooks/default/github", b"Hello, World?", &gh).await;
    assert_eq!(s, 401);

    // Slack: the documented form body, signed now (the documented timestamp is years old).
    let slack_body =
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fwebhook-collect&text=";
    let ts = now().to_string();
    let sig = hmac_hex(
        b"8f742231b10e8888abcd99yyyzzz85a5",
        &[b"v0:", ts.as_bytes(), b":", slack_body],
    );
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/slack",
        slack_body,
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-slack-request-timestamp", ts.clone()),
            ("x-slack-signature", format!("v0={sig}")),
        ],
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/slack",
        slack_body,
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-slack-request-timestamp", "1531420618".to_string()),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_string(),
            ),
        ],
    )
    .await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"), "{v}");

    // Standard Webhooks with a whsec_ secret.
    let body = br#"{"type":"invoice.paid"}"#;
    let (id, ts) = ("msg_1", now());
    let sw = sign_standard(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], id, ts, body);
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/acme",
        body,
        &[
            json_ct.clone(),
            ("webhook-id", id.into()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sw),
        ],
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert!(
        a.event("msg_1").await.is_some(),
        "webhook-id is the event id"
    );

    // hmac-sha256 with a configured header.
    let body = br#"{"k":1}"#;
    let sig = hmac_hex(b"s3cret", &[body]);
    assert_eq!(
        raw_post(
            &a,
            "/hooks/default/custom",
            body,
            &[json_ct.clone(), ("x-custom-signature", sig.clone())]
        )
        .await
        .0,
        202
    );
    assert_eq!(
        raw_post(
            &a,
            "/hooks/default/custom",
            body,
            &[json_ct.clone(), ("x-signature", sig)]
        )
        .await
        .0,
        401
    );

    // Rotation keeps the old secret valid for the overlap.
    let (s, _) = a
        .post("/api/sources/custom/rotate", json!({"secret":"n3w"}))
        .await;
    assert_eq!(s, 200);
    for (i, secret) in ["n3w", "s3cret"].iter().enumerate() {
        let body = format!("{{\"rot\":{i}}}");
        let sig = hmac_hex(secret.as_bytes(), &[body.as_bytes()]);
        eventually("rotated source secret", WAIT, || {
            let (a, body, sig) = (&a, body.clone(), sig.clone());
            let ct = json_ct.clone();
            async move {
                let (s, _, _) = raw_post(
                    a,
                    "/hooks/default/custom",
                    body.as_bytes(),
                    &[ct, ("x-custom-signature", sig)],
                )
                .await;
                (s == 202).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn required_signatures_refuse_unconfigured_sources() {
    let a = Instance::start_with("instance-a", &[("KITE_REQUIRE_SIGNED_HOOKS", "true")]).await;
    let (s, v) = a
        .hook("stripe", &stripe_event("evt_unsigned", "charge.succeeded"))
        .await;
    assert_eq!((s, code(&v)), (401, "signature_required"));
    assert_eq!(a.total_events().await, 0);
}

#[tokio::test]
async fn ssrf_guard_refuses_private_destinations_at_creation_and_at_connect() {
    let a = Instance::start_with("instance-a", &[("KITE_ALLOW_PRIVATE_PEERS", "false")]).await;
    for url in [
        "http://127.0.0.1:8080/hooks/default/kite",
        "http://10.0.0.5/hooks/default/kite",
        "http://192.168.1.10/hooks/default/kite",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hooks/default/kite",
        "http://localhost:8080/hooks/default/kite",
        "http://0.0.0.0/x",
    ] {
        let (s, v) = a
            .post(
                "/api/federation/peers",
                json!({"name":"p","peer_hook_url":url,"outbound_token":"t"}),
            )
            .await;
        assert_eq!((s, code(&v)), (400, "forbidden_destination"), "{url}: {v}");
    }
    // A name that resolved elsewhere when the peer was made, and resolves to loopback now
    // (DNS rebinding): the row is written directly, as if the record had changed since.
    let (sink, seen) = recording_sink(200).await;
    let port = sink.rsplit(':').next().expect("port").to_string();
    let db = a.db().await;
    for (name, url) in [
        (
            "rebound",
            format!("http://localhost:{port}/hooks/default/kite"),
        ),
        (
            "literal",
            format!("http://127.0.0.1:{port}/hooks/default/kite"),
        ),
    ] {
        db.execute(
            "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status)
             VALUES (gen_random_uuid(), 'default', $1, $2, 'kfed_x', ARRAY['*'], 3, 'active')",
            &[&name, &url],
        )
        .await
        .expect("insert");
    }
    a.hook("stripe", &stripe_event("evt_ssrf", "charge.succeeded"))
        .await;
    let rows = eventually("both attempts failed", WAIT, || async {
        let rows = a.outbox("").await;
        (rows.len() == 2
            && rows
                .iter()
                .all(|r| r["attempts"].as_i64().unwrap_or(0) >= 1))
        .then_some(rows)
    })
    .await;
    for r in rows {
        assert!(
            r["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("forbidden destination"),
            "{r}"
        );
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let a = Instance::start_with("instance-a", &[("KITE_PEER_FAILURE_THRESHOLD", "1000")]).await;
    let (target, target_seen) = recording_sink(200).await;
    let (redirect, redirect_seen) = recording_sink(307).await;
    let _ = target;
    add_peer(
        &a,
        "redirecting",
        &format!("{redirect}/hooks/default/kite"),
        "kfed_x",
        &["*"],
        3,
    )
    .await;
    a.hook("stripe", &stripe_event("evt_redirect", "charge.succeeded"))
        .await;
    let row = eventually("a failed attempt", WAIT, || async {
        a.outbox("")
            .await
            .into_iter()
            .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    assert_eq!(row["last_status_code"], 307);
    assert!(!redirect_seen.lock().expect("lock").is_empty());
    assert!(target_seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_RATE_TEAM_PER_SEC", "5"),
            ("KITE_RATE_TEAM_BURST", "5"),
        ],
    )
    .await;
    let answers = futures::future::join_all((0..20).map(|i| {
        let req = a
            .http
            .post(format!("{}/hooks/default/stripe", a.url))
            .json(&stripe_event(&format!("evt_rl_{i}"), "x"));
        async move {
            let r = req.send().await.expect("send");
            let s = r.status().as_u16();
            let ra = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (s, ra, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    }))
    .await;
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(limited.len() >= 10, "{answers:?}");
    assert!(limited
        .iter()
        .all(|(_, ra, v)| ra.is_some() && code(v) == "rate_limited"));
    let accepted = answers.iter().filter(|(s, _, _)| *s == 202).count() as i64;
    assert_eq!(a.total_events().await, accepted);

    // Per trusted sender on federation inbound.
    let b = Instance::start_with(
        "instance-b",
        &[
            ("KITE_RATE_SENDER_PER_SEC", "2"),
            ("KITE_RATE_SENDER_BURST", "2"),
        ],
    )
    .await;
    let (s, t) = b.post("/api/federation/tokens", json!({"label":"a"})).await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().expect("token").to_string();
    b.post(
        "/api/federation/trusted-senders",
        json!({"name":"a","inbound_token": token}),
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let id = format!("fed-rl-{i}");
        let body =
            serde_json::to_vec(&json!({"specversion":"1.0","id":id,"source":"/s","type":"t"}))
                .expect("json");
        let mut h = standard_headers(&[&token], &id, now(), &body);
        h.push(("authorization", format!("Bearer {token}")));
        statuses.push(raw_post(&b, "/hooks/default/kite", &body, &h).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // Admin bodies over 64 KiB.
    let big = json!({"label": "x".repeat(70 * 1024)});
    let (s, v) = a.post("/api/federation/tokens", big).await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"));
}

#[tokio::test]
async fn hostile_input_gets_stable_400s_and_changes_nothing() {
    let a = Instance::start("instance-a").await;
    let many: Vec<String> = (0..65).map(|i| format!("s{i}.*")).collect();
    let long = "a".repeat(257);
    for (scopes, what) in [
        (json!(many), "65 scopes"),
        (json!([long]), "a 257-character pattern"),
        (json!([]), "no scope"),
        (json!([1]), "a number"),
    ] {
        let (s, v) = a
            .post("/api/federation/peers", json!({"name":"p","peer_hook_url":"http://127.0.0.1:9/hooks/default/kite","outbound_token":"t","scopes":scopes}))
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some("scopes")),
            "{what}: {v}"
        );
    }
    let ce = |ext: Value| {
        let mut e = json!({"specversion":"1.0","id":"h1","source":"/s","type":"t"});
        for (k, v) in ext.as_object().expect("object") {
            e[k] = v.clone();
        }
        serde_json::to_vec(&e).expect("json")
    };
    let ct = [("content-type", "application/cloudevents+json".to_string())];
    for (body, want) in [
        (ce(json!({"kitefedhops": -1})), "reserved_extension"),
        (
            ce(json!({"kitefedhops": 1_000_000_000_000i64})),
            "reserved_extension",
        ),
        (ce(json!({"kitefedhops": "many"})), "reserved_extension"),
        (
            ce(json!({"kitefedchain": "{\"not\":\"an array\"}"})),
            "reserved_extension",
        ),
        (ce(json!({"kitefedchain": "[1, 2]"})), "reserved_extension"),
        (ce(json!({"kitefedorigin": 42})), "reserved_extension"),
        (ce(json!({"specversion": "9.9"})), "invalid_cloudevent"),
    ] {
        let (s, v, _) = raw_post(&a, "/hooks/default/acme", &body, &ct).await;
        assert_eq!(
            (s, code(&v)),
            (400, want),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let json_ct = [("content-type", "application/json".to_string())];
    let (s, v, _) = raw_post(&a, "/hooks/default/acme", &[0xff, 0xfe, 0x00], &json_ct).await;
    assert_eq!((s, code(&v)), (400, "invalid_encoding"));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (s, v, _) = raw_post(&a, "/hooks/default/acme", deep.as_bytes(), &json_ct).await;
    assert_eq!((s, code(&v)), (400, "too_deep"));
    assert_eq!(a.total_events().await, 0);
    let (_, peers) = a.get("/api/federation/peers").await;
    assert_eq!(peers["items"].as_array().map(Vec::len), Some(0));
    // The instance is still healthy.
    assert_eq!(a.hook("acme", &json!({"type":"ok"})).await.0, 202);
}
