//! `GET /ws`: the Kite stream protocol. A client sends `connect`, gets `connected`, then
//! `event` frames for its team's events that match its scopes, which it may ack; it may also
//! make calls (`request` / `response`, see [`crate::rpc`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use kite_store::keys::KeyGrant;
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
    /// Types matching the glob; kite's own operational events only when the glob names
    /// them (`kite.*`).
    Type(ScopeSet, bool),
}

/// The connect frame's `scopes` as filters (all events when absent or empty).
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
                glob.starts_with(kite_wire::event::OPERATIONAL_TYPE_PREFIX),
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
    // kite's own operational events go to a client that asks for them by type (`kite.*`).
    let operational = e.hook_source == kite_store::operational::HOOK_SOURCE;
    filters.iter().any(|f| match f {
        Filter::All => !operational,
        Filter::Source(s) => {
            !operational
                && (*s == e.hook_source
                    || (e.hook_source == kite_wire::event::FEDERATION_SOURCE
                        && provider() == Some(s.as_str())))
        }
        // A filter naming `kite.*` takes kite's own events only: an event of such a type
        // that came another way (stored before hooks refused those types) is not one.
        Filter::Type(g, names_operational) => {
            operational == *names_operational && g.matches(&e.ce_type)
        }
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

/// Tells the client why the connection ends (an error frame, then a close frame).
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

/// Serves one connection: admits it, tells it where it starts, streams until it leaves and
/// saves a named listener's cursor.
async fn serve(st: Arc<AppState>, mut socket: WebSocket) {
    let hello = match connect(&st, &mut socket).await {
        Ok(h) => h,
        Err(Refusal(code, message)) => {
            fail(&mut socket, code, &message).await;
            return;
        }
    };
    let team = hello.grant.team_id.clone();
    let _slot = match take_slot(&st, &team, hello.grant.key_id) {
        Ok(s) => s,
        Err(why) => {
            fail(&mut socket, RATE_LIMITED, why).await;
            return;
        }
    };
    // Commits of events notify while this process streams: claimed before the greeting,
    // so an event committed once the client knows it is connected wakes it.
    st.notes.listening.renew().await;
    let client_id = hello.client_id.as_deref();
    let Some(mut cursor) = greet(&st, &mut socket, &team, client_id).await else {
        return;
    };
    let session = Session {
        st: &st,
        team: &team,
        grant: &hello.grant,
        client_id,
        filters: &hello.filters,
    };
    let resume = session.run(socket, &mut cursor).await;
    if let Some(c) = client_id {
        if let Err(e) = st.store.save_cursor(&team, c, resume).await {
            tracing::warn!(error = %e, "could not save a stream cursor");
        }
    }
}

/// Why a connection is refused: the close code and the message it is told.
struct Refusal(u16, String);

impl Refusal {
    /// A refusal with this code and message.
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self(code, message.into())
    }
}

/// A client the connect frame admitted: its key, what it wants to see, its durable name.
struct Hello {
    grant: KeyGrant,
    filters: Vec<Filter>,
    client_id: Option<String>,
}

/// Reads the connect frame (within the connect timeout) and checks it: the protocol
/// version, the key and the team it names, the scopes and the client id.
async fn connect(st: &AppState, socket: &mut WebSocket) -> Result<Hello, Refusal> {
    let first = tokio::time::timeout(st.cfg.stream_connect_timeout, socket.recv()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        return Err(Refusal::new(INVALID_MESSAGE, "expected a connect frame"));
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
            return Err(Refusal::new(
                INVALID_MESSAGE,
                "the first frame must be connect",
            ))
        }
        Err(e) => return Err(Refusal::new(INVALID_MESSAGE, format!("invalid frame: {e}"))),
    };
    if version != VERSION {
        return Err(Refusal::new(
            INVALID_MESSAGE,
            "unsupported protocol version",
        ));
    }
    let grant = authenticate(st, &token, team_id).await?;
    let filters = parse_scopes(scopes.as_ref()).map_err(|m| Refusal::new(INVALID_MESSAGE, m))?;
    let client_id = parse_client_id(client_id.as_ref())?;
    Ok(Hello {
        grant,
        filters,
        client_id,
    })
}

/// The grant of the connect frame's key, if the team the frame names (if any) is its own.
async fn authenticate(
    st: &AppState,
    token: &str,
    team_id: Option<String>,
) -> Result<KeyGrant, Refusal> {
    let grant = match st.store.authenticate_key(token).await {
        Ok(Some(g)) => g,
        Ok(None) => return Err(Refusal::new(AUTH_FAILED, "authentication failed")),
        Err(_) => return Err(Refusal::new(1011, "database unavailable")),
    };
    // The public client sends its team; an empty one names none.
    if let Some(t) = team_id.filter(|t| !t.is_empty()) {
        if t != grant.team_id.as_str() {
            return Err(Refusal::new(AUTH_FAILED, "authentication failed"));
        }
    }
    Ok(grant)
}

/// The connect frame's `client_id`: none, or 1..=128 characters of visible ASCII.
fn parse_client_id(client_id: Option<&Value>) -> Result<Option<String>, Refusal> {
    match client_id {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) if kite_wire::event::header_safe(c, 128) => Ok(Some(c.clone())),
        Some(_) => Err(Refusal::new(
            INVALID_MESSAGE,
            "client_id must be 1..=128 characters of visible ASCII",
        )),
    }
}

/// Finds where the client starts, tells it when its cursor expired, and sends `connected`;
/// answers the cursor to stream after, or `None` when the connection is over.
async fn greet(
    st: &AppState,
    socket: &mut WebSocket,
    team: &str,
    client_id: Option<&str>,
) -> Option<i64> {
    let start = match start_position(st, team, client_id).await {
        Ok(s) => s,
        Err(_) => {
            fail(socket, 1011, "database unavailable").await;
            return None;
        }
    };
    let cursor = match start {
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
                return None;
            }
            (oldest_available_seq - 1).max(0)
        }
    };
    // A client without an id gets one for this connection (no durable cursor).
    let shown_id = client_id
        .map(str::to_owned)
        .unwrap_or_else(|| format!("conn-{}", uuid::Uuid::new_v4().simple()));
    let connected = ServerFrame::Connected {
        last_seq: cursor,
        client_id: shown_id,
    }
    .to_text();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return None;
    }
    Some(cursor)
}

/// Where a client starts: after its saved cursor (a new name gets one at the newest event),
/// or after the newest event for a client without a name.
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

/// One admitted connection: whose it is and what it wants to see.
struct Session<'a> {
    st: &'a AppState,
    team: &'a str,
    grant: &'a KeyGrant,
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
    /// Takes an ack of everything up to `seq`.
    fn ack(&mut self, seq: i64) {
        // An ack of the last event sent covers the events passed over after it.
        let through = if seq >= self.last_sent {
            self.cursor
        } else {
            seq
        };
        self.acked = Some(self.acked.map_or(through, |a| a.max(through)));
    }

    /// Where the client resumes.
    fn resume(&self) -> i64 {
        self.acked.unwrap_or(self.cursor)
    }
}

/// The sending half of a client's connection.
type Sink = SplitSink<WebSocket, Message>;

/// What a [`Session::catch_up`] did.
enum CatchUp {
    /// Sent a full page: there may be more at once.
    Full,
    /// Sent what there was.
    Done,
    /// Could not read the events: tried again after the next wait.
    Failed,
    /// The client is gone.
    Gone,
}

impl Session<'_> {
    /// Streams events after `cursor` and answers calls until the client leaves; answers
    /// where the client resumes. A client that cannot take a frame for the stall time is a
    /// slow consumer (4004): backpressure, not missing acks, decides it.
    async fn run(&self, socket: WebSocket, cursor: &mut i64) -> i64 {
        let (mut tx, mut rx) = socket.split();
        let mut p = Progress {
            cursor: *cursor,
            last_sent: *cursor,
            acked: None,
        };
        self.pump(&mut tx, &mut rx, &mut p).await;
        *cursor = p.cursor;
        p.resume()
    }

    /// The connection's loop: sends the events there are, then waits for news, the poll
    /// time, a cursor flush or a client frame; returns when the client is gone.
    async fn pump(&self, tx: &mut Sink, rx: &mut SplitStream<WebSocket>, p: &mut Progress) {
        let mut events = self.st.notes.events.clone();
        let mut saved = p.resume();
        let mut more = true;
        let mut flush = tokio::time::interval(self.st.cfg.stream_cursor_flush);
        // The poll is a timer of its own: a sleep made anew each pass would never end while
        // the flush ticks more often.
        let mut poll = tokio::time::interval(self.st.cfg.stream_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if more {
                match self.catch_up(tx, p).await {
                    CatchUp::Gone => return,
                    CatchUp::Full => continue,
                    CatchUp::Done => more = false,
                    CatchUp::Failed => more = true,
                }
            }
            tokio::select! {
                _ = events.changed() => more = true,
                _ = poll.tick() => {
                    self.st.notes.listening.renew().await;
                    more = true;
                }
                _ = flush.tick() => self.flush(p, &mut saved).await,
                msg = rx.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(t))) => {
                        if let Some(f) = self.answer(&t, p).await {
                            if !self.send(tx, f.to_text()).await {
                                return;
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Sends the next page of events after the cursor that the client wants (passing over
    /// the others and those that cannot be read), moving the cursor.
    async fn catch_up(&self, tx: &mut Sink, p: &mut Progress) -> CatchUp {
        let limit = 500;
        let batch = match self.st.store.events_after(self.team, p.cursor, limit).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "stream cannot read events");
                return CatchUp::Failed;
            }
        };
        let full = batch.len() as i64 == limit;
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
            if !self.send(tx, frame).await {
                return CatchUp::Gone;
            }
            p.cursor = e.seq;
            p.last_sent = e.seq;
        }
        if full {
            CatchUp::Full
        } else {
            CatchUp::Done
        }
    }

    /// Saves a named listener's cursor when it moved since the last save.
    async fn flush(&self, p: &Progress, saved: &mut i64) {
        if let Some(c) = self.client_id {
            let at = p.resume();
            if at > *saved && self.st.store.save_cursor(self.team, c, at).await.is_ok() {
                *saved = at;
            }
        }
    }

    /// Takes a client's text frame: an ack moves its progress, a request is answered, an
    /// unknown type is ignored, and one that does not parse is told so.
    async fn answer(&self, text: &str, p: &mut Progress) -> Option<ServerFrame> {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Ack { seq }) => {
                p.ack(seq.min(p.cursor));
                None
            }
            Ok(ClientFrame::Request { id, method, params }) => {
                let (ok, payload) = match rpc::call(self.st, self.grant, &method, &params).await {
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
        }
    }

    /// Sends one frame; false when the client is gone or did not take it for the stall
    /// time (then it is told 4004, if it still listens, and the connection ends).
    async fn send(&self, tx: &mut Sink, text: String) -> bool {
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
