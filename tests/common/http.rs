//! HTTP helpers shared by the tests: raw posts, signatures, and a recording endpoint.

use std::sync::{Arc, Mutex};

use hmac::{KeyInit, Mac};
use kite_wire::provider::sign_standard;
use serde_json::Value;

use super::Instance;

pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

pub async fn raw_post(
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

/// A local endpoint recording each request's headers and body, answering `status`.
pub async fn recording_sink(
    status: u16,
) -> (String, Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>) {
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

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn standard_headers(
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
