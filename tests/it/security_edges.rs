//! Trust at the edges, continued: provider signatures, signed-only hooks, the SSRF guard,
//! redirects, rate limits and hostile input, over HTTP.

use crate::common;

use std::time::Duration;

use common::*;
use kite_wire::provider::sign_standard;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

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
    let port = sink.rsplit(':').next().expect("port");
    insert_peer_row(
        &a,
        "rebound",
        &format!("http://localhost:{port}/hooks/default/kite"),
    )
    .await;
    insert_peer_row(
        &a,
        "literal",
        &format!("http://127.0.0.1:{port}/hooks/default/kite"),
    )
    .await;
    // Hooks until both peers had an attempt (the caches learn of the rows a moment later).
    let mut tries = 0;
    let rows = eventually("an attempt to each peer", WAIT, || {
        tries += 1;
        let a = &a;
        async move {
            a.hook("stripe", &stripe_event(&format!("evt_ssrf_{tries}"), "x"))
                .await;
            let tried: Vec<Value> = a
                .outbox("")
                .await
                .into_iter()
                .filter(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
                .collect();
            let peers: std::collections::HashSet<&str> =
                tried.iter().filter_map(|r| r["peer_id"].as_str()).collect();
            (peers.len() == 2).then_some(tried)
        }
    })
    .await;
    for r in rows {
        assert_refused_by_guard(&r);
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the private address"
    );
}

/// A proxy named by the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) is not
/// used for peers: through it the peer's host would be resolved by the proxy, out of the
/// guard's sight, and a name that resolves to a private address would be reached.
#[tokio::test]
async fn a_proxy_in_the_environment_does_not_carry_deliveries_past_the_guard() {
    let (proxy, through_proxy) = recording_sink(200).await;
    let (sink, seen) = recording_sink(200).await;
    let mut env = vec![("KITE_ALLOW_PRIVATE_PEERS", "false")];
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        env.push((var, proxy.as_str()));
    }
    // A runner's own NO_PROXY (often naming localhost) would hide what is tested.
    env.extend([("NO_PROXY", ""), ("no_proxy", "")]);
    let a = Instance::process_with("instance-a", &env).await;
    // A name that resolves to loopback (see the test above).
    let port = sink.rsplit(':').next().expect("port");
    insert_peer_row(
        &a,
        "rebound",
        &format!("http://localhost:{port}/hooks/default/kite"),
    )
    .await;
    let row = hook_until_attempted(&a, "evt_proxy", WAIT).await;
    assert_eq!(row["status"], "pending", "{row}");
    assert_refused_by_guard(&row);
    assert!(
        through_proxy.lock().expect("lock").is_empty(),
        "the proxy saw nothing"
    );
    assert!(seen.lock().expect("lock").is_empty(), "nor did the address");
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
