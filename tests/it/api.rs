//! Admin API and ingress input validation: stable error codes and statuses.

use crate::common;

use common::*;
use serde_json::{json, Value};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn admin_api_validates_fields_and_auth() {
    let a = Instance::start("instance-a").await;
    let base = json!({"name":"p","peer_hook_url":"http://127.0.0.1:1/hooks/default/kite","outbound_token":"kfed_x"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("peer_hook_url", json!("ftp://x/y")), "peer_hook_url"),
        (with("peer_hook_url", json!("not a url")), "peer_hook_url"),
        (with("scopes", json!(["ok.*", "bad["])), "scopes"),
        (with("scopes", json!("stripe.*")), "scopes"),
        (with("max_hops", json!(0)), "max_hops"),
        (with("max_hops", json!(17)), "max_hops"),
        (with("status", json!("sleeping")), "status"),
        (with("name", json!("")), "name"),
        (
            json!({"peer_hook_url":"http://x/hooks/default/kite","outbound_token":"t"}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = a.post("/api/federation/peers", body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(code(&v), "validation_error");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (_, v) = a
        .post(
            "/api/federation/peers",
            with("scopes", json!(["ok.*", "bad["])),
        )
        .await;
    assert_eq!(v["error"]["pattern"], "bad[");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("bad["));

    let (s, p) = a.post("/api/federation/peers", base.clone()).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["scopes"], json!(["*"]));
    assert_eq!(p["max_hops"], 3);
    assert_eq!(p["status"], "active");
    let (s, v) = a.post("/api/federation/peers", base.clone()).await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    let id = p["id"].as_str().unwrap_or_default();
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{id}"),
            json!({"status":"nope"}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("status")));
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{id}"),
            json!({"scopes":["stripe.*"], "status":"revoked"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["scopes"].clone(), v["status"].clone()),
        (json!(["stripe.*"]), json!("revoked"))
    );
    let (s, _) = a
        .get("/api/federation/peers/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(s, 404);
    let (s, v) = a
        .post("/api/federation/peers", Value::String("x".into()))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_json"));

    let (s, v) = a.get("/api/federation/outbox?status=weird").await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("status")));
    let (s, v) = a.get("/api/federation/outbox?limit=0").await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("limit")));

    // Trusted senders: create, list without secrets, delete.
    let (s, snd) = a
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"b","inbound_token":"kfed_s"}),
        )
        .await;
    assert_eq!(s, 201, "{snd}");
    assert!(snd.get("inbound_token").is_none());
    let (s, v) = a
        .post("/api/federation/trusted-senders", json!({"name":"c"}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("inbound_token"))
    );
    let (_, list) = a.get("/api/federation/trusted-senders").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let sid = snd["id"].as_str().unwrap_or_default();
    assert_eq!(
        a.delete(&format!("/api/federation/trusted-senders/{sid}"))
            .await
            .0,
        200
    );
    assert_eq!(
        a.delete(&format!("/api/federation/trusted-senders/{sid}"))
            .await
            .0,
        404
    );

    // No key, or a wrong one: 401 with a code.
    for auth in [None, Some("kite_00000000_00000000000000000000000000000000")] {
        let mut r = a.http.get(format!("{}/api/federation/peers", a.url));
        if let Some(k) = auth {
            r = r.bearer_auth(k);
        }
        let resp = r.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 401);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(code(&v), "unauthorized");
    }
}

#[tokio::test]
async fn hooks_reject_bad_input_with_stable_codes() {
    let a = Instance::start("instance-a").await;
    let post_raw = |path: String, body: Vec<u8>, ct: &'static str| {
        let req = a
            .http
            .post(format!("{}{path}", a.url))
            .header("content-type", ct)
            .body(body);
        async move {
            let r = req.send().await.expect("send");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = post_raw(
        "/hooks/default/stripe".into(),
        b"{not json".to_vec(),
        "application/json",
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_json"));
    let (s, v) = post_raw(
        "/hooks/default/Bad%20Name".into(),
        b"{}".to_vec(),
        "application/json",
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_source"));
    let (s, v) = post_raw(
        "/hooks/nobody/stripe".into(),
        b"{}".to_vec(),
        "application/json",
    )
    .await;
    assert_eq!((s, code(&v)), (404, "team_not_found"));
    let big = vec![b' '; 256 * 1024 + 1];
    let (s, v) = post_raw("/hooks/default/stripe".into(), big, "application/json").await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"));
    assert_eq!(v["error"]["max_bytes"], 262144);
    let (s, v) = post_raw(
        "/hooks/default/acme".into(),
        br#"{"specversion":"1.0","id":"x"}"#.to_vec(),
        "application/cloudevents+json",
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_cloudevent"));
    let (s, v) = post_raw(
        "/hooks/default/acme".into(),
        br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","kitefedchain":"nope"}"#
            .to_vec(),
        "application/cloudevents+json",
    )
    .await;
    // Federation extensions are the peers' alone: refused on every other hook.
    assert_eq!((s, code(&v)), (400, "reserved_extension"));
    assert_eq!(a.total_events().await, 0);

    // A structured CloudEvent keeps its attributes but its source, which is the hook it
    // came through (what it claimed is kept beside it); a plain JSON body gets
    // com.{source}.{type}.
    let (s, v) = post_raw(
        "/hooks/default/acme".into(),
        br#"{"specversion":"1.0","id":"ce-1","source":"/acme/orders","type":"com.acme.order.created","data":{"n":1}}"#.to_vec(),
        "application/cloudevents+json",
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let ev = a.event("ce-1").await.expect("stored");
    assert_eq!(ev["event"]["source"], "/hooks/default/acme");
    assert_eq!(ev["event"]["kiteclaimedsource"], "/acme/orders");
    assert_eq!(ev["event"]["type"], "com.acme.order.created");
    let (s, _) = post_raw(
        "/hooks/default/acme".into(),
        br#"{"type":"invoice.paid","x":1}"#.to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(s, 202);
    let (_, list) = a.get("/api/events").await;
    let types: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"]["type"].as_str())
        .collect();
    assert!(types.contains(&"com.acme.invoice.paid"), "{types:?}");
    let (s, v) = github_push(&a, "gh-1").await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        a.event("gh-1").await.expect("stored")["event"]["type"],
        "com.github.push"
    );
}

#[tokio::test]
async fn health_reports_ok_when_services_are_up() {
    let a = Instance::start("instance-a").await;
    let r = a
        .http
        .get(format!("{}/health", a.url))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("x-kite-instance-id")
            .and_then(|v| v.to_str().ok()),
        Some("instance-a")
    );
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn health_names_postgres_when_it_is_unreachable() {
    let a = Instance::start("instance-a").await;
    let (admin, conn) =
        tokio_postgres::connect(&format!("{}/postgres", pg_server()), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            a.db_name
        ))
        .await
        .expect("block connections");
    a.terminate_db_connections().await;
    let v = eventually(
        "503 naming postgres",
        std::time::Duration::from_secs(30),
        || async {
            let (s, v) = health(&a).await;
            (s == 503).then_some(v)
        },
    )
    .await;
    assert_eq!(v["postgres"], "unreachable");
    assert_eq!(v["rabbitmq"], "ok");
    assert_eq!(v["error"]["code"], "unavailable");
    // Requests that need the database answer 503 too, never 500.
    let (s, e) = a.hook("stripe", &stripe_event("evt_pg_down", "x")).await;
    assert_eq!((s, code(&e)), (503, "unavailable"), "{e}");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            a.db_name
        ))
        .await
        .expect("allow connections");
    eventually(
        "healthy again",
        std::time::Duration::from_secs(30),
        || async { (health(&a).await.0 == 200).then_some(()) },
    )
    .await;
}

async fn rabbitmqctl(args: &[&str]) {
    let ok = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn health_names_rabbitmq_when_it_is_unreachable() {
    // A vhost of the test's own, so taking the broker away affects nothing else.
    let vhost = format!("kitetest-{}", uuid::Uuid::new_v4().simple());
    rabbitmqctl(&["add_vhost", &vhost]).await;
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await;
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let a = Instance::start_with("instance-a", &[("KITE_AMQP_URL", &url)]).await;
    assert_eq!(health(&a).await.0, 200);
    rabbitmqctl(&["clear_permissions", "-p", &vhost, "guest"]).await;
    a.close_amqp_connections().await;
    let v = eventually(
        "503 naming rabbitmq",
        std::time::Duration::from_secs(30),
        || async {
            let (s, v) = health(&a).await;
            (s == 503).then_some(v)
        },
    )
    .await;
    assert_eq!(
        (v["rabbitmq"].as_str(), v["postgres"].as_str()),
        (Some("unreachable"), Some("ok"))
    );
    // Ingress still accepts: the Postgres commit makes an event durable.
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_mq_down", "x")).await.0,
        202
    );
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await;
    eventually(
        "healthy again",
        std::time::Duration::from_secs(30),
        || async { (health(&a).await.0 == 200).then_some(()) },
    )
    .await;
    drop(a);
    rabbitmqctl(&["delete_vhost", &vhost]).await;
}
