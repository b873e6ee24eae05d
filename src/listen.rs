//! `kite listen`: follow an instance's event stream (`/ws`), print each event, and optionally
//! forward it to a local URL or serve it on a Unix socket. Resumes from its cursor after a
//! disconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kite_wire::stream::{self, ClientFrame, ServerFrame};

use crate::forward::Forwarder;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// `kite listen` options. Each falls back to the environment, then the config file.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Base URL of the instance (http://host:port).
    #[arg(long, env = "KITE_INSTANCE")]
    pub instance: Option<String>,
    /// Only events that came in through this hook source (`kite` for federated ones).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events whose type matches this glob.
    #[arg(long = "type")]
    pub type_glob: Option<String>,
    /// Only events this filter matches, as JSON in a CloudEvents Subscriptions dialect, e.g.
    /// '{"exact":{"subject":"cus_1"}}' (repeatable: all must match; others are acked unshown).
    #[arg(long = "filter", value_name = "JSON", value_parser = kite_api::filters::from_json)]
    pub filters: Vec<kite_api::filters::Filter>,
    /// Name of this listener's cursor: reconnecting with the same id resumes where it left
    /// off. Defaults to an id of this process.
    #[arg(long)]
    pub client_id: Option<String>,
    /// API key of the team.
    #[arg(long, env = "KITE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Team id (the key's team by default).
    #[arg(long, env = "KITE_TEAM_ID")]
    pub team_id: Option<String>,
    /// Print each event as one CloudEvent JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// POST each event to this URL, signed with a local signing secret printed at start
    /// (kept per --client-id); non-2xx answers are retried up to --forward-retries times.
    #[arg(long)]
    pub forward_to: Option<String>,
    /// With --forward-to: send the provider's original body and headers, re-signed in the
    /// provider's own scheme (Stripe, GitHub, Slack) with the local signing secret.
    #[arg(long, requires = "forward_to")]
    pub raw: bool,
    /// With --forward-to: retries after a forward's first attempt fails, before moving on
    /// (N retries: N + 1 attempts in all, each printed as `attempt n/N+1`).
    #[arg(long, default_value_t = 3, requires = "forward_to", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub forward_retries: u32,
    /// Also serve events as NDJSON on this Unix socket (mode 0600).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Config file (default ~/.config/kite/config.toml) with `instance`, `api_key`, `team_id`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The instance refused the API key.
#[derive(Debug)]
pub struct AuthFailed;

impl std::fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authentication failed")
    }
}

impl std::error::Error for AuthFailed {}

/// The config file's settings (`kite listen` and `kite admin` read the same file): kite's
/// own top-level `instance`, `api_key` and `team_id`, or the public Kite CLI's `[auth]
/// api_key`, `[auth] team_id` and `[server] url` (a `ws(s)://.../ws` URL), so a config the
/// Kite CLI wrote works as it is.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FileConfig {
    /// Base URL of the instance.
    instance: Option<String>,
    /// API key of the team.
    api_key: Option<String>,
    /// Team id.
    team_id: Option<String>,
    /// The Kite CLI's `[auth]`.
    #[serde(default)]
    auth: KiteAuth,
    /// The Kite CLI's `[server]`.
    #[serde(default)]
    server: KiteServer,
}

/// The public Kite CLI's `[auth]` table.
#[derive(Debug, Default, Deserialize)]
struct KiteAuth {
    api_key: Option<String>,
    team_id: Option<String>,
}

/// The public Kite CLI's `[server]` table.
#[derive(Debug, Default, Deserialize)]
struct KiteServer {
    url: Option<String>,
}

impl FileConfig {
    /// The instance's base URL.
    pub(crate) fn instance(&self) -> Option<String> {
        self.instance.clone().or_else(|| {
            let url = self.server.url.as_deref()?.trim_end_matches('/');
            let url = url.strip_suffix("/ws").unwrap_or(url);
            Some(if let Some(r) = url.strip_prefix("wss://") {
                format!("https://{r}")
            } else if let Some(r) = url.strip_prefix("ws://") {
                format!("http://{r}")
            } else {
                url.to_string()
            })
        })
    }

    /// The team's API key.
    pub(crate) fn api_key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| self.auth.api_key.clone())
    }

    /// The team id.
    pub(crate) fn team_id(&self) -> Option<String> {
        self.team_id.clone().or_else(|| self.auth.team_id.clone())
    }
}

/// The config file: the given one, else `~/.config/kite/config.toml`.
fn config_path(path: Option<&PathBuf>) -> Option<PathBuf> {
    path.cloned().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/kite/config.toml"))
    })
}

/// Reads the config file (see [`config_path`]); a missing file is an empty config.
pub(crate) fn load_file_config(path: Option<&PathBuf>) -> anyhow::Result<FileConfig> {
    let Some(path) = config_path(path) else {
        return Ok(FileConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The ws:// URL of an instance's stream endpoint.
pub fn ws_url(instance: &str) -> anyhow::Result<String> {
    let base = instance.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        bail!("--instance must be an http(s) URL, got {instance:?}");
    };
    Ok(format!("{rest}/ws"))
}

/// One readable line for an event: time, seq, type, id, and origin and hops if federated.
pub fn render_line(seq: i64, ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let mut line = format!("{} seq={seq} {} id={}", s("time"), s("type"), s("id"));
    if let Some(origin) = ev.get("kitefedorigin").and_then(Value::as_str) {
        let hops = ev
            .get("kitefedhops")
            .map(|h| h.to_string())
            .unwrap_or_default();
        line.push_str(&format!(" origin={origin} hops={hops}"));
    }
    line
}

struct Listener {
    url: String,
    hello: ClientFrame,
    json: bool,
    /// `--filter`s: an event that does not match them all is acked, not handled.
    filters: Vec<kite_api::filters::Filter>,
    forward: Option<Forwarder>,
    socket: Option<SocketFile>,
    /// Highest seq handled (printed, forwarded): a redelivery after a reconnect is only acked.
    done_through: i64,
}

/// Runs the listener until interrupted; reconnects with backoff (1 s doubling to 30 s).
pub async fn listen(a: ListenArgs) -> anyhow::Result<()> {
    let (instance, api_key, team_id) = resolved(&a)?;
    let hello = hello_frame(&a, api_key, team_id);
    // Checked before anything connects: a bad URL or socket path is a usage error.
    let forward = match &a.forward_to {
        Some(url) => Some(forwarder(&a, url)?),
        None => None,
    };
    let socket = match &a.socket {
        Some(path) => Some(SocketFile::serve(path).await?),
        None => None,
    };
    let mut l = Listener {
        url: ws_url(&instance)?,
        hello,
        json: a.json,
        filters: a.filters.clone(),
        forward,
        socket,
        done_through: 0,
    };
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(30))
            .with_factor(2.0)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let follow = async {
        loop {
            match l.session(&mut delays, &backoff).await {
                Err(e) if e.downcast_ref::<AuthFailed>().is_some() => return Err(e),
                Err(e) => {
                    let d = delays.next().unwrap_or(Duration::from_secs(30));
                    eprintln!("kite listen: {e:#}; retrying in {}s", d.as_secs());
                    tokio::time::sleep(d).await;
                }
                Ok(()) => {}
            }
        }
    };
    // ^C or SIGTERM ends the listener; its socket file goes with it (SocketFile's drop).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = follow => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    }
}

/// The instance URL, the API key and the team, from the flags, the environment or the
/// config file; an error says where each can be given.
fn resolved(a: &ListenArgs) -> anyhow::Result<(String, String, Option<String>)> {
    let file = load_file_config(a.config.as_ref())?;
    let path = config_path(a.config.as_ref()).map_or_else(
        || "~/.config/kite/config.toml".into(),
        |p| p.display().to_string(),
    );
    let instance = a
        .instance
        .clone()
        .or_else(|| file.instance())
        .with_context(|| {
            format!(
                "no instance: pass --instance URL, set KITE_INSTANCE, or put \
             `instance = \"http://...\"` in {path}"
            )
        })?;
    let api_key = a
        .api_key
        .clone()
        .or_else(|| file.api_key())
        .with_context(|| {
            format!(
                "no API key: kite listen needs an API key of the team (a read key will do; \
             `kite admin keys create --permission read` makes one). Pass --api-key KEY, set \
             KITE_API_KEY=KEY, or put `api_key = \"KEY\"` in {path} (the public Kite CLI's \
             `[auth] api_key` there works too)"
            )
        })?;
    Ok((
        instance,
        api_key,
        a.team_id.clone().or_else(|| file.team_id()),
    ))
}

/// The connect frame: the API key, the team, the scopes the flags ask for (all by
/// default) and the client id (a new one unless given).
fn hello_frame(a: &ListenArgs, api_key: String, team_id: Option<String>) -> ClientFrame {
    let mut scopes = Vec::new();
    if let Some(s) = &a.source {
        scopes.push(format!("source:{s}"));
    }
    if let Some(t) = &a.type_glob {
        scopes.push(format!("type:{t}"));
    }
    if scopes.is_empty() {
        scopes.push("*".to_string());
    }
    let client_id = a
        .client_id
        .clone()
        .unwrap_or_else(|| format!("listen-{}", uuid::Uuid::new_v4().simple()));
    ClientFrame::Connect {
        version: stream::VERSION,
        token: api_key,
        team_id,
        scopes: Some(json!(scopes)),
        client_id: Some(json!(client_id)),
    }
}

/// The forwarder to `url`, signing with the kept secret of this client id (or a new one
/// for this run), which it prints.
fn forwarder(a: &ListenArgs, url: &str) -> anyhow::Result<Forwarder> {
    let (secret, kept) = match config_path(a.config.as_ref()) {
        Some(path) => crate::forward::signing_secret(&path, a.client_id.as_deref()),
        None => (kite_wire::token::mint_federation_token(), false),
    };
    let f = Forwarder::new(url, a.raw, a.forward_retries, secret.clone())?;
    eprintln!(
        "kite listen: forwarding to {url}; your webhook signing secret is {secret}{}",
        if kept {
            ""
        } else {
            " (new for this run: pass --client-id to keep one)"
        }
    );
    Ok(f)
}

impl Listener {
    async fn session<B: Iterator<Item = Duration>>(
        &mut self,
        delays: &mut B,
        fresh: &impl Fn() -> B,
    ) -> anyhow::Result<()> {
        let (mut ws, _) = tokio_tungstenite::connect_async(&self.url)
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        ws.send(Message::Text(self.hello.to_text().into())).await?;
        while let Some(msg) = ws.next().await {
            let text = match msg? {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => break,
                _ => continue,
            };
            // A frame this client does not know is ignored.
            let Ok(frame) = ServerFrame::parse(&text) else {
                continue;
            };
            match frame {
                ServerFrame::Connected { last_seq, .. } => {
                    *delays = fresh();
                    eprintln!(
                        "kite listen: connected to {} (after seq {last_seq}); waiting for events",
                        self.url
                    );
                }
                ServerFrame::CursorExpired {
                    oldest_available_seq,
                    ..
                } => {
                    eprintln!("kite listen: events before seq {oldest_available_seq} expired before this listener saw them");
                }
                ServerFrame::Event { seq, event } => {
                    if seq > self.done_through {
                        self.handle(seq, event.get()).await;
                        self.done_through = seq;
                    }
                    ws.send(Message::Text(ClientFrame::Ack { seq }.to_text().into()))
                        .await?;
                }
                // This client sends no requests.
                ServerFrame::Response { .. } => {}
                ServerFrame::Error { code, message } => {
                    if code == stream::AUTH_FAILED {
                        return Err(AuthFailed.into());
                    }
                    bail!("server error {code}: {message}");
                }
            }
        }
        bail!("connection closed")
    }

    /// Prints one event (its JSON text as it came, with --json), serves it on the socket and
    /// forwards it.
    async fn handle(&mut self, seq: i64, text: &str) {
        // A stream's event carries its federation extensions as members: its text is all.
        if !self.filters.is_empty()
            && kite_api::filters::first_mismatch(
                &self.filters,
                &mut kite_api::filters::Facts::new(Some(text)),
            )
            .is_some()
        {
            return;
        }
        let ev: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        // One event a line: a line break in the text can only be whitespace between JSON
        // tokens (a provider's pretty-printed body), which becomes a space; every other byte
        // is as stored. (--forward-to --raw sends the exact bytes.)
        let line = one_line(text);
        if self.json {
            crate::stdout::println(&line);
        } else {
            crate::stdout::println(&render_line(seq, &ev));
        }
        if let Some(s) = &self.socket {
            let _ = s.tx.send(Arc::from(format!("{line}\n")));
        }
        if let Some(f) = &self.forward {
            f.forward(seq, text, &ev).await;
        }
    }
}

/// JSON text on one line: line breaks (whitespace between tokens in valid JSON) as spaces.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(text.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The Unix socket of `--socket`: NDJSON events for every client, readable only by this
/// user; the file is removed when the listener ends.
struct SocketFile {
    path: PathBuf,
    tx: broadcast::Sender<Arc<str>>,
}

impl SocketFile {
    /// Binds the socket, replacing a stale socket at `path` but never another kind of file.
    async fn serve(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?,
            Ok(_) => bail!(
                "refusing to replace {}: it exists and is not a socket",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (tx, _) = broadcast::channel::<Arc<str>>(1024);
        let accept_tx = tx.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut rx = accept_tx.subscribe();
                tokio::spawn(async move {
                    while let Ok(line) = rx.recv().await {
                        if stream.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            tx,
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
