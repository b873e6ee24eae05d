//! kite against software nobody here wrote: the public Kite wire types (`kite-protocol` 0.1
//! from crates.io) on `/ws`, the calls the public Kite CLI makes, and the scopes it uses.

use crate::common;

use common::hostile::WAIT;
use common::*;
use futures::{SinkExt, StreamExt};
use kite_protocol::{ClientMessage, ServerMessage};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects as the public client does: its own `connect` frame, serialized by its types.
async fn connect(inst: &Instance, key: &str, scopes: &[&str], client_id: Option<&str>) -> Ws {
    let url = format!("{}/ws", inst.url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let hello = ClientMessage::Connect {
        version: 1,
        token: key.to_owned(),
        team_id: "default".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        client_id: client_id.map(str::to_owned),
    };
    let text = serde_json::to_string(&hello).expect("encode");
    ws.send(Message::Text(text.into())).await.expect("send");
    ws
}

/// The next frame, read with the public crate's types (a frame they cannot read fails).
async fn next(ws: &mut Ws) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(&t).unwrap_or_else(|e| {
                    panic!("kite sent a frame the public crate cannot read ({e}): {t}")
                }))
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn connected(ws: &mut Ws) -> (u64, String) {
    match next(ws).await {
        Some(ServerMessage::Connected {
            last_seq,
            client_id,
        }) => (last_seq, client_id),
        other => panic!("expected connected, got {other:?}"),
    }
}

/// One call, as the public CLI makes it; answers ok and the payload.
async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> (bool, Value) {
    let req = ClientMessage::Request {
        id: id.into(),
        method: method.into(),
        params,
    };
    let text = serde_json::to_string(&req).expect("encode");
    ws.send(Message::Text(text.into())).await.expect("send");
    loop {
        match next(ws).await {
            Some(ServerMessage::Response {
                id: rid,
                ok,
                payload,
            }) if rid == id => return (ok, payload),
            Some(ServerMessage::Event { .. }) => continue,
            other => panic!("expected the response to {id}, got {other:?}"),
        }
    }
}

async fn ack(ws: &mut Ws, seq: u64) {
    let text = serde_json::to_string(&ClientMessage::Ack { seq }).expect("encode");
    ws.send(Message::Text(text.into())).await.expect("send");
}

#[tokio::test]
async fn every_frame_kite_sends_parses_with_the_public_crate() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_RETENTION_SECS", "2"),
            ("KITE_SWEEP_INTERVAL_MS", "200"),
        ],
    )
    .await;
    // connected (with a client id of the server's making), event, response.
    let mut ws = connect(&a, &a.key, &["*"], None).await;
    let (_, id) = connected(&mut ws).await;
    assert!(!id.is_empty());
    a.hook("stripe", &stripe_event("evt_pub_1", "charge.succeeded"))
        .await;
    match next(&mut ws).await {
        Some(ServerMessage::Event { seq, event }) => {
            assert_eq!(event["id"], "evt_pub_1");
            assert_eq!(event["kiteseq"], json!(seq));
            ack(&mut ws, seq).await;
        }
        other => panic!("expected an event, got {other:?}"),
    }
    let (ok, p) = call(&mut ws, "r1", "no.such.method", json!({})).await;
    assert!(!ok);
    assert!(p["error"]
        .as_str()
        .is_some_and(|e| e.contains("unknown method")));
    drop(ws);

    // cursor_expired: a durable cursor that retention overtook.
    let mut ws = connect(&a, &a.key, &["*"], Some("old-laptop")).await;
    assert_eq!(connected(&mut ws).await.1, "old-laptop");
    drop(ws);
    for i in 0..3 {
        a.hook(
            "stripe",
            &stripe_event(&format!("evt_pub_old_{i}"), "charge.succeeded"),
        )
        .await;
    }
    eventually("events pruned", WAIT, || async {
        (a.total_events().await == 0).then_some(())
    })
    .await;
    let mut ws = connect(&a, &a.key, &["*"], Some("old-laptop")).await;
    match next(&mut ws).await {
        Some(ServerMessage::CursorExpired {
            oldest_available_seq,
            message,
        }) => {
            assert!(!message.is_empty(), "{oldest_available_seq}");
        }
        other => panic!("expected cursor_expired, got {other:?}"),
    }
    connected(&mut ws).await;

    // error: a key kite does not know.
    let mut ws = connect(
        &a,
        "kite_00000000_00000000000000000000000000000000",
        &["*"],
        None,
    )
    .await;
    match next(&mut ws).await {
        Some(ServerMessage::Error { code, .. }) => {
            assert_eq!(code, kite_protocol::ERR_AUTH_FAILED)
        }
        other => panic!("expected error 4001, got {other:?}"),
    }
}

#[tokio::test]
async fn the_public_clis_calls_answer_with_its_payloads() {
    let a = Instance::start("instance-a").await;
    let mut ws = connect(&a, &a.key, &["*"], None).await;
    connected(&mut ws).await;

    let (ok, stats) = call(&mut ws, "1", "dashboard.stats", json!({})).await;
    assert!(ok, "{stats}");
    assert_eq!(stats["team_id"], "default");
    assert_eq!(
        stats["current_key_permissions"],
        json!(["read", "write", "admin"])
    );

    // hooks.create / hooks.list / hooks.deactivate: kite's signed sources.
    let (ok, hook) = call(&mut ws, "2", "hooks.create", json!({"source": "github"})).await;
    assert!(ok, "{hook}");
    assert_eq!(hook["endpoint"], "/hooks/default/github");
    let secret = hook["github_webhook_secret"]
        .as_str()
        .expect("a secret shown once");
    // The hook works: a GitHub delivery signed with that secret is accepted.
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let sig = hmac_hex(secret.as_bytes(), &[body]);
    let (s, v, _) = raw_post(
        &a,
        "/hooks/default/github",
        body,
        &[
            ("x-github-event", "ping".into()),
            ("x-github-delivery", "d-1".into()),
            ("x-hub-signature-256", format!("sha256={sig}")),
        ],
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (ok, hooks) = call(&mut ws, "3", "hooks.list", json!({})).await;
    assert!(ok);
    let listed = &hooks["hooks"][0];
    assert_eq!(
        (listed["source"].as_str(), listed["active"].as_bool()),
        (Some("github"), Some(true))
    );
    assert!(listed.get("secret").is_none());
    let (ok, _) = call(&mut ws, "4", "hooks.deactivate", json!({"id": hook["id"]})).await;
    assert!(ok);
    let (_, hooks) = call(&mut ws, "5", "hooks.list", json!({})).await;
    assert_eq!(hooks["hooks"], json!([]));

    // keys.create / keys.list / keys.revoke, and a read key's limits.
    let (ok, key) = call(
        &mut ws,
        "6",
        "keys.create",
        json!({"name": "ci", "scopes": ["*"], "permissions": ["read"], "expires_at": null}),
    )
    .await;
    assert!(ok, "{key}");
    let read_key = key["api_key"].as_str().expect("key shown once").to_owned();
    let (ok, keys) = call(&mut ws, "7", "keys.list", json!({})).await;
    assert!(ok);
    let listed = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"] == key["id"]))
        .expect("listed");
    assert_eq!(
        (listed["name"].as_str(), listed["revoked"].as_bool()),
        (Some("ci"), Some(false))
    );
    assert!(keys.to_string().find(&read_key).is_none(), "never the key");

    let mut reader = connect(&a, &read_key, &["*"], None).await;
    connected(&mut reader).await;
    let (ok, recent) = call(&mut reader, "8", "events.recent", json!({"limit": 5})).await;
    assert!(ok, "{recent}");
    assert_eq!(recent["events"][0]["event"]["type"], "com.github.ping");
    assert!(recent["events"][0]["seq"].as_i64().is_some());
    let (ok, refused) = call(&mut reader, "9", "keys.create", json!({"name": "x"})).await;
    assert!(!ok);
    assert!(refused["error"]
        .as_str()
        .is_some_and(|e| e.contains("admin")));
    let (ok, _) = call(&mut reader, "10", "hooks.create", json!({"source": "x"})).await;
    assert!(!ok, "hooks.create needs admin");

    // One permission table for both doors: what HTTP refuses a write key, /ws refuses it too
    // (removing a hook's signature check needs admin either way); what it lets a read key
    // see, both let it see.
    let (ok, key) = call(
        &mut ws,
        "10w",
        "keys.create",
        json!({"name": "writer", "scopes": ["*"], "permissions": ["write"], "expires_at": null}),
    )
    .await;
    assert!(ok, "{key}");
    let write_key = key["api_key"].as_str().expect("key shown once").to_owned();
    let (ok, hook) = call(&mut ws, "10h", "hooks.create", json!({"source": "stripe"})).await;
    assert!(ok, "{hook}");
    let mut writer = connect(&a, &write_key, &["*"], None).await;
    connected(&mut writer).await;
    let as_writer = |method: reqwest::Method, path: &str| {
        let (a, key, path) = (&a, write_key.clone(), path.to_owned());
        async move {
            kite_kit::client::ApiClient::with_http(a.http.clone(), &a.url, &key)
                .call(method, &path, None)
                .await
                .expect("request")
                .status
        }
    };
    let (ok, refused) = call(
        &mut writer,
        "10d",
        "hooks.deactivate",
        json!({"id": hook["id"]}),
    )
    .await;
    assert!(!ok && refused["code"] == "forbidden", "{refused}");
    assert_eq!(
        as_writer(reqwest::Method::DELETE, "/api/sources/stripe").await,
        403
    );
    let (ok, _) = call(&mut writer, "10c", "hooks.create", json!({"source": "y"})).await;
    assert!(!ok);
    let (ok, _) = call(&mut writer, "10l", "hooks.list", json!({})).await;
    assert!(ok);
    assert_eq!(as_writer(reqwest::Method::GET, "/api/sources").await, 200);
    let (ok, _) = call(&mut writer, "10k", "keys.list", json!({})).await;
    assert!(!ok);
    assert_eq!(as_writer(reqwest::Method::GET, "/api/keys").await, 403);
    let (_, hooks) = call(&mut ws, "10s", "hooks.list", json!({})).await;
    assert_eq!(
        hooks["hooks"][0]["source"], "stripe",
        "the hook keeps its check"
    );

    let (ok, _) = call(&mut ws, "11", "keys.revoke", json!({"id": key["id"]})).await;
    assert!(ok);
    let (_, keys) = call(&mut ws, "12", "keys.list", json!({})).await;
    let revoked = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"] == key["id"]))
        .expect("listed");
    assert_eq!(revoked["revoked"], true);
}

#[tokio::test]
async fn a_client_that_never_acks_gets_every_event_and_resumes_after_the_last_sent() {
    let a = Instance::start("instance-a").await;
    let mut ws = connect(&a, &a.key, &["*"], Some("never-acks")).await;
    connected(&mut ws).await;
    let ids: Vec<String> = (0..1_200).map(|i| format!("evt_na_{i}")).collect();
    let (accepted, _) = provider_send(
        a.url.clone(),
        ids.clone(),
        32,
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(accepted.len(), ids.len());
    let mut got = 0;
    let mut last = 0;
    while got < ids.len() {
        match next(&mut ws).await {
            Some(ServerMessage::Event { seq, .. }) => {
                got += 1;
                last = seq;
            }
            other => panic!("after {got} events: {other:?}"),
        }
    }
    drop(ws);
    // It never acked: it resumes after the last event it was sent.
    let mut ws = eventually("the cursor saved", WAIT, || async {
        let mut ws = connect(&a, &a.key, &["*"], Some("never-acks")).await;
        let (resumed, _) = connected(&mut ws).await;
        (resumed == last).then_some(ws)
    })
    .await;
    a.hook("stripe", &stripe_event("evt_na_after", "charge.succeeded"))
        .await;
    match next(&mut ws).await {
        Some(ServerMessage::Event { event, .. }) => assert_eq!(event["id"], "evt_na_after"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn source_scopes_match_the_provider_after_federation() {
    let a = Instance::start("instance-a").await;
    let b = Instance::start("instance-b").await;
    peer(&a, &b, &["*"], 3).await;
    let mut stripe_only = connect(&b, &b.key, &["source:stripe"], None).await;
    connected(&mut stripe_only).await;
    let mut federated = connect(&b, &b.key, &["source:kite"], None).await;
    connected(&mut federated).await;
    let mut ours = Listen::start(&b, &["--source", "stripe", "--json"]).await;

    github_push(&a, "gh-fed-1").await;
    a.hook("stripe", &stripe_event("evt_fed_src", "charge.succeeded"))
        .await;
    match next(&mut stripe_only).await {
        Some(ServerMessage::Event { event, .. }) => {
            assert_eq!(event["id"], "evt_fed_src");
            assert_eq!(event["kitefedorigin"], "instance-a");
        }
        other => panic!("{other:?}"),
    }
    let printed = ours.json().await;
    assert_eq!(printed["id"], "evt_fed_src");
    // source:kite still selects everything that came by federation.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Some(ServerMessage::Event { event, .. }) = next(&mut federated).await {
            seen.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["com.github.push", "com.stripe.charge.succeeded"]);
}
