//! One hostile request never stalls, crashes or poisons kite. Each test sends what an
//! attacker would, over HTTP or `/ws`, while legitimate traffic flows, and checks both the
//! refusal (or the bound) and that the legitimate events arrive once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(40);

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

/// Posts raw bytes with headers; answers the status and the JSON answer.
async fn raw(
    inst: &Instance,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut r = inst.http.post(format!("{}{path}", inst.url)).body(body);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.expect("send");
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

fn ce_json() -> (&'static str, String) {
    ("content-type", "application/cloudevents+json".to_string())
}

/// What a sink saw: every request's event id, headers and body, and the ids it accepted.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, HashMap<String, String>, String)>,
    accepted: Vec<String>,
}

/// A peer endpoint on loopback whose answer depends on the event id.
struct Sink {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Sink {
    async fn start(rule: fn(&str) -> u16) -> Self {
        Self::on(0, rule).await
    }

    async fn on(port: u16, rule: fn(&str) -> u16) -> Self {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
                let s = s.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let status = rule(&id);
                    let hs = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let mut g = s.lock().expect("lock");
                    g.requests.push((id.clone(), hs, body));
                    if (200..300).contains(&status) {
                        g.accepted.push(id);
                    }
                    axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
                }
            });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind sink");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    /// Waits until every id was accepted, then checks each was accepted exactly once.
    async fn assert_once(&self, ids: &[String]) {
        eventually(
            &format!("{} events at the sink", ids.len()),
            WAIT,
            || async {
                let g = self.seen.lock().expect("lock");
                ids.iter().all(|id| g.accepted.contains(id)).then_some(())
            },
        )
        .await;
        let g = self.seen.lock().expect("lock");
        for id in ids {
            assert_eq!(
                g.accepted.iter().filter(|a| *a == id).count(),
                1,
                "{id} delivered once"
            );
        }
    }
}

/// Legitimate Stripe events posted one after another while an attack runs; each must be
/// answered 202. Answers their ids.
async fn legit(inst: &Instance, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("evt_{prefix}_{i}");
        let (s, v) = inst
            .hook("stripe", &stripe_event(&id, "charge.succeeded"))
            .await;
        assert_eq!(s, 202, "legitimate {id}: {v}");
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ids
}

async fn peer_view(a: &Instance, peer: &str) -> Value {
    let (s, p) = a.get(&format!("/api/federation/peers/{peer}")).await;
    assert_eq!(s, 200, "{p}");
    p
}

#[tokio::test]
async fn a_delivery_the_peer_refuses_for_good_never_wedges_the_peer() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_PEER_FAILURE_THRESHOLD", "2"),
            ("KITE_PEER_PROBE_INTERVAL_MS", "300"),
        ],
    )
    .await;
    let port = free_port();
    let peer = add_peer(
        &a,
        "b",
        &format!("http://127.0.0.1:{port}/hooks/default/kite"),
        "kfed_x",
        &["*"],
        3,
    )
    .await;

    // The peer is down: a poison event queues first, then good ones, and the peer parks.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_poison_0", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let early = legit(&a, "early", 5).await;
    eventually("peer unreachable", WAIT, || async {
        (peer_view(&a, &peer).await["health"] == "unreachable").then_some(())
    })
    .await;

    // It comes back refusing the poison for good (400): the probe settles that row as the
    // message's failure and moves on, so everything else flows.
    let sink = Sink::on(port, |id| if id.contains("poison") { 400 } else { 200 }).await;
    let poison = async {
        for i in 1..=3 {
            let (s, _) = a
                .hook(
                    "stripe",
                    &stripe_event(&format!("evt_poison_{i}"), "charge.succeeded"),
                )
                .await;
            assert_eq!(s, 202);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (during, ()) = tokio::join!(legit(&a, "during", 30), poison);
    sink.assert_once(&early).await;
    sink.assert_once(&during).await;

    // Every poison row spent its attempts and is dead; the peer was never parked for them.
    let rows = eventually("poison rows dead", WAIT, || async {
        let rows: Vec<Value> = a
            .outbox(&format!("peer_id={peer}"))
            .await
            .into_iter()
            .filter(|r| r["event_id"].as_str().unwrap_or("").contains("poison"))
            .collect();
        (rows.len() == 4 && rows.iter().all(|r| r["status"] == "dead")).then_some(rows)
    })
    .await;
    for r in rows {
        assert_eq!(r["attempts"], a.max_attempts, "{r}");
        assert_eq!(r["last_status_code"], 400, "{r}");
    }
    let p = peer_view(&a, &peer).await;
    assert_eq!(
        (p["status"].as_str(), p["health"].as_str()),
        (Some("active"), Some("active")),
        "{p}"
    );

    // 410 Gone pauses the peer and says why; what was not delivered waits, unspent.
    let gone_sink = Sink::start(|id| if id.contains("gone") { 410 } else { 200 }).await;
    let gone_peer = add_peer(
        &a,
        "c",
        &format!("{}/hooks/default/kite", gone_sink.url),
        "kfed_y",
        &["com.stripe.customer.*"],
        3,
    )
    .await;
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_gone_1", "customer.deleted"))
        .await;
    assert_eq!(s, 202);
    let p = eventually("peer paused by 410", WAIT, || async {
        let p = peer_view(&a, &gone_peer).await;
        (p["status"] == "paused").then_some(p)
    })
    .await;
    assert!(
        p["last_error"].as_str().unwrap_or("").contains("410"),
        "{p}"
    );
    let row = a
        .outbox(&format!("peer_id={gone_peer}"))
        .await
        .pop()
        .expect("row");
    assert_eq!(
        (row["status"].as_str(), row["attempts"].as_i64()),
        (Some("pending"), Some(0)),
        "{row}"
    );
    // The first peer is untouched.
    let more = legit(&a, "after", 5).await;
    sink.assert_once(&more).await;
}

#[tokio::test]
async fn ingress_refuses_what_can_never_be_forwarded() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    let attack = async {
        let mut answers = Vec::new();
        // A CloudEvent id with a newline cannot be sent as a header.
        let nl = br#"{"specversion":"1.0","id":"a\nb","source":"/s","type":"t"}"#.to_vec();
        answers.push((
            "newline id",
            raw(&a, "/hooks/default/acme", nl, &[ce_json()]).await,
            400,
            "invalid_attribute",
        ));
        let ctl = br#"{"specversion":"1.0","id":"x","source":"/s","type":"t\u0001"}"#.to_vec();
        answers.push((
            "control type",
            raw(&a, "/hooks/default/acme", ctl, &[ce_json()]).await,
            400,
            "invalid_attribute",
        ));
        // 127 levels deep.
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes();
        answers.push((
            "deep body",
            raw(&a, "/hooks/default/acme", deep, &[]).await,
            400,
            "too_deep",
        ));
        // Under the raw body limit, but over it once wrapped and forwarded.
        let big =
            format!(r#"{{"type":"x","k":"{}"}}"#, "y".repeat(256 * 1024 - 3_000)).into_bytes();
        answers.push((
            "near-limit body",
            raw(&a, "/hooks/default/acme", big, &[]).await,
            413,
            "payload_too_large",
        ));
        let quotes = "\"".repeat(140 * 1024).into_bytes();
        answers.push((
            "form body that doubles when escaped",
            raw(
                &a,
                "/hooks/default/slack",
                quotes,
                &[("content-type", "text/plain".into())],
            )
            .await,
            413,
            "payload_too_large",
        ));
        answers
    };
    let (ids, answers) = tokio::join!(legit(&a, "ok", 30), attack);
    for (what, (s, v), want_s, want_c) in answers {
        assert_eq!((s, code(&v)), (want_s, want_c), "{what}: {v}");
    }
    // A big event that fits as forwarded is accepted and reaches B whole.
    let fits = format!(
        r#"{{"id":"evt_big","type":"x","k":"{}"}}"#,
        "y".repeat(200 * 1024)
    );
    let (s, v) = raw(&a, "/hooks/default/stripe", fits.into_bytes(), &[]).await;
    assert_eq!(s, 202, "{v}");
    let mut all = ids;
    all.push("evt_big".into());
    assert_all_once(&b, &all, WAIT).await;
    let db = a.db().await;
    let refused: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE hook_source IN ('acme', 'slack')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(refused, 0, "nothing refused was stored");
}

async fn ws_open(
    inst: &Instance,
    key: &str,
    client_id: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws", inst.url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let hello =
        json!({"type":"connect","version":1,"token":key,"scopes":["*"],"client_id":client_id});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("send");
    ws
}

/// The next text frame, or None once the connection is closed.
async fn frame(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time");
        match m {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("json")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the server closes the connection; any frame before that is an error.
async fn refused(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) {
    while let Some(f) = frame(ws).await {
        assert_eq!(f["type"], "error", "{f}");
    }
}

#[tokio::test]
async fn no_stored_row_can_crash_a_reader() {
    let a = Instance::start("instance-a").await;
    let mut ws = ws_open(&a, &a.key, Some("reader")).await;
    assert_eq!(
        frame(&mut ws).await.expect("connected")["type"],
        "connected"
    );

    // The deepest accepted body, and a deeper one.
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let (s, v) = raw(&a, "/hooks/default/deep", ok.into_bytes(), &[]).await;
    assert_eq!(s, 202, "{v}");
    let too = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let (s, v) = raw(&a, "/hooks/default/deep", too.into_bytes(), &[]).await;
    assert_eq!((s, code(&v)), (400, "too_deep"));
    assert_eq!(v["error"]["max_depth"], 64);

    // A row no reader can decode (written behind kite's back), between two good events.
    a.hook("stripe", &stripe_event("evt_before", "x")).await;
    a.db()
        .await
        .execute(
            "INSERT INTO events (team_id, ce_source, ce_id, hook_source, ce_type, event, routed_at)
             VALUES ('default', '/x', 'broken', 'x', 'com.x', '[\"not an object\"]'::json, now())",
            &[],
        )
        .await
        .expect("insert broken row");
    a.hook("stripe", &stripe_event("evt_after", "x")).await;

    // The stream moves past it.
    let mut got = Vec::new();
    while got.len() < 3 {
        let f = frame(&mut ws).await.expect("stream still open");
        if f["type"] == "event" {
            ws.send(Message::Text(
                json!({"type":"ack","seq":f["seq"]}).to_string().into(),
            ))
            .await
            .expect("ack");
            got.push(f["event"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(got[1..], ["evt_before", "evt_after"]);
    // So do event listings, page after page.
    let (s, v) = a.get("/api/events?limit=2").await;
    assert_eq!(s, 200, "{v}");
    let (s, v2) = a
        .get(&format!("/api/events?limit=10&after={}", v["next_cursor"]))
        .await;
    assert_eq!(s, 200, "{v2}");
    let listed: Vec<&str> = v["items"]
        .as_array()
        .into_iter()
        .chain(v2["items"].as_array())
        .flatten()
        .map(|e| e["event"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.contains(&"broken"));
    // A named listener that comes back resumes past it too.
    drop(ws);
    let mut again = ws_open(&a, &a.key, Some("reader")).await;
    assert_eq!(
        frame(&mut again).await.expect("connected")["type"],
        "connected"
    );
    a.hook("stripe", &stripe_event("evt_later", "x")).await;
    let f = loop {
        let f = frame(&mut again).await.expect("open");
        if f["type"] == "event" {
            break f;
        }
    };
    assert_eq!(f["event"]["id"], "evt_later");
}

#[tokio::test]
async fn an_unauthenticated_post_cannot_claim_another_identity() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    for (name, scheme, secret, hdr) in [
        ("stripe", "stripe", "whsec_s", None),
        ("gh", "github", "gh-secret", None),
        (
            "orders",
            "hmac-sha256",
            "h-secret",
            Some("x-orders-signature"),
        ),
    ] {
        let (s, v) = a
            .post(
                "/api/sources",
                json!({"name":name,"scheme":scheme,"secret":secret,"header":hdr}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    eventually("sources cached", WAIT, || async {
        let (s, _) = raw(&a, "/hooks/default/orders", b"{}".to_vec(), &[]).await;
        (s == 401).then_some(())
    })
    .await;

    let attack = async {
        // Federation extensions on a plain hook.
        let fed = json!({"specversion":"1.0","id":"evt_1","source":"/hooks/default/stripe","type":"com.stripe.charge.succeeded","kitefedorigin":"instance-z"});
        let (s, v) = raw(
            &a,
            "/hooks/default/acme",
            fed.to_string().into_bytes(),
            &[ce_json()],
        )
        .await;
        assert_eq!((s, code(&v)), (400, "reserved_extension"));
        // The same identity, claimed without extensions: stored under the hook it used.
        let claim = json!({"specversion":"1.0","id":"evt_1","source":"/hooks/default/stripe","type":"com.stripe.charge.succeeded"});
        let (s, v) = raw(
            &a,
            "/hooks/default/acme",
            claim.to_string().into_bytes(),
            &[ce_json()],
        )
        .await;
        assert_eq!(s, 202, "{v}");
        let binary = [
            ("ce-specversion", "1.0".to_string()),
            ("ce-id", "evt_1".to_string()),
            ("ce-source", "/hooks/default/stripe".to_string()),
            ("ce-type", "com.stripe.charge.succeeded".to_string()),
            ("content-type", "application/json".to_string()),
        ];
        let (s, v) = raw(&a, "/hooks/default/acme2", b"{}".to_vec(), &binary).await;
        assert_eq!(s, 202, "{v}");
    };
    let (ids, ()) = tokio::join!(legit_signed(&a, "ok", 20), attack);

    // The genuine, signed Stripe event with that id is new, not a duplicate.
    let body = serde_json::to_vec(&stripe_event("evt_1", "charge.succeeded")).expect("json");
    let t = chrono::Utc::now().timestamp();
    let sig = hmac_hex(b"whsec_s", &[t.to_string().as_bytes(), b".", &body]);
    let (s, v) = raw(
        &a,
        "/hooks/default/stripe",
        body,
        &[("stripe-signature", format!("t={t},v1={sig}"))],
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (202, Some("accepted")), "{v}");

    let db = a.db().await;
    let rows = db
        .query(
            "SELECT hook_source, ce_source, event->>'kiteclaimedsource' FROM events WHERE ce_id = 'evt_1' ORDER BY seq",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "acme".into(),
                "/hooks/default/acme".into(),
                Some("/hooks/default/stripe".into())
            ),
            (
                "acme2".into(),
                "/hooks/default/acme2".into(),
                Some("/hooks/default/stripe".into())
            ),
            ("stripe".into(), "/hooks/default/stripe".into(), None),
        ]
    );
    // What B got from A names the hook each came through.
    let mut all = ids.clone();
    all.push("evt_1".into());
    eventually("three evt_1 at B", WAIT, || async {
        (b.count_events("evt_1").await == 3).then_some(())
    })
    .await;
    assert_all_once(&b, &ids, WAIT).await;

    // Unsigned ce-* headers cannot choose a signed event's identity, and an exact replay of
    // a captured signed delivery is a duplicate, whatever the source is called.
    let push = br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/app"}}"#.to_vec();
    let gh_sig = format!("sha256={}", hmac_hex(b"gh-secret", &[&push]));
    let gh = vec![
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", "gh-d-1".to_string()),
        ("x-hub-signature-256", gh_sig),
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", "chosen".to_string()),
        ("ce-type", "com.chosen".to_string()),
        ("ce-source", "/chosen".to_string()),
    ];
    let (s, v) = raw(&a, "/hooks/default/gh", push.clone(), &gh).await;
    assert_eq!((s, v["id"].as_str()), (202, Some("gh-d-1")), "{v}");
    let (s, v) = raw(&a, "/hooks/default/gh", push, &gh).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );
    let ty: String = db
        .query_one("SELECT ce_type FROM events WHERE ce_id = 'gh-d-1'", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(ty, "com.gh.push");
    let order = br#"{"order":42}"#.to_vec();
    let o_sig = vec![("x-orders-signature", hmac_hex(b"h-secret", &[&order]))];
    let (s, v) = raw(&a, "/hooks/default/orders", order.clone(), &o_sig).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = raw(&a, "/hooks/default/orders", order, &o_sig).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("duplicate_ignored")),
        "{v}"
    );
}

/// Legitimate signed Stripe events (source `stripe` signed with `whsec_s`).
async fn legit_signed(inst: &Instance, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("evt_{prefix}_{i}");
        let body = serde_json::to_vec(&stripe_event(&id, "charge.succeeded")).expect("json");
        let t = chrono::Utc::now().timestamp();
        let sig = hmac_hex(b"whsec_s", &[t.to_string().as_bytes(), b".", &body]);
        let (s, v) = raw(
            inst,
            "/hooks/default/stripe",
            body,
            &[("stripe-signature", format!("t={t},v1={sig}"))],
        )
        .await;
        assert_eq!(s, 202, "legitimate {id}: {v}");
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ids
}

#[tokio::test]
async fn one_bad_request_never_fails_another() {
    let b = Instance::start("instance-b").await;
    let a = Instance::start("instance-a").await;
    peer(&a, &b, &["*"], 3).await;
    // A row the database refuses (here a constraint made for the test): it shares group
    // commits with legitimate events under load.
    a.db()
        .await
        .batch_execute("ALTER TABLE events ADD CONSTRAINT test_refuses_poison CHECK (ce_id NOT LIKE 'evt_poison%')")
        .await
        .expect("constraint");
    let nul =
        |i: usize| format!(r#"{{"id":"evt_nul_{i}","type":"x","note":"a\u0000b"}}"#).into_bytes();
    let results = futures::future::join_all((0..200).map(|i| {
        let a = &a;
        async move {
            match i % 10 {
                0 => (
                    "poison",
                    raw(
                        a,
                        "/hooks/default/stripe",
                        serde_json::to_vec(&stripe_event(&format!("evt_poison_{i}"), "x"))
                            .expect("json"),
                        &[],
                    )
                    .await,
                    format!("evt_poison_{i}"),
                ),
                5 => (
                    "nul",
                    raw(a, "/hooks/default/stripe", nul(i), &[]).await,
                    format!("evt_nul_{i}"),
                ),
                _ => (
                    "ok",
                    raw(
                        a,
                        "/hooks/default/stripe",
                        serde_json::to_vec(&stripe_event(&format!("evt_ok_{i}"), "x"))
                            .expect("json"),
                        &[],
                    )
                    .await,
                    format!("evt_ok_{i}"),
                ),
            }
        }
    }))
    .await;
    let mut delivered = Vec::new();
    for (kind, (s, v), id) in results {
        match kind {
            "poison" => assert_eq!((s, code(&v)), (400, "unstorable_event"), "{id}: {v}"),
            _ => {
                assert_eq!(s, 202, "{id}: {v}");
                delivered.push(id);
            }
        }
    }
    assert_all_once(&b, &delivered, WAIT).await;
    // The NUL travelled intact.
    let note: String = b
        .db()
        .await
        .query_one(
            "SELECT event::text FROM events WHERE ce_id = 'evt_nul_5'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    let event: Value = serde_json::from_str(&note).expect("stored JSON");
    assert_eq!(event["data"]["note"], "a\u{0}b");
}

#[tokio::test]
async fn the_stream_is_bounded_before_and_after_authentication() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_STREAM_MAX_PER_KEY", "2"),
            ("KITE_STREAM_MAX_CONNECTIONS", "4"),
        ],
    )
    .await;
    let url = format!("{}/ws", a.url.replace("http://", "ws://"));
    // An oversized first frame is refused before it is buffered.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let huge = "x".repeat(1024 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    refused(&mut ws).await;
    // A connection that never says connect is closed within the connect deadline.
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.expect("ws");
    let started = std::time::Instant::now();
    let f = frame(&mut silent).await;
    assert!(
        f.is_none() || f.as_ref().is_some_and(|f| f["code"] == 4002),
        "{f:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // After authentication, frames are bounded too.
    let mut ok = ws_open(&a, &a.key, None).await;
    assert_eq!(
        frame(&mut ok).await.expect("connected")["type"],
        "connected"
    );
    let _ = ok.send(Message::Text("y".repeat(200 * 1024).into())).await;
    assert!(
        frame(&mut ok).await.is_none(),
        "closed after an oversized frame"
    );

    // A client id that could not be stored is refused at connect.
    let mut nul = ws_open(&a, &a.key, Some("a\u{0}b")).await;
    let f = frame(&mut nul).await.expect("error frame");
    assert_eq!(f["code"], 4002, "{f}");

    // A read key takes at most its own share of the team's slots.
    let (s, k) = a
        .post("/api/keys", json!({"label":"reader","permission":"read"}))
        .await;
    assert_eq!(s, 201, "{k}");
    let read_key = k["key"].as_str().expect("key").to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut w = ws_open(&a, &read_key, None).await;
        assert_eq!(frame(&mut w).await.expect("connected")["type"], "connected");
        held.push(w);
    }
    let mut third = ws_open(&a, &read_key, None).await;
    let f = frame(&mut third).await.expect("error frame");
    assert_eq!(f["code"], 4003, "{f}");
    // The team's other keys still get in, and see events.
    let mut admin = ws_open(&a, &a.key, None).await;
    assert_eq!(
        frame(&mut admin).await.expect("connected")["type"],
        "connected"
    );
    a.hook("stripe", &stripe_event("evt_ws_ok", "x")).await;
    let f = loop {
        let f = frame(&mut admin).await.expect("open");
        if f["type"] == "event" {
            break f;
        }
    };
    assert_eq!(f["event"]["id"], "evt_ws_ok");
}

/// Opens `n` connections that each send half a request and stop.
async fn half_sent(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"POST /hooks/default/stripe HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .expect("write");
        out.push(c);
    }
    out
}

/// True once the server closed the connection (a read sees EOF or a reset).
async fn closed(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn http_connections_are_bounded_before_authentication() {
    // This test holds thousands of sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_HEADER_TIMEOUT_MS", "1500"),
            ("KITE_IDLE_TIMEOUT_MS", "3000"),
            ("KITE_MAX_CONNECTIONS", "3000"),
        ],
    )
    .await;
    let b = Instance::start("instance-b").await;
    peer(&a, &b, &["*"], 3).await;
    let addr = a.url.trim_start_matches("http://").to_string();
    // Thousands of half-sent requests: /health and webhooks keep answering.
    let mut slow = half_sent(&addr, 2000).await;
    let (s, _) = health(&a).await;
    assert_eq!(s, 200);
    let ids = legit(&a, "during", 20).await;
    // Then each is closed once its headers are overdue.
    for c in slow.iter_mut().step_by(97) {
        assert!(
            closed(c, Duration::from_secs(15)).await,
            "a half-sent request was closed"
        );
    }
    drop(slow);
    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed(&mut idle, Duration::from_secs(15)).await,
        "idle connection closed"
    );
    assert_all_once(&b, &ids, WAIT).await;

    // The connection cap: past it, new connections are closed at once, and they come back
    // when connections go away.
    let c = Instance::start_with("instance-c", &[("KITE_MAX_CONNECTIONS", "50")]).await;
    let caddr = c.url.trim_start_matches("http://").to_string();
    let held = half_sent(&caddr, 50).await;
    let mut over = tokio::net::TcpStream::connect(&caddr)
        .await
        .expect("connect");
    let _ = over
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed(&mut over, Duration::from_secs(5)).await,
        "over the cap: closed"
    );
    drop(held);
    eventually("health after the cap frees", WAIT, || async {
        let r = reqwest::Client::new()
            .get(format!("{}/health", c.url))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn junk_cannot_spend_a_senders_or_a_teams_rate() {
    let limits = [
        ("KITE_RATE_TEAM_PER_SEC", "5"),
        ("KITE_RATE_TEAM_BURST", "10"),
        ("KITE_RATE_SENDER_PER_SEC", "5"),
        ("KITE_RATE_SENDER_BURST", "10"),
        ("KITE_RATE_UNAUTHENTICATED_PER_SEC", "1"),
        ("KITE_RATE_UNAUTHENTICATED_BURST", "5"),
    ];
    let b = Instance::start_with("instance-b", &limits).await;
    let (s, v) = b
        .post(
            "/api/sources",
            json!({"name":"stripe","scheme":"stripe","secret":"whsec_s"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, t) = b.post("/api/federation/tokens", json!({"label":"a"})).await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().expect("token").to_string();
    let (s, snd) = b
        .post(
            "/api/federation/trusted-senders",
            json!({"name":"instance-a","inbound_token": token, "key_id": "a-key"}),
        )
        .await;
    assert_eq!(s, 201, "{snd}");
    eventually("source cached", WAIT, || async {
        let (s, _) = raw(&b, "/hooks/default/stripe", b"{}".to_vec(), &[]).await;
        (s == 401).then_some(())
    })
    .await;
    // Junk: badly signed Stripe events and federation posts naming the sender's key id.
    let mut junk = Vec::new();
    for i in 0..60 {
        let body = serde_json::to_vec(&stripe_event(&format!("evt_junk_{i}"), "x")).expect("json");
        junk.push(
            raw(
                &b,
                "/hooks/default/stripe",
                body,
                &[("stripe-signature", "t=1,v1=00".into())],
            )
            .await
            .0,
        );
        let ce = json!({"specversion":"1.0","id":format!("j{i}"),"source":"/s","type":"t"})
            .to_string()
            .into_bytes();
        junk.push(
            raw(
                &b,
                "/hooks/default/kite",
                ce,
                &[
                    ce_json(),
                    ("x-kite-key-id", "a-key".into()),
                    ("webhook-id", format!("j{i}")),
                    ("webhook-timestamp", "1".into()),
                    ("webhook-signature", "v1,AAAA".into()),
                ],
            )
            .await
            .0,
        );
    }
    assert!(junk.iter().all(|s| *s == 401 || *s == 429), "{junk:?}");
    assert!(
        junk.contains(&429),
        "junk is limited by its own bucket: {junk:?}"
    );
    // Genuine traffic right after is untouched.
    let ids = legit_signed(&b, "genuine", 8).await;
    for id in &ids {
        assert_eq!(b.count_events(id).await, 1);
    }
    for i in 0..8 {
        let id = format!("fed_genuine_{i}");
        let body = json!({"specversion":"1.0","id":id,"source":"/hooks/default/stripe","type":"com.stripe.x"}).to_string().into_bytes();
        let ts = chrono::Utc::now().timestamp();
        let sig = kite_protocol::provider::sign_standard(&[&token], &id, ts, &body);
        let (s, v) = raw(
            &b,
            "/hooks/default/kite",
            body,
            &[
                ce_json(),
                ("x-kite-key-id", "a-key".into()),
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sig),
            ],
        )
        .await;
        assert_eq!(s, 202, "{id}: {v}");
    }
}

#[tokio::test]
async fn credentials_are_never_stored_or_forwarded() {
    let sink = Sink::start(|_| 200).await;
    let a = Instance::start_with("instance-a", &[("RUST_LOG", "debug")]).await;
    add_peer(
        &a,
        "b",
        &format!("{}/hooks/default/kite", sink.url),
        "kfed_z",
        &["*"],
        3,
    )
    .await;
    let secrets = [
        ("x-gitlab-token", "glsecret-1"),
        ("x-api-token", "apisecret-2"),
        ("authorization", "Bearer bearersecret-3"),
        ("cookie", "session=cookiesecret-4"),
        ("x-hub-signature-256", "sha256=sigsecret-5"),
        ("stripe-signature", "t=1,v1=sigsecret-6"),
        ("x-custom-auth", "customsecret-7"),
    ];
    let headers: Vec<(&str, &str)> = secrets
        .iter()
        .copied()
        .chain([("x-gitlab-event", "Push Hook"), ("user-agent", "GitLab/17")])
        .collect();
    let gitlab = json!({"object_kind":"push","id":"gl-1"});
    let (ids, (s, v)) = tokio::join!(
        legit(&a, "ok", 10),
        a.hook_with("gitlab", &gitlab, &headers)
    );
    assert_eq!(s, 202, "{v}");
    let mut all = ids;
    all.push(v["id"].as_str().expect("id").to_string());
    sink.assert_once(&all).await;
    let (_, list) = a.get("/api/events?limit=1000").await;
    let stored = list.to_string();
    let dump = tokio::process::Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--data-only",
            &a.db_name,
        ])
        .output()
        .await
        .expect("pg_dump");
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    let forwarded = format!("{:?}", sink.seen.lock().expect("lock").requests);
    let logs = a.logs.lock().expect("logs").join("\n");
    for (_, secret) in secrets {
        let needle = secret.rsplit([' ', '=']).next().unwrap_or(secret);
        for (place, text) in [
            ("listing", &stored),
            ("database", &dump),
            ("forwarded copy", &forwarded),
            ("log", &logs),
        ] {
            assert!(!text.contains(needle), "{needle} found in the {place}");
        }
    }
    // What is worth keeping is kept.
    assert!(
        stored.contains("Push Hook") && stored.contains("GitLab/17"),
        "{stored}"
    );
}

#[tokio::test]
async fn ssrf_guard_refuses_every_ipv6_spelling_of_a_private_address() {
    let a = Instance::start_with("instance-a", &[("KITE_ALLOW_PRIVATE_PEERS", "false")]).await;
    let (ids, ()) = tokio::join!(legit(&a, "ok", 10), async {
        for host in [
            "[::127.0.0.1]",
            "[::ffff:0:7f00:1]",
            "[2002:7f00:1::1]",
            "[64:ff9b::a00:1]",
            "[fec0::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::]",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
            "[64:ff9b:1::a00:1]",
        ] {
            let url = format!("http://{host}:8080/hooks/default/kite");
            let (s, v) = a
                .post(
                    "/api/federation/peers",
                    json!({"name":"p","peer_hook_url":url,"outbound_token":"t"}),
                )
                .await;
            assert_eq!((s, code(&v)), (400, "forbidden_destination"), "{url}: {v}");
        }
    });
    assert_eq!(ids.len(), 10);
    // At connect time too: a row written behind the API's back with a mapped loopback
    // address (if the guard failed, the request would stay on loopback).
    let sink = Sink::start(|_| 200).await;
    let port = sink.url.rsplit(':').next().expect("port").to_string();
    a.db()
        .await
        .execute(
            "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status)
             VALUES (gen_random_uuid(), 'default', 'mapped', $1, 'kfed_x', ARRAY['*'], 3, 'active')",
            &[&format!("http://[::ffff:7f00:1]:{port}/hooks/default/kite")],
        )
        .await
        .expect("insert");
    a.hook("stripe", &stripe_event("evt_v6", "x")).await;
    let row = eventually("an attempt refused", WAIT, || async {
        a.outbox("")
            .await
            .into_iter()
            .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    assert!(
        row["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("forbidden destination"),
        "{row}"
    );
    assert!(sink.seen.lock().expect("lock").requests.is_empty());
}
