//! Helpers of the hostile-input tests: raw posts, a recording peer whose answer depends on
//! the event, legitimate traffic to run beside an attack, and `/ws` clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::*;

pub const WAIT: Duration = Duration::from_secs(40);

/// Posts raw bytes with headers; answers the status and the JSON answer.
pub async fn raw(
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

pub fn ce_json() -> (&'static str, String) {
    ("content-type", "application/cloudevents+json".to_string())
}

/// What a sink saw: every request's CloudEvent id, headers and body, and the ids it accepted.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<(String, HashMap<String, String>, String)>,
    pub accepted: Vec<String>,
}

/// A peer endpoint on loopback whose answer depends on the event id.
pub struct Sink {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
}

impl Sink {
    pub async fn start(rule: fn(&str) -> u16) -> Self {
        Self::on(0, rule).await
    }

    pub async fn on(port: u16, rule: fn(&str) -> u16) -> Self {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
                let s = s.clone();
                async move {
                    // The event's CloudEvent id (webhook-id is derived from source and id).
                    let id = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
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
    pub async fn assert_once(&self, ids: &[String]) {
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
pub async fn legit(inst: &Instance, prefix: &str, n: usize) -> Vec<String> {
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

pub async fn peer_view(a: &Instance, peer: &str) -> Value {
    let (s, p) = a.get(&format!("/api/federation/peers/{peer}")).await;
    assert_eq!(s, 200, "{p}");
    p
}

pub async fn ws_open(
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
pub async fn frame(
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
pub async fn refused(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) {
    while let Some(f) = frame(ws).await {
        assert_eq!(f["type"], "error", "{f}");
    }
}

pub async fn legit_signed(inst: &Instance, prefix: &str, n: usize) -> Vec<String> {
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

pub async fn half_sent(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
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
pub async fn closed(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
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
