//! kite's HTTP side as other software reads it: deliveries verified by the official Standard
//! Webhooks library, `webhook-id`s, the JSON errors, the original bytes end to end,
//! `kite listen --forward-to` like `stripe listen`, and Slack's URL verification.

use crate::common;

use common::hostile::WAIT;
use common::tools::standardwebhooks_verify;
use common::*;
use serde_json::{json, Value};

/// A body as a provider sends it: odd spacing, keys out of order, numbers JSON libraries
/// change (`1.50`, an integer beyond 64 bits), and an escaped character.
const ODD_BODY: &str = "{\"type\":\"charge.succeeded\",  \"id\" : \"evt_bytes\", \"zeta\":1.50, \"alpha\" :12345678901234567890123,\"s\":\"caf\\u00e9\"}";

/// Pretty-printed, as Stripe sends it.
const PRETTY_BODY: &str =
    "{\n  \"id\": \"evt_pretty\",\n  \"type\": \"charge.succeeded\",\n  \"amount\": 10.10\n}";

#[tokio::test]
async fn the_official_standard_webhooks_library_verifies_kites_deliveries() {
    let a = Instance::start("instance-a").await;
    // The secret kite mints for federation, as it printed it.
    let (s, minted) = a
        .post("/api/federation/tokens", json!({"label": "receiver"}))
        .await;
    assert_eq!(s, 201, "{minted}");
    let secret = minted["token"].as_str().expect("token").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (url, seen) = recording_sink(200).await;
    add_peer(
        &a,
        "receiver",
        &format!("{url}/hooks/default/kite"),
        &secret,
        &["*"],
        3,
    )
    .await;

    // Two different events that share an id, from two sources.
    a.hook("stripe", &stripe_event("shared-id", "charge.succeeded"))
        .await;
    a.hook_with(
        "github",
        &json!({"zen": "x"}),
        &[
            ("x-github-event", "ping"),
            ("x-github-delivery", "shared-id"),
        ],
    )
    .await;
    let got = eventually("both delivered", WAIT, || async {
        let g = seen.lock().expect("lock");
        (g.len() >= 2).then(|| g.clone())
    })
    .await;
    for (headers, body) in &got {
        standardwebhooks_verify(&secret, headers, body.as_bytes())
            .unwrap_or_else(|e| panic!("the official library refused kite's delivery: {e}"));
        // And it refuses a tampered body (the check is real).
        assert!(standardwebhooks_verify(&secret, headers, b"{}").is_err());
    }
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|(h, _)| header(h, "webhook-id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "one webhook-id per message");
    // Stable across retries: the same event gets the same id.
    assert_eq!(
        ids.iter()
            .filter(
                |i| **i == kite_wire::signature::message_id("/hooks/default/stripe", "shared-id")
            )
            .count(),
        1
    );

    // A bare base64 secret is decoded the way the libraries decode it.
    let bare = secret.trim_start_matches("whsec_").to_owned();
    let (url2, seen2) = recording_sink(200).await;
    add_peer(
        &a,
        "bare",
        &format!("{url2}/hooks/default/kite"),
        &bare,
        &["stripe.*"],
        3,
    )
    .await;
    a.hook("stripe", &stripe_event("evt_bare", "charge.succeeded"))
        .await;
    let (h, b) = eventually("delivered with a bare secret", WAIT, || async {
        seen2.lock().expect("lock").first().cloned()
    })
    .await;
    standardwebhooks_verify(&bare, &h, b.as_bytes()).expect("bare base64 secret verifies");
}

#[tokio::test]
async fn errors_are_always_the_documented_json() {
    let a = Instance::start("instance-a").await;
    let http = reqwest::Client::new();
    let json_error = |r: &reqwest::Response| {
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"))
    };
    let r = http
        .get(format!("{}/no/such/route", a.url))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert!(json_error(&r));
    assert_eq!(code(&r.json().await.expect("json")), "not_found");

    let r = http
        .delete(format!("{}/hooks/default/stripe", a.url))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);
    assert!(json_error(&r));
    assert!(r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("POST")));
    assert_eq!(code(&r.json().await.expect("json")), "method_not_allowed");

    let r = http
        .get(format!("{}/api/keys", a.url))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(code(&r.json().await.expect("json")), "unauthorized");

    for (ct, body) in [
        (Some("text/plain"), "label=x"),
        (Some("application/x-www-form-urlencoded"), "label=x"),
        (None, "label=x"),
    ] {
        let mut req = http
            .post(format!("{}/api/federation/tokens", a.url))
            .bearer_auth(&a.key)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status(), 415, "{ct:?}");
        assert!(json_error(&r));
        assert_eq!(
            code(&r.json().await.expect("json")),
            "unsupported_media_type"
        );
    }
}

#[tokio::test]
async fn a_body_arrives_byte_for_byte_at_the_peer_the_listener_and_the_forward() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    peer(&a, &b, &["*"], 3).await;
    let mut listen = Listen::start(&b, &["--source", "stripe", "--json"]).await;
    let (url, seen) = recording_sink(200).await;
    let fwd = Listen::start(
        &b,
        &[
            "--source",
            "stripe",
            "--forward-to",
            &format!("{url}/webhooks"),
            "--raw",
        ],
    )
    .await;
    let printed_secret = fwd.signing_secret();
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/stripe",
        ODD_BODY.as_bytes(),
        &[("content-type", "application/json".into())],
    )
    .await;
    assert_eq!(s, 202, "{v}");

    // At B, as stored and served: the data is the original text.
    let text = eventually("the event at B", WAIT, || async {
        let t = b
            .http
            .get(format!("{}/api/events?limit=100", b.url))
            .bearer_auth(&b.key)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.contains("evt_bytes").then_some(t)
    })
    .await;
    assert!(text.contains(&format!("\"data\":{ODD_BODY}")), "{text}");
    // At a `kite listen --json` on B.
    let line = listen.line().await;
    assert!(line.contains(&format!("\"data\":{ODD_BODY}")), "{line}");
    // At a `--forward-to --raw` target: the original bytes, re-signed the Stripe way with the
    // secret kite listen printed.
    let (headers, body) = eventually("forwarded", WAIT, || async {
        seen.lock().expect("lock").first().cloned()
    })
    .await;
    assert_eq!(body, ODD_BODY);
    let sig = header(&headers, "stripe-signature").expect("re-signed");
    let (t, v1) = sig
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
        .expect("t=..,v1=..");
    assert_eq!(
        hmac_hex(
            printed_secret.as_bytes(),
            &[t.as_bytes(), b".", body.as_bytes()]
        ),
        v1
    );
    standardwebhooks_verify(&printed_secret, &headers, body.as_bytes())
        .expect("Standard Webhooks headers verify with the printed secret");

    // A pretty-printed body: exact at the peer and the forward; on one line at the listener.
    let (s, _, _) = raw_post(&a, "/hooks/default/stripe", PRETTY_BODY.as_bytes(), &[]).await;
    assert_eq!(s, 202);
    let (_, body) = eventually("forwarded", WAIT, || async {
        seen.lock().expect("lock").get(1).cloned()
    })
    .await;
    assert_eq!(body, PRETTY_BODY);
    let line = listen.line().await;
    assert!(
        line.contains(&format!("\"data\":{}", PRETTY_BODY.replace('\n', " "))),
        "{line}"
    );
    let text = eventually("the pretty event at B", WAIT, || async {
        let t = b
            .http
            .get(format!("{}/api/events?limit=100", b.url))
            .bearer_auth(&b.key)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.contains("evt_pretty").then_some(t)
    })
    .await;
    assert!(text.contains(&format!("\"data\":{PRETTY_BODY}")), "{text}");
}

#[tokio::test]
async fn forward_to_moves_on_past_a_failing_target_and_keeps_its_secret() {
    let a = Instance::start("instance-a").await;
    // Answers 500 to the first event, 200 to the rest.
    let (url, seen) = recording_sink(200).await;
    let failing = {
        let app = axum::Router::new()
            .fallback(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let u = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        u
    };
    let home = std::env::temp_dir().join(format!("kite-home-{}", uuid::Uuid::new_v4().simple()));
    let args = |to: &str| {
        vec![
            "--client-id".to_string(),
            "laptop".into(),
            "--forward-to".into(),
            to.to_string(),
            "--forward-retries".into(),
            "1".into(),
        ]
    };
    let bad_args = args(&failing);
    let l = Listen::start_with_home(
        &a,
        &bad_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &home,
    )
    .await;
    let first_secret = l.signing_secret();
    a.hook("stripe", &stripe_event("evt_fail_1", "charge.succeeded"))
        .await;
    a.hook("stripe", &stripe_event("evt_fail_2", "charge.succeeded"))
        .await;
    eventually("both given up on", WAIT, || async {
        let n = l
            .stderr
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|x| {
                        x.contains("[500]")
                            && x.contains("(attempt 2/2); giving up after 2 attempts")
                    })
                    .count()
            })
            .unwrap_or(0);
        (n >= 2).then_some(())
    })
    .await;
    // --forward-retries 1: one retry, two attempts, every line counting the same way.
    assert!(l.said("(attempt 1/2); retrying"));
    drop(l);

    // The same client id keeps its secret; later events still flow to a good target.
    let good_args = args(&format!("{url}/ok"));
    let l = Listen::start_with_home(
        &a,
        &good_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &home,
    )
    .await;
    assert_eq!(l.signing_secret(), first_secret);
    a.hook("stripe", &stripe_event("evt_fail_3", "charge.succeeded"))
        .await;
    let (h, body) = eventually("a later event arrives", WAIT, || async {
        seen.lock()
            .expect("lock")
            .iter()
            .find(|(_, b)| b.contains("evt_fail_3"))
            .cloned()
    })
    .await;
    standardwebhooks_verify(&first_secret, &h, body.as_bytes()).expect("signed");
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test]
async fn listen_refuses_a_url_without_a_scheme_and_a_socket_path_that_is_a_file() {
    let a = Instance::start("instance-a").await;
    let run = |args: Vec<String>| {
        let key = a.key.clone();
        let url = a.url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
                .args(["listen", "--instance", &url])
                .args(args)
                .env("KITE_API_KEY", key)
                .env("HOME", "/nonexistent")
                .output()
                .await
                .expect("run")
        }
    };
    let out = run(vec!["--forward-to".into(), "localhost:3000/hooks".into()]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute http(s) URL"));

    let dir = std::env::temp_dir().join(format!("kite-sock-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me").expect("write");
    let out = run(vec!["--socket".into(), file.display().to_string()]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );

    // A socket it made is removed when it ends.
    let sock = dir.join("listen.sock");
    let l = Listen::start(&a, &["--socket", sock.to_str().expect("path")]).await;
    assert!(sock.exists());
    let pid = l.child.id().expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    eventually("socket removed on exit", WAIT, || async {
        (!sock.exists()).then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_slack_source_answers_url_verification_with_its_challenge() {
    let a = Instance::start("instance-a").await;
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (s, v) = a
        .post(
            "/api/sources",
            json!({"name": "slack", "scheme": "slack", "secret": secret}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ts = now().to_string();
    let sig = hmac_hex(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    let signed = |sig: String| {
        vec![
            ("content-type", "application/json".to_string()),
            ("x-slack-request-timestamp", ts.clone()),
            ("x-slack-signature", sig),
        ]
    };
    let r = a
        .http
        .post(format!("{}/hooks/default/slack", a.url))
        .headers(
            signed(format!("v0={sig}"))
                .into_iter()
                .map(|(k, v)| (k.parse().expect("name"), v.parse().expect("value")))
                .collect(),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.expect("text"),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(a.total_events().await, 0, "a handshake, not an event");
    // Unsigned, it is refused like any other request to a signed source.
    let (s, _, _) = raw_post(&a, "/hooks/default/slack", body, &signed("v0=00".into())).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn a_json_body_is_never_rewritten_on_the_events_api() {
    let a = Instance::start("instance-a").await;
    let (s, _, _) = raw_post(&a, "/hooks/default/stripe", ODD_BODY.as_bytes(), &[]).await;
    assert_eq!(s, 202);
    let text = a
        .http
        .get(format!("{}/api/events", a.url))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(text.contains(&format!("\"data\":{ODD_BODY}")), "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["items"][0]["event"]["id"], "evt_bytes");
}
