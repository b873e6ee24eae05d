//! `GET /ws`: the Kite stream protocol. A client sends `connect`, gets `connected`, then
//! `event` frames for its team's events that match its scopes, which it may ack; it may also
//! make calls (`request` / `response`, see [`crate::rpc`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use kite_store::stream::Resume;
use kite_wire::scope::ScopeSet;
use kite_wire::stream::{
    self, ClientFrame, ServerFrame, AUTH_FAILED, INVALID_MESSAGE, RATE_LIMITED, SLOW_CONSUMER,
    VERSION,
};
use serde_json::Value;

use crate::{rpc, AppState};

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

/// Whether an event is for a client: `source:NAME` matches the hook it came through, and
/// for an event that came by federation also the provider it first came from (the last
/// part of its CloudEvent source, `/hooks/{team}/{provider}`), so `source:stripe` on B
/// shows the Stripe events A forwarded and `source:kite` all that came by federation.
fn wanted(filters: &[Filter], e: &kite_store::events::StoredEvent) -> bool {
    let provider = || kite_wire::event::provider_of(&e.ce_source);
    filters.iter().any(|f| match f {
        Filter::All => true,
        Filter::Source(s) => {
            *s == e.hook_source
                || (e.hook_source == kite_wire::event::FEDERATION_SOURCE
                    && provider() == Some(s.as_str()))
        }
        Filter::Type(g) => g.matches(&e.ce_type),
    })
}

/// Largest frame a client may send (the connect frame included); bigger ones close the
/// connection before they are buffered.
pub const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

/// `GET /ws`: the WebSocket stream.
#[utoipa::path(get, path = "/ws", tag = "stream", security(()),
    summary = "The live event stream (WebSocket, the Kite stream protocol)",
    description = "Upgrade to a WebSocket, then send the connect frame with an API key; \
        events follow as `event` frames, from the durable cursor of a named listener.",
    responses((status = 101, description = "Switched to the WebSocket protocol")))]
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
        if let Some(team) = self.keys[0].strip_prefix("team:") {
            metrics::gauge!(kite_wire::metrics::WS_CONNECTIONS, "team" => team.to_string())
                .decrement(1);
        }
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
    metrics::gauge!(kite_wire::metrics::WS_CONNECTIONS, "team" => team.to_string()).increment(1);
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
    let team = grant.team_id.clone();
    let key_id = grant.key_id;
    // The public client sends its team; an empty one names none.
    if let Some(t) = team_id.filter(|t| !t.is_empty()) {
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
        Some(Value::String(c)) if kite_wire::event::header_safe(c, 128) => Some(c.clone()),
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
                message: format!(
                    "events before seq {oldest_available_seq} expired before this client saw them"
                ),
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
    // A client without an id gets one for this connection (no durable cursor).
    let shown_id = client_id
        .clone()
        .unwrap_or_else(|| format!("conn-{}", uuid::Uuid::new_v4().simple()));
    let connected = ServerFrame::Connected {
        last_seq: cursor,
        client_id: shown_id,
    }
    .to_text();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return;
    }
    let session = Session {
        st: &st,
        team: &team,
        grant: &grant,
        client_id: client_id.as_deref(),
        filters: &filters,
    };
    let resume = session.run(socket, &mut cursor).await;
    if let Some(c) = client_id.as_deref() {
        if let Err(e) = st.store.save_cursor(&team, c, resume).await {
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
    grant: &'a kite_store::keys::KeyGrant,
    client_id: Option<&'a str>,
    filters: &'a [Filter],
}

/// Where a client resumes: after its last ack once it acks (at least once), else after the
/// last event sent to it (a client that never acks, like the public `kite stream`).
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Every event up to here was sent to the client or passed over.
    cursor: i64,
    /// The last event frame sent.
    last_sent: i64,
    /// Everything up to here is acknowledged; `None` until the first ack.
    acked: Option<i64>,
}

impl Progress {
    fn ack(&mut self, seq: i64) {
        // An ack of the last event sent covers the events passed over after it.
        let through = if seq >= self.last_sent {
            self.cursor
        } else {
            seq
        };
        self.acked = Some(self.acked.map_or(through, |a| a.max(through)));
    }

    fn resume(&self) -> i64 {
        self.acked.unwrap_or(self.cursor)
    }
}

impl Session<'_> {
    /// Streams events after `cursor` and answers calls until the client leaves; answers
    /// where the client resumes. A client that cannot take a frame for the stall time is a
    /// slow consumer (4004): backpressure, not missing acks, decides it.
    async fn run(&self, socket: WebSocket, cursor: &mut i64) -> i64 {
        let (mut tx, mut rx) = socket.split();
        let mut events = self.st.notes.events.clone();
        let mut p = Progress {
            cursor: *cursor,
            last_sent: *cursor,
            acked: None,
        };
        let mut saved = p.resume();
        let mut more = true;
        let mut flush = tokio::time::interval(self.st.cfg.stream_cursor_flush);
        loop {
            if more {
                let limit = 500;
                match self.st.store.events_after(self.team, p.cursor, limit).await {
                    Ok(batch) => {
                        more = batch.len() as i64 == limit;
                        for e in batch {
                            if !wanted(self.filters, &e) {
                                p.cursor = e.seq;
                                continue;
                            }
                            // The stored text is spliced, never parsed: a row that cannot
                            // be read is logged and passed over.
                            let frame = match e.text(true) {
                                Ok(t) => stream::event_frame(e.seq, &t),
                                Err(why) => {
                                    tracing::warn!(seq = e.seq, error = %why, "stream skips an event it cannot read");
                                    p.cursor = e.seq;
                                    continue;
                                }
                            };
                            if !self.send(&mut tx, frame).await {
                                *cursor = p.cursor;
                                return p.resume();
                            }
                            p.cursor = e.seq;
                            p.last_sent = e.seq;
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
            }
            tokio::select! {
                _ = events.changed() => more = true,
                _ = tokio::time::sleep(self.st.cfg.stream_poll) => more = true,
                _ = flush.tick() => {
                    if let Some(c) = self.client_id {
                        let at = p.resume();
                        if at > saved && self.st.store.save_cursor(self.team, c, at).await.is_ok() {
                            saved = at;
                        }
                    }
                }
                msg = rx.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                        *cursor = p.cursor;
                        return p.resume();
                    }
                    Some(Ok(Message::Text(t))) => {
                        let reply = match serde_json::from_str::<ClientFrame>(&t) {
                            Ok(ClientFrame::Ack { seq }) => {
                                p.ack(seq.min(p.cursor));
                                None
                            }
                            Ok(ClientFrame::Request { id, method, params }) => {
                                let (ok, payload) =
                                    match rpc::call(self.st, self.grant, &method, &params).await {
                                        Ok(v) => (true, v),
                                        Err(e) => (false, e.payload()),
                                    };
                                Some(ServerFrame::Response { id, ok, payload })
                            }
                            // Unknown frame types are ignored.
                            Ok(_) => None,
                            Err(e) => Some(ServerFrame::Error {
                                code: INVALID_MESSAGE,
                                message: format!("invalid frame: {e}"),
                            }),
                        };
                        if let Some(f) = reply {
                            if !self.send(&mut tx, f.to_text()).await {
                                *cursor = p.cursor;
                                return p.resume();
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Sends one frame; false when the client is gone or did not take it for the stall
    /// time (then it is told 4004, if it still listens, and the connection ends).
    async fn send(
        &self,
        tx: &mut futures::stream::SplitSink<WebSocket, Message>,
        text: String,
    ) -> bool {
        let stall = self.st.cfg.stream_stall;
        match tokio::time::timeout(stall, tx.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(team = %self.team, "slow consumer: the client took no frame for the stall time");
                let f = ServerFrame::Error {
                    code: SLOW_CONSUMER,
                    message: "slow consumer: the connection took no data for too long".into(),
                };
                let bye = async {
                    let _ = tx.send(Message::Text(f.to_text().into())).await;
                    let _ = tx
                        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                            code: SLOW_CONSUMER,
                            reason: "slow consumer".into(),
                        })))
                        .await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                false
            }
        }
    }
}
