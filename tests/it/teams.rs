//! Teams made by the operator, and the wall between them on every route and on `/ws`.

use crate::common;

use common::hostile::{frame, ws_open, WAIT};
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The id of the next event frame.
async fn first(ws: &mut Ws) -> String {
    loop {
        let f = frame(ws).await.expect("open");
        if f["type"] == "event" {
            return f["event"]["id"].as_str().unwrap_or_default().to_owned();
        }
    }
}

const OPERATOR: &str = "kite_op_0123456789abcdef0123456789abcdef";

/// An admin call with any key.
async fn call(
    inst: &Instance,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let a = kite_kit::client::ApiClient::with_http(inst.http.clone(), &inst.url, key)
        .call(method, path, body.as_ref())
        .await
        .expect("request");
    (a.status, a.body)
}

#[tokio::test]
async fn only_the_operator_manages_teams() {
    let closed = Instance::start("instance-a").await;
    let (s, v) = call(&closed, OPERATOR, reqwest::Method::GET, "/api/teams", None).await;
    assert_eq!(
        (s, code(&v)),
        (401, "unauthorized"),
        "no operator key configured: closed"
    );

    let a = Instance::start_with("instance-a", &[("KITE_OPERATOR_KEY", OPERATOR)]).await;
    let (s, _) = call(&a, &a.key, reqwest::Method::GET, "/api/teams", None).await;
    assert_eq!(s, 401, "a team's admin key is not the operator's");
    let (s, v) = call(
        &a,
        OPERATOR,
        reqwest::Method::POST,
        "/api/teams",
        Some(json!({"id": "Bad Team"})),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("id")));
    let (s, t) = call(
        &a,
        OPERATOR,
        reqwest::Method::POST,
        "/api/teams",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    assert!(t["admin_key"]
        .as_str()
        .is_some_and(|k| k.starts_with("kite_")));
    let (s, _) = call(
        &a,
        OPERATOR,
        reqwest::Method::POST,
        "/api/teams",
        Some(json!({"id": "acme"})),
    )
    .await;
    assert_eq!(s, 409);
    let (_, list) = call(&a, OPERATOR, reqwest::Method::GET, "/api/teams", None).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["default", "acme"]);
    assert!(
        list.to_string().find("kite_").is_none(),
        "keys are never listed"
    );
    // The operator key is no team's key.
    let (s, _) = call(
        &a,
        OPERATOR,
        reqwest::Method::GET,
        "/api/federation/peers",
        None,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn teams_never_see_or_touch_each_other() {
    let a = Instance::start_with("instance-a", &[("KITE_OPERATOR_KEY", OPERATOR)]).await;
    let (_, t) = call(
        &a,
        OPERATOR,
        reqwest::Method::POST,
        "/api/teams",
        Some(json!({"id": "acme"})),
    )
    .await;
    let acme = t["admin_key"].as_str().expect("key").to_owned();
    let home = a.key.clone();
    use reqwest::Method as M;

    // The same kinds of things on both teams.
    let mut made = Vec::new();
    for key in [&home, &acme] {
        let (_, peer) = call(
            &a,
            key,
            M::POST,
            "/api/federation/peers",
            Some(json!({
            "name": "b", "peer_hook_url": "http://127.0.0.1:9/hooks/default/kite",
            "outbound_token": "whsec_c2VjcmV0", "status": "paused"})),
        )
        .await;
        let (_, token) = call(&a, key, M::POST, "/api/federation/tokens", Some(json!({}))).await;
        let (_, sender) = call(
            &a,
            key,
            M::POST,
            "/api/federation/trusted-senders",
            Some(json!({"name": "b", "inbound_token": "whsec_aW5ib3VuZA=="})),
        )
        .await;
        let (s, _) = call(
            &a,
            key,
            M::POST,
            "/api/sources",
            Some(json!({"name": "shop", "scheme": "hmac-sha256", "secret": "s3cret"})),
        )
        .await;
        assert_eq!(s, 201);
        let (_, k) = call(
            &a,
            key,
            M::POST,
            "/api/keys",
            Some(json!({"label": "reader"})),
        )
        .await;
        made.push((
            peer["id"].clone(),
            token["id"].clone(),
            sender["id"].clone(),
            k["id"].clone(),
        ));
    }
    let (home_peer, _, home_sender, home_reader) = made[0].clone();

    // Listings show a team's own only.
    for (key, (peer, token, sender, k)) in [(&home, &made[0]), (&acme, &made[1])] {
        for (path, id) in [
            ("/api/federation/peers", peer),
            ("/api/federation/tokens", token),
            ("/api/federation/trusted-senders", sender),
            ("/api/keys", k),
        ] {
            let (s, v) = call(&a, key, M::GET, path, None).await;
            assert_eq!(s, 200);
            let items = v["items"].as_array().expect("items");
            assert!(
                items.iter().any(|i| i["id"] == *id),
                "{path}: own item listed"
            );
            let others = if key == &home { &made[1] } else { &made[0] };
            for other in [&others.0, &others.1, &others.2, &others.3] {
                assert!(
                    !items.iter().any(|i| i["id"] == *other),
                    "{path}: never the other team's"
                );
            }
        }
        let (_, sources) = call(&a, key, M::GET, "/api/sources", None).await;
        assert_eq!(sources["items"].as_array().map(Vec::len), Some(1));
    }

    // Every route that names a resource: the other team's is not found, and untouched.
    let p = home_peer.as_str().expect("id");
    let s_id = home_sender.as_str().expect("id");
    let k_id = home_reader.as_str().expect("id");
    for (method, path, body) in [
        (M::GET, format!("/api/federation/peers/{p}"), None),
        (
            M::PATCH,
            format!("/api/federation/peers/{p}"),
            Some(json!({"status": "active"})),
        ),
        (
            M::POST,
            format!("/api/federation/peers/{p}/replay-dead"),
            Some(json!({})),
        ),
        (M::DELETE, format!("/api/federation/peers/{p}"), None),
        (
            M::PATCH,
            format!("/api/federation/trusted-senders/{s_id}"),
            Some(json!({"name": "x"})),
        ),
        (
            M::DELETE,
            format!("/api/federation/trusted-senders/{s_id}"),
            None,
        ),
        (M::DELETE, format!("/api/keys/{k_id}"), None),
    ] {
        let (s, v) = call(&a, &acme, method.clone(), &path, body).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
    }
    let (s, v) = call(
        &a,
        &home,
        M::GET,
        &format!("/api/federation/peers/{p}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("paused")),
        "untouched"
    );
    let (_, keys) = call(&a, &home, M::GET, "/api/keys", None).await;
    assert!(keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|k| k["id"] == home_reader && k["revoked_at"].is_null()));
    // A source is named, not numbered: rotating "shop" as acme rotates acme's own only.
    let (s, _) = call(&a, &acme, M::DELETE, "/api/sources/shop", None).await;
    assert_eq!(s, 200);
    let (_, sources) = call(&a, &home, M::GET, "/api/sources", None).await;
    assert_eq!(
        sources["items"].as_array().map(Vec::len),
        Some(1),
        "home's source stays"
    );

    // Events: each team's hooks, lists, outbox and stream.
    let mut home_ws = ws_open(&a, &home, None).await;
    let mut acme_ws = ws_open(&a, &acme, None).await;
    assert_eq!(
        frame(&mut home_ws).await.expect("connected")["type"],
        "connected"
    );
    assert_eq!(
        frame(&mut acme_ws).await.expect("connected")["type"],
        "connected"
    );
    let post = |team: &'static str, id: &'static str| {
        let a = &a;
        async move {
            let r = a
                .http
                .post(format!("{}/hooks/{team}/stripe", a.url))
                .json(&stripe_event(id, "charge.succeeded"))
                .send()
                .await
                .expect("send");
            r.status().as_u16()
        }
    };
    assert_eq!(post("acme", "evt_acme").await, 202);
    assert_eq!(post("default", "evt_home").await, 202);
    assert_eq!(first(&mut acme_ws).await, "evt_acme");
    assert_eq!(first(&mut home_ws).await, "evt_home");
    for (key, own, other) in [
        (&home, "evt_home", "evt_acme"),
        (&acme, "evt_acme", "evt_home"),
    ] {
        let (_, events) = call(&a, key, M::GET, "/api/events", None).await;
        let text = events.to_string();
        assert!(text.contains(own) && !text.contains(other), "{text}");
        let (s, outbox) = call(&a, key, M::GET, "/api/federation/outbox", None).await;
        assert_eq!(s, 200);
        assert!(!outbox.to_string().contains(other));
    }
    // The stream's calls see their own team only.
    acme_ws
        .send(Message::Text(
            json!({"type":"request","id":"1","method":"keys.list"})
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
    let answer = loop {
        let f = frame(&mut acme_ws).await.expect("open");
        if f["type"] == "response" {
            break f;
        }
    };
    assert_eq!(answer["payload"]["team_id"], "acme");
    assert!(!answer.to_string().contains(k_id));

    // A deleted team is gone: its key, its hooks, its data (events, deliveries, attempts).
    let owned = "SELECT (SELECT count(*) FROM events WHERE team_id = 'acme')
                      + (SELECT count(*) FROM outbox WHERE team_id = 'acme')
                      + (SELECT count(*) FROM attempts t
                         WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = t.outbox_id))";
    let acme_rows: i64 = a
        .db()
        .await
        .query_one("SELECT count(*) FROM outbox WHERE team_id = 'acme'", &[])
        .await
        .expect("count")
        .get(0);
    assert!(acme_rows > 0, "acme's event has a delivery to its peer");
    let (s, _) = call(&a, OPERATOR, M::DELETE, "/api/teams/acme", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&a, &acme, M::GET, "/api/keys", None).await;
    assert_eq!(s, 401);
    assert_eq!(post("acme", "evt_acme_2").await, 404);
    let (s, _) = call(&a, OPERATOR, M::DELETE, "/api/teams/acme", None).await;
    assert_eq!(s, 404);
    let (_, events) = call(&a, &home, M::GET, "/api/events", None).await;
    assert!(
        events.to_string().contains("evt_home"),
        "the other team keeps its data"
    );
    eventually(
        "acme's events, deliveries and attempts removed",
        WAIT,
        || async {
            let n: i64 = a.db().await.query_one(owned, &[]).await.ok()?.get(0);
            (n == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_operator_manages_teams_with_kite_admin() {
    let a = Instance::start_with("instance-a", &[("KITE_OPERATOR_KEY", OPERATOR)]).await;
    let kite = |args: &[&str]| {
        let url = a.url.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
                .args([
                    "admin",
                    "--instance",
                    &url,
                    "--api-key",
                    OPERATOR,
                    "--output",
                    "json",
                ])
                .args(&args)
                .env("HOME", "/nonexistent")
                .output()
                .await
                .expect("run kite");
            assert!(
                out.status.success(),
                "kite admin {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let made: Value =
        serde_json::from_str(&kite(&["teams", "create", "shop"]).await).expect("json");
    let key = made["admin_key"]
        .as_str()
        .expect("the first admin key, shown once");
    // The new team's key works, on its own team.
    let (s, v) = call(&a, key, reqwest::Method::GET, "/api/keys", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(kite(&["teams", "list"]).await.contains("\"shop\""));
    kite(&["teams", "delete", "shop"]).await;
    assert!(!kite(&["teams", "list"]).await.contains("\"shop\""));
    let (s, _) = call(&a, key, reqwest::Method::GET, "/api/keys", None).await;
    assert_eq!(s, 401);
}
