//! The event stream (`/ws`) and `kite listen`, as a developer uses them.

use crate::common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn listen_filters_by_source_and_type_and_prints_readable_lines() {
    let a = Instance::start("instance-a").await;
    let mut gh = Listen::start(&a, &["--source", "github", "--json"]).await;
    let mut stripe = Listen::start(&a, &["--type", "stripe.payment_*", "--json"]).await;
    let mut human = Listen::start(&a, &[]).await;

    a.hook("stripe", &stripe_event("evt_f_1", "charge.succeeded"))
        .await;
    github_push(&a, "gh-f-1").await;
    a.hook(
        "stripe",
        &stripe_event("evt_f_2", "payment_intent.succeeded"),
    )
    .await;
    a.hook("acme", &json!({"type":"thing"})).await;
    github_push(&a, "gh-f-2").await;

    assert_eq!(gh.json().await["id"], "gh-f-1");
    assert_eq!(gh.json().await["id"], "gh-f-2");
    assert_eq!(stripe.json().await["id"], "evt_f_2");
    // Only matching events were printed: the next stripe line is the next matching event.
    a.hook(
        "stripe",
        &stripe_event("evt_f_3", "payment_method.attached"),
    )
    .await;
    assert_eq!(stripe.json().await["id"], "evt_f_3");
    let first = human.line().await;
    assert!(
        first.contains("seq=")
            && first.contains("com.stripe.charge.succeeded")
            && first.contains("id=evt_f_1"),
        "{first}"
    );
}

#[tokio::test]
async fn reconnecting_with_a_client_id_gets_every_missed_event_once_in_order() {
    let a = Instance::process_with("instance-a", &[]).await;
    let mut l = Listen::start(&a, &["--client-id", "laptop", "--json"]).await;
    for i in 0..3 {
        a.hook(
            "stripe",
            &stripe_event(&format!("evt_pre_{i}"), "charge.succeeded"),
        )
        .await;
    }
    let mut last = 0;
    for i in 0..3 {
        let ev = l.json().await;
        assert_eq!(ev["id"], format!("evt_pre_{i}"));
        last = ev["kiteseq"].as_i64().expect("kiteseq");
    }
    // The client acked them; the server saves a cursor every 250 ms. Once it is saved, a
    // reconnect starts after it (before, the unsaved ones come again: at least once).
    eventually("the cursor saved", Duration::from_secs(10), || async {
        let row = a
            .db()
            .await
            .query_opt(
                "SELECT acked_seq FROM stream_cursors WHERE client_id = 'laptop'",
                &[],
            )
            .await
            .ok()
            .flatten();
        row.filter(|r| r.get::<_, i64>(0) >= last).map(|_| ())
    })
    .await;
    let _ = l.child.kill().await;
    let _ = l.child.wait().await;

    let missed: Vec<String> = (0..100).map(|i| format!("evt_missed_{i:03}")).collect();
    for id in &missed {
        assert_eq!(
            a.hook("stripe", &stripe_event(id, "charge.succeeded"))
                .await
                .0,
            202
        );
    }
    let mut l = Listen::start(&a, &["--client-id", "laptop", "--json"]).await;
    let mut seqs = Vec::new();
    for id in &missed {
        let ev = l.json().await;
        assert_eq!(&ev["id"], id, "in order, none acked before repeated");
        seqs.push(ev["kiteseq"].as_i64().expect("kiteseq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order");
    // Then live events, with no repeat in between.
    a.hook("stripe", &stripe_event("evt_live", "charge.succeeded"))
        .await;
    assert_eq!(l.json().await["id"], "evt_live");
}

#[tokio::test]
async fn an_event_ingested_by_one_process_reaches_a_listener_on_another() {
    let a = Instance::process_with("instance-a", &[]).await;
    let other = Proc::start(&a, "ingress").await;
    let other_url = other.url.clone().expect("second ingress url");
    let mut l = Listen::start(&a, &["--json"]).await;
    let r = a
        .http
        .post(format!("{other_url}/hooks/default/stripe"))
        .json(&stripe_event("evt_xproc", "charge.succeeded"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(l.json().await["id"], "evt_xproc");
}

/// A local endpoint that fails its first `fail` requests with 500, recording every request.
async fn flaky_sink(
    fail: usize,
) -> (
    String,
    Arc<Mutex<Vec<(u16, String, Vec<(String, String)>)>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), count.clone());
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail { 500 } else { 200 };
                let hs = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                s.lock().expect("lock").push((status, body, hs));
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn forward_to_retries_until_the_local_endpoint_succeeds() {
    let a = Instance::start("instance-a").await;
    let (url, seen) = flaky_sink(2).await;
    let _l = Listen::start(&a, &["--forward-to", &url]).await;
    a.hook("stripe", &stripe_event("evt_fwd", "charge.succeeded"))
        .await;
    eventually("three attempts, the last one 200", WAIT, || async {
        let s = seen.lock().expect("lock");
        (s.len() == 3 && s[2].0 == 200).then_some(())
    })
    .await;
    let s = seen.lock().expect("lock").clone();
    let bodies: Vec<Value> = s
        .iter()
        .map(|(_, b, _)| serde_json::from_str(b).expect("json"))
        .collect();
    assert!(bodies
        .iter()
        .all(|b| b["id"] == "evt_fwd" && b["type"] == "com.stripe.charge.succeeded"));
    assert!(s[0]
        .2
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/cloudevents+json"));
}

#[tokio::test]
async fn forward_to_raw_sends_data_with_kept_headers_and_no_credentials() {
    let a = Instance::start("instance-a").await;
    let (url, seen) = flaky_sink(0).await;
    let _l = Listen::start(&a, &["--forward-to", &url, "--raw"]).await;
    let body = stripe_event("evt_raw", "charge.succeeded");
    a.hook_with(
        "stripe",
        &body,
        &[
            ("stripe-signature", "t=1,v1=abc"),
            ("authorization", "Bearer secret-x"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    eventually("raw forward", WAIT, || async {
        (!seen.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    let (status, got, headers) = seen.lock().expect("lock")[0].clone();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&got).expect("json"), body);
    // Only the kept headers travel: never credentials or signatures.
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    // The provider's signature is made anew with the local secret, never replayed.
    assert!(headers
        .iter()
        .any(|(k, v)| k == "stripe-signature" && v != "t=1,v1=abc"));
    assert!(!headers.iter().any(|(k, _)| k == "authorization"));
    // The event's trace context goes to the app as a header: the webhook's trace, continued
    // by the span that took it in (the context the stored event carries).
    let stored = a.event("evt_raw").await.expect("event")["event"]["traceparent"].clone();
    let sent = headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("a traceparent header");
    assert_eq!(stored, sent.as_str());
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
}

#[tokio::test]
async fn socket_serves_ndjson_to_local_readers() {
    use tokio::net::UnixStream;
    let a = Instance::start("instance-a").await;
    let dir = std::env::temp_dir().join(format!("kite-sock-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("listen.sock");
    let _l = Listen::start(&a, &["--socket", path.to_str().expect("path")]).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("socket exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let stream = UnixStream::connect(&path).await.expect("connect socket");
    let mut lines = BufReader::new(stream).lines();
    a.hook("stripe", &stripe_event("evt_sock", "charge.succeeded"))
        .await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("in time")
        .expect("read")
        .expect("line");
    let v: Value = serde_json::from_str(&line).expect("ndjson");
    assert_eq!(v["id"], "evt_sock");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_key_exits_with_code_2() {
    let a = Instance::start("instance-a").await;
    let out = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "listen",
            "--instance",
            &a.url,
            "--api-key",
            "kite_00000000_00000000000000000000000000000000",
        ])
        .env("HOME", "/nonexistent")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));
}

#[tokio::test]
async fn listen_reads_instance_and_key_from_the_config_file() {
    let a = Instance::process_with("instance-a", &[]).await;
    let dir = std::env::temp_dir().join(format!("kite-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join(".config/kite")).expect("dir");
    std::fs::write(
        dir.join(".config/kite/config.toml"),
        format!("instance = \"{}\"\napi_key = \"{}\"\n", a.url, a.key),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["listen", "--json"])
        .env("HOME", &dir)
        .env_remove("KITE_API_KEY")
        .env_remove("KITE_INSTANCE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Keep sending until the listener (connecting in the background) prints one.
    let line = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        loop {
            a.hook(
                "stripe",
                &stripe_event(&format!("evt_cfg_{n}"), "charge.succeeded"),
            )
            .await;
            n += 1;
            if let Ok(Ok(Some(l))) =
                tokio::time::timeout(Duration::from_millis(500), out.next_line()).await
            {
                return l;
            }
        }
    })
    .await
    .expect("a line");
    assert!(line.contains("evt_cfg_"));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn ws_connect(
    inst: &Instance,
    client_id: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws", inst.url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let hello = json!({"type":"connect","version":1,"token":inst.key,"team_id":"default","scopes":["*"],"client_id":client_id});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("send");
    ws
}

async fn next_frame(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).expect("json frame");
        }
    }
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_and_unknown_frames_are_ignored() {
    let a = Instance::process_with("instance-a", &[("KITE_STREAM_STALL_MS", "500")]).await;
    let mut ws = ws_connect(&a, None).await;
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    ws.send(Message::Text(
        json!({"type":"ping","x":1}).to_string().into(),
    ))
    .await
    .expect("send");
    // It stops reading; big events fill the socket until kite cannot send for the stall
    // time: backpressure, not missing acks, makes it a slow consumer.
    let filler = "x".repeat(32 * 1024);
    let ids: Vec<String> = (0..800).map(|i| format!("evt_slow_{i}")).collect();
    let posts = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let body = json!({"id": id, "type": "charge.succeeded", "filler": filler});
            let a = &a;
            async move { a.hook("acme", &body).await.0 }
        })
        .buffer_unordered(16)
        .collect::<Vec<u16>>();
    let cut = eventually("kite cut the slow consumer off", WAIT, || async {
        a.logs
            .lock()
            .map(|l| l.iter().any(|x| x.contains("slow consumer")))
            .unwrap_or(false)
            .then_some(())
    });
    let (statuses, ()) = tokio::join!(posts, cut);
    assert!(statuses.iter().all(|s| *s == 202));
    // What it had buffered it can still read; then the connection is over.
    let mut events = 0;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).expect("json");
                if f["type"] == "event" {
                    events += 1;
                }
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    assert!(events < ids.len(), "cut off before the end ({events})");
}

#[tokio::test]
async fn too_many_connections_get_4003_and_a_bad_first_frame_4002() {
    let a = Instance::start_with("instance-a", &[("KITE_STREAM_MAX_CONNECTIONS", "1")]).await;
    let mut first = ws_connect(&a, None).await;
    assert_eq!(next_frame(&mut first).await["type"], "connected");
    let mut second = ws_connect(&a, None).await;
    let f = next_frame(&mut second).await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_i64()),
        (Some("error"), Some(4003)),
        "{f}"
    );
    drop(first);
    let url = format!("{}/ws", a.url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws.send(Message::Text("hello".into())).await.expect("send");
    let f = next_frame(&mut ws).await;
    assert_eq!(f["code"], 4002, "{f}");
}

#[tokio::test]
async fn a_cursor_older_than_retention_gets_cursor_expired() {
    let a = Instance::start_with(
        "instance-a",
        &[
            ("KITE_RETENTION_SECS", "2"),
            ("KITE_SWEEP_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let mut ws = ws_connect(&a, Some("old-laptop")).await;
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    drop(ws);
    for i in 0..3 {
        a.hook(
            "stripe",
            &stripe_event(&format!("evt_old_{i}"), "charge.succeeded"),
        )
        .await;
    }
    eventually("events pruned", WAIT, || async {
        (a.total_events().await == 0).then_some(())
    })
    .await;
    let (_, v) = a
        .hook("stripe", &stripe_event("evt_new", "charge.succeeded"))
        .await;
    let new_seq = v["seq"].as_i64().expect("seq");
    let mut ws = ws_connect(&a, Some("old-laptop")).await;
    let f = next_frame(&mut ws).await;
    assert_eq!(f["type"], "cursor_expired", "{f}");
    assert_eq!(f["oldest_available_seq"], new_seq);
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    let ev = next_frame(&mut ws).await;
    assert_eq!(ev["event"]["id"], "evt_new");
}

/// The channels a connection of the test's own heard, LISTENing as kite's processes do,
/// up to a marker the test notifies after each step (notifications arrive in commit order,
/// so whatever a step's commit notified comes before the marker).
struct Heard {
    client: tokio_postgres::Client,
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Heard {
    async fn start(inst: &Instance) -> Self {
        let (client, mut conn) = tokio_postgres::connect(&inst.db_url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut s = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = s.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = tx.send(n.channel().to_string());
                }
            }
        });
        client
            .batch_execute("LISTEN kite_events; LISTEN kite_test_marker")
            .await
            .expect("listen");
        Self { client, rx }
    }

    /// What was heard since the last call, up to a marker notified now.
    async fn until_marker(&mut self) -> Vec<String> {
        self.client
            .batch_execute("NOTIFY kite_test_marker")
            .await
            .expect("notify");
        let mut heard = Vec::new();
        loop {
            let ch = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("the marker in time")
                .expect("the connection open");
            if ch == "kite_test_marker" {
                return heard;
            }
            heard.push(ch);
        }
    }
}

#[tokio::test]
async fn commits_notify_only_while_someone_streams() {
    let a = Instance::start("quiet").await;
    let mut heard = Heard::start(&a).await;

    // Nobody streams: a stored event notifies nobody.
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_quiet_1", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    assert_eq!(heard.until_marker().await, Vec::<String>::new());

    // A listener connected: the next commit wakes the streams, and it gets the event.
    let mut listen = Listen::start(&a, &["--json"]).await;
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_quiet_2", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    assert_eq!(heard.until_marker().await, vec!["kite_events".to_string()]);
    let got = loop {
        let e = listen.json().await;
        if e["id"] == "evt_quiet_2" {
            break e;
        }
    };
    assert_eq!(got["type"], "com.stripe.charge.succeeded");

    // Were the claim gone (lapsed, say), the commit would notify nobody, and the stream
    // still reads the event at its next poll.
    heard
        .client
        .batch_execute("DELETE FROM stream_listeners")
        .await
        .expect("delete the claim");
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_quiet_3", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    assert_eq!(heard.until_marker().await, Vec::<String>::new());
    loop {
        if listen.json().await["id"] == "evt_quiet_3" {
            break;
        }
    }
}
