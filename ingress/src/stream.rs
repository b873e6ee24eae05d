//! `GET /ws`: the Kite stream protocol. A client sends `connect`, gets `connected`, then
//! `event` frames for its team's events that match its scopes, and acks them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use kite_protocol::scope::ScopeSet;
use kite_protocol::stream::{
    self, ClientFrame, ServerFrame, AUTH_FAILED, INVALID_MESSAGE, RATE_LIMITED, SLOW_CONSUMER,
    VERSION,
};
use kite_store::stream::Resume;
use serde_json::Value;

use crate::AppState;

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

/// Largest frame a client may send (the connect frame included); bigger ones close the
/// connection before they are buffered.
pub const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

pub(crate) async fn ws(State(st): State<Arc<AppState>>, up: WebSocketUpgrade) -> Response {
    up.max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| serve(st, socket))
}

async fn fail(socket: &mut WebSocket, code: u16, message: &str) {
    let frame = ServerFrame::Error {
        code,
        message: message.to_string(),
    };
    let _ = socket.send(Message::Text(frame.to_text().into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: message.to_string().into(),
        })))
        .await;
}

/// Holds one of a team's stream connection slots and one of its key's.
struct Slot<'a> {
    st: &'a AppState,
    keys: [String; 2],
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.st.streams.lock() {
            for k in &self.keys {
                if let Some(n) = m.get_mut(k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(k);
                    }
                }
            }
        }
    }
}

/// Takes a slot of the team and of the key, or answers which limit is reached.
fn take_slot<'a>(st: &'a AppState, team: &str, key: uuid::Uuid) -> Result<Slot<'a>, &'static str> {
    let mut m = st
        .streams
        .lock()
        .map_err(|_| "too many stream connections")?;
    let keys = [format!("team:{team}"), format!("key:{key}")];
    let limits = [
        (
            st.cfg.stream_max_connections,
            "too many stream connections for this team",
        ),
        (
            st.cfg.stream_max_per_key,
            "too many stream connections for this API key",
        ),
    ];
    for (k, (max, why)) in keys.iter().zip(limits) {
        if m.get(k).copied().unwrap_or(0) >= max {
            return Err(why);
        }
    }
    for k in &keys {
        *m.entry(k.clone()).or_insert(0) += 1;
    }
    Ok(Slot { st, keys })
}

async fn serve(st: Arc<AppState>, mut socket: WebSocket) {
    let first = tokio::time::timeout(st.cfg.stream_connect_timeout, socket.recv()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        fail(&mut socket, INVALID_MESSAGE, "expected a connect frame").await;
        return;
    };
    let (version, token, team_id, scopes, client_id) = match serde_json::from_str(&text) {
        Ok(ClientFrame::Connect {
            version,
            token,
            team_id,
            scopes,
            client_id,
        }) => (version, token, team_id, scopes, client_id),
        Ok(_) => {
            fail(
                &mut socket,
                INVALID_MESSAGE,
                "the first frame must be connect",
            )
            .await;
            return;
        }
        Err(e) => {
            fail(&mut socket, INVALID_MESSAGE, &format!("invalid frame: {e}")).await;
            return;
        }
    };
    if version != VERSION {
        fail(&mut socket, INVALID_MESSAGE, "unsupported protocol version").await;
        return;
    }
    let token = token.as_str();
    let grant = match st.store.authenticate_key(token).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            fail(&mut socket, AUTH_FAILED, "authentication failed").await;
            return;
        }
        Err(_) => {
            fail(&mut socket, 1011, "database unavailable").await;
            return;
        }
    };
    let team = grant.team_id;
    let key_id = grant.key_id;
    if let Some(t) = team_id {
        if t != team {
            fail(&mut socket, AUTH_FAILED, "authentication failed").await;
            return;
        }
    }
    let filters = match parse_scopes(scopes.as_ref()) {
        Ok(f) => f,
        Err(m) => {
            fail(&mut socket, INVALID_MESSAGE, &m).await;
            return;
        }
    };
    let client_id = match client_id.as_ref() {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if kite_protocol::event::header_safe(c, 128) => Some(c.clone()),
        Some(_) => {
            fail(
                &mut socket,
                INVALID_MESSAGE,
                "client_id must be 1..=128 characters of visible ASCII",
            )
            .await;
            return;
        }
    };
    let _slot = match take_slot(&st, &team, key_id) {
        Ok(s) => s,
        Err(why) => {
            fail(&mut socket, RATE_LIMITED, why).await;
            return;
        }
    };
    let start = match start_position(&st, &team, client_id.as_deref()).await {
        Ok(s) => s,
        Err(_) => {
            fail(&mut socket, 1011, "database unavailable").await;
            return;
        }
    };
    let mut cursor = match start {
        Resume::From(c) => c,
        Resume::Expired {
            oldest_available_seq,
            ..
        } => {
            let f = ServerFrame::CursorExpired {
                oldest_available_seq,
            };
            if socket
                .send(Message::Text(f.to_text().into()))
                .await
                .is_err()
            {
                return;
            }
            (oldest_available_seq - 1).max(0)
        }
    };
    let connected = ServerFrame::Connected { last_seq: cursor }.to_text();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return;
    }
    let session = Session {
        st: &st,
        team: &team,
        client_id: client_id.as_deref(),
        filters: &filters,
    };
    let acked = session.run(socket, &mut cursor).await;
    if let (Some(c), Some(acked)) = (client_id.as_deref(), acked) {
        if let Err(e) = st.store.save_cursor(&team, c, acked).await {
            tracing::warn!(error = %e, "could not save a stream cursor");
        }
    }
}

async fn start_position(
    st: &AppState,
    team: &str,
    client_id: Option<&str>,
) -> Result<Resume, kite_store::StoreError> {
    let Some(c) = client_id else {
        return Ok(Resume::From(st.store.last_seq(team).await?));
    };
    match st.store.cursor(team, c).await? {
        Some(acked) => st.store.resume_point(team, acked).await,
        None => {
            let now = st.store.last_seq(team).await?;
            st.store.save_cursor(team, c, now).await?;
            Ok(Resume::From(now))
        }
    }
}

struct Session<'a> {
    st: &'a AppState,
    team: &'a str,
    client_id: Option<&'a str>,
    filters: &'a [Filter],
}

impl Session<'_> {
    /// Streams events after `cursor` until the client leaves; answers the last acked seq.
    async fn run(&self, socket: WebSocket, cursor: &mut i64) -> Option<i64> {
        let (mut tx, mut rx) = socket.split();
        let max = self.st.cfg.stream_max_unacked;
        let mut events = self.st.notes.events.clone();
        let mut unacked: VecDeque<i64> = VecDeque::new();
        let mut acked = *cursor;
        let mut saved = acked;
        let mut more = true;
        let mut full_since: Option<tokio::time::Instant> = None;
        let mut flush = tokio::time::interval(self.st.cfg.stream_cursor_flush);
        loop {
            let room = max.saturating_sub(unacked.len());
            if more && room > 0 {
                full_since = None;
                let limit = room.min(500) as i64;
                match self.st.store.events_after(self.team, *cursor, limit).await {
                    Ok(batch) => {
                        more = batch.len() as i64 == limit;
                        for e in batch {
                            *cursor = e.seq;
                            if !wanted(self.filters, &e.hook_source, &e.ce_type) {
                                continue;
                            }
                            // The stored text is spliced, never parsed: a row that cannot
                            // be read is logged and passed over.
                            let frame = match e.text(true) {
                                Ok(t) => stream::event_frame(e.seq, &t),
                                Err(why) => {
                                    tracing::warn!(seq = e.seq, error = %why, "stream skips an event it cannot read");
                                    continue;
                                }
                            };
                            let sent = tokio::time::timeout(
                                self.stall(),
                                tx.send(Message::Text(frame.into())),
                            )
                            .await;
                            if !matches!(sent, Ok(Ok(()))) {
                                return Some(acked);
                            }
                            unacked.push_back(e.seq);
                        }
                        if unacked.is_empty() {
                            // Nothing outstanding: everything up to the cursor counts as seen.
                            acked = acked.max(*cursor);
                        }
                        if more {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stream cannot read events");
                        more = true;
                    }
                }
            } else if room == 0 {
                let since = *full_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= self.stall() {
                    let f = ServerFrame::Error {
                        code: SLOW_CONSUMER,
                        message: "slow consumer: too many unacknowledged events".into(),
                    };
                    let _ = tx.send(Message::Text(f.to_text().into())).await;
                    let _ = tx
                        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                            code: SLOW_CONSUMER,
                            reason: "slow consumer".into(),
                        })))
                        .await;
                    return Some(acked);
                }
            }
            tokio::select! {
                _ = events.changed() => more = true,
                _ = tokio::time::sleep(self.stall() / 50), if room == 0 => {}
                _ = tokio::time::sleep(self.st.cfg.stream_poll) => more = true,
                _ = flush.tick() => {
                    if let Some(c) = self.client_id {
                        if acked > saved && self.st.store.save_cursor(self.team, c, acked).await.is_ok() {
                            saved = acked;
                        }
                    }
                }
                msg = rx.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Some(acked),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientFrame>(&t) {
                        Ok(ClientFrame::Ack { seq }) => {
                            while unacked.front().is_some_and(|s| *s <= seq) {
                                unacked.pop_front();
                            }
                            acked = acked.max(seq.min(*cursor));
                            if unacked.is_empty() {
                                acked = acked.max(*cursor);
                            }
                        }
                        // Unknown frame types are ignored.
                        Ok(_) => {}
                        Err(e) => {
                            let f = ServerFrame::Error {
                                code: INVALID_MESSAGE,
                                message: format!("invalid frame: {e}"),
                            };
                            let _ = tx.send(Message::Text(f.to_text().into())).await;
                        }
                    },
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    fn stall(&self) -> Duration {
        self.st.cfg.stream_stall
    }
}
