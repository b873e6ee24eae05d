//! `kite listen`: connect to an instance's `/ws` and print each event, one per line.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// `kite listen` options.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Base URL of the instance (http://host:port).
    #[arg(long, env = "KITE_INSTANCE")]
    pub instance: String,
    /// Only events that came in through this hook source (`kite` for federated ones).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events whose type matches this glob.
    #[arg(long = "type")]
    pub type_glob: Option<String>,
    /// API key of the team.
    #[arg(long, env = "KITE_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Team id (the key's team by default).
    #[arg(long, env = "KITE_TEAM_ID")]
    pub team_id: Option<String>,
    /// Print each event as one CloudEvent JSON object per line.
    #[arg(long)]
    pub json: bool,
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

/// One readable line for an event frame.
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

/// Runs the listener until interrupted; reconnects with backoff on connection loss.
pub async fn listen(a: ListenArgs) -> anyhow::Result<()> {
    let url = ws_url(&a.instance)?;
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
    let mut delay = Duration::from_secs(1);
    loop {
        match session(&url, &a, &scopes).await {
            Ok(()) => delay = Duration::from_secs(1),
            Err(e) if e.downcast_ref::<AuthFailed>().is_some() => return Err(e),
            Err(e) => eprintln!("kite listen: {e:#}; retrying in {}s", delay.as_secs()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn session(url: &str, a: &ListenArgs, scopes: &[String]) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let mut hello = json!({"type":"connect","version":1,"token":a.api_key,"scopes":scopes,"client_id":Value::Null});
    if let Some(t) = &a.team_id {
        hello["team_id"] = json!(t);
    }
    ws.send(Message::Text(hello.to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text).context("server sent a non-JSON frame")?;
        match frame.get("type").and_then(Value::as_str) {
            Some("connected") => {
                eprintln!("kite listen: connected to {url}; waiting for events");
            }
            Some("event") => {
                let seq = frame.get("seq").and_then(Value::as_i64).unwrap_or(0);
                let ev = frame.get("event").cloned().unwrap_or(Value::Null);
                if a.json {
                    println!("{ev}");
                } else {
                    println!("{}", render_line(seq, &ev));
                }
                ws.send(Message::Text(
                    json!({"type":"ack","seq":seq}).to_string().into(),
                ))
                .await?;
            }
            Some("error") => {
                let code = frame.get("code").and_then(Value::as_i64).unwrap_or(0);
                if code == 4001 {
                    return Err(AuthFailed.into());
                }
                let m = frame.get("message").and_then(Value::as_str).unwrap_or("");
                bail!("server error {code}: {m}");
            }
            _ => {}
        }
    }
    bail!("connection closed")
}
