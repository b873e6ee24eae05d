//! `GET /ws`: the Kite stream protocol. A client sends `connect`, gets `connected`, then
//! `event` frames for its team's events that match its scopes, and acks them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use kite_protocol::scope::ScopeSet;
use serde_json::{json, Value};

use crate::AppState;

/// Authentication failed.
const AUTH_FAILED: u16 = 4001;
/// A frame could not be understood.
const INVALID_MESSAGE: u16 = 4002;

/// What a client asked to see.
enum Filter {
    All,
    Source(String),
    Type(ScopeSet),
}

fn parse_scopes(v: Option<&Value>) -> Result<Vec<Filter>, String> {
    let Some(v) = v else {
        return Ok(vec![Filter::All]);
    };
    let items = v.as_array().ok_or("scopes must be an array of strings")?;
    let mut out = Vec::new();
    for s in items {
        let s = s.as_str().ok_or("scopes must be an array of strings")?;
        if s == "*" {
            out.push(Filter::All);
        } else if let Some(name) = s.strip_prefix("source:") {
            out.push(Filter::Source(name.to_string()));
        } else if let Some(glob) = s.strip_prefix("type:") {
            out.push(Filter::Type(
                ScopeSet::compile(&[glob]).map_err(|e| e.to_string())?,
            ));
        } else {
            return Err(format!(
                "unknown scope {s:?}: use *, source:NAME or type:GLOB"
            ));
        }
    }
    if out.is_empty() {
        out.push(Filter::All);
    }
    Ok(out)
}

fn wanted(filters: &[Filter], source: &str, ty: &str) -> bool {
    filters.iter().any(|f| match f {
        Filter::All => true,
        Filter::Source(s) => s == source,
        Filter::Type(g) => g.matches(ty),
    })
}

pub(crate) async fn ws(State(st): State<Arc<AppState>>, up: WebSocketUpgrade) -> Response {
    up.on_upgrade(move |socket| serve(st, socket))
}

async fn fail(socket: &mut WebSocket, code: u16, message: &str) {
    let frame = json!({"type":"error","code":code,"message":message}).to_string();
    let _ = socket.send(Message::Text(frame.into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: message.to_string().into(),
        })))
        .await;
}

async fn serve(st: Arc<AppState>, mut socket: WebSocket) {
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        fail(&mut socket, INVALID_MESSAGE, "expected a connect frame").await;
        return;
    };
    let Ok(hello) = serde_json::from_str::<Value>(&text) else {
        fail(&mut socket, INVALID_MESSAGE, "frames must be JSON").await;
        return;
    };
    if hello.get("type").and_then(Value::as_str) != Some("connect") {
        fail(
            &mut socket,
            INVALID_MESSAGE,
            "the first frame must be connect",
        )
        .await;
        return;
    }
    let token = hello.get("token").and_then(Value::as_str).unwrap_or("");
    let grant = match st.store.authenticate_key(token).await {
        Ok(Some(g)) => g,
        _ => {
            fail(&mut socket, AUTH_FAILED, "authentication failed").await;
            return;
        }
    };
    if let Some(team) = hello.get("team_id").and_then(Value::as_str) {
        if team != grant.team_id {
            fail(&mut socket, AUTH_FAILED, "authentication failed").await;
            return;
        }
    }
    let filters = match parse_scopes(hello.get("scopes")) {
        Ok(f) => f,
        Err(m) => {
            fail(&mut socket, INVALID_MESSAGE, &m).await;
            return;
        }
    };
    let Ok(mut cursor) = st.store.last_seq(&grant.team_id).await else {
        fail(&mut socket, 1011, "database unavailable").await;
        return;
    };
    let connected = json!({"type":"connected","last_seq":cursor}).to_string();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return;
    }
    let (mut tx, mut rx) = socket.split();
    let mut events = st.notes.events.clone();
    loop {
        match st.store.events_after(&grant.team_id, cursor, 500).await {
            Ok(batch) => {
                for e in batch {
                    cursor = e.seq;
                    if !wanted(&filters, &e.hook_source, &e.ce_type) {
                        continue;
                    }
                    let mut event = e.event;
                    if let Some(o) = event.as_object_mut() {
                        o.insert("kiteseq".into(), json!(e.seq));
                    }
                    let frame = json!({"type":"event","seq":e.seq,"event":event}).to_string();
                    if tx.send(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "stream cannot read events"),
        }
        tokio::select! {
            _ = events.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Acks and unknown frames need no answer here.
                Some(Ok(_)) => {}
            },
        }
    }
}
