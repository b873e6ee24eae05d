//! `kite listen`: follow an instance's event stream (`/ws`), print each event, and optionally
//! forward it to a local URL or serve it on a Unix socket. Resumes from its cursor after a
//! disconnect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kite_protocol::stream::{self, ClientFrame, ServerFrame};
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
    /// POST each event to this URL; non-2xx answers are retried with backoff.
    #[arg(long)]
    pub forward_to: Option<String>,
    /// With --forward-to: send only the event's data, with its original headers replayed.
    #[arg(long, requires = "forward_to")]
    pub raw: bool,
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

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    instance: Option<String>,
    api_key: Option<String>,
    team_id: Option<String>,
}

fn load_file_config(path: Option<&PathBuf>) -> anyhow::Result<FileConfig> {
    let path = match path {
        Some(p) => p.clone(),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".config/kite/config.toml"),
            None => return Ok(FileConfig::default()),
        },
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
    forward: Option<Forwarder>,
    socket: Option<broadcast::Sender<Arc<str>>>,
    /// Highest seq handled (printed, forwarded): a redelivery after a reconnect is only acked.
    done_through: i64,
}

/// Runs the listener until interrupted; reconnects with backoff (1 s doubling to 30 s).
pub async fn listen(a: ListenArgs) -> anyhow::Result<()> {
    let file = load_file_config(a.config.as_ref())?;
    let instance = a.instance.clone().or(file.instance).context(
        "no instance: pass --instance, set KITE_INSTANCE, or put `instance` in the config file",
    )?;
    let api_key = a.api_key.clone().or(file.api_key).context(
        "no API key: pass --api-key, set KITE_API_KEY, or put `api_key` in the config file",
    )?;
    let team_id = a.team_id.clone().or(file.team_id);
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
    let hello = ClientFrame::Connect {
        version: stream::VERSION,
        token: api_key,
        team_id,
        scopes: Some(json!(scopes)),
        client_id: Some(json!(client_id)),
    };
    let socket = match &a.socket {
        Some(path) => Some(serve_socket(path).await?),
        None => None,
    };
    let mut l = Listener {
        url: ws_url(&instance)?,
        hello,
        json: a.json,
        forward: a
            .forward_to
            .clone()
            .map(|u| Forwarder::new(u, a.raw))
            .transpose()?,
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
                ServerFrame::Connected { last_seq } => {
                    *delays = fresh();
                    eprintln!(
                        "kite listen: connected to {} (after seq {last_seq}); waiting for events",
                        self.url
                    );
                }
                ServerFrame::CursorExpired {
                    oldest_available_seq,
                } => {
                    eprintln!("kite listen: events before seq {oldest_available_seq} expired before this listener saw them");
                }
                ServerFrame::Event { seq, event } => {
                    if seq > self.done_through {
                        let ev: Value = serde_json::from_str(event.get()).unwrap_or(Value::Null);
                        self.handle(seq, &ev).await;
                        self.done_through = seq;
                    }
                    ws.send(Message::Text(ClientFrame::Ack { seq }.to_text().into()))
                        .await?;
                }
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

    async fn handle(&mut self, seq: i64, ev: &Value) {
        let line = if self.json {
            ev.to_string()
        } else {
            render_line(seq, ev)
        };
        println!("{line}");
        if let Some(tx) = &self.socket {
            let _ = tx.send(Arc::from(format!("{ev}\n")));
        }
        if let Some(f) = &self.forward {
            f.forward(seq, ev).await;
        }
    }
}

/// Posts events to a local URL, retrying until a 2xx.
struct Forwarder {
    url: String,
    raw: bool,
    http: reqwest::Client,
}

/// Headers not replayed with --raw: credentials and hop-by-hop ones.
const NOT_REPLAYED: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept-encoding",
];

impl Forwarder {
    fn new(url: String, raw: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { url, raw, http })
    }

    fn request(&self, ev: &Value) -> reqwest::RequestBuilder {
        if !self.raw {
            return self
                .http
                .post(&self.url)
                .header("content-type", "application/cloudevents+json")
                .body(ev.to_string());
        }
        let mut req = self.http.post(&self.url);
        let headers: serde_json::Map<String, Value> = ev
            .get("kiteoriginalheaders")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for (k, v) in headers {
            if NOT_REPLAYED.contains(&k.to_ascii_lowercase().as_str()) {
                continue;
            }
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
        let body = match ev.get("data") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        req.body(body)
    }

    async fn forward(&self, seq: i64, ev: &Value) {
        let id = ev.get("id").and_then(Value::as_str).unwrap_or("-");
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .without_max_times()
            .build();
        loop {
            match self.request(ev).send().await {
                Ok(r) if r.status().is_success() => {
                    eprintln!(
                        "[{}] POST {} seq={seq} id={id}",
                        r.status().as_u16(),
                        self.url
                    );
                    return;
                }
                Ok(r) => eprintln!(
                    "[{}] POST {} seq={seq} id={id}; retrying",
                    r.status().as_u16(),
                    self.url
                ),
                Err(e) => eprintln!("[error] POST {} seq={seq} id={id}: {e}; retrying", self.url),
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(30))).await;
        }
    }
}

/// Serves NDJSON events on a Unix socket readable only by this user.
async fn serve_socket(path: &PathBuf) -> anyhow::Result<broadcast::Sender<Arc<str>>> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
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
    Ok(tx)
}
