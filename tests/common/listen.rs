//! `kite listen` as a test drives it: started against an instance, connected, its stdout
//! read line by line and its stderr kept.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::Instance;

/// How long `kite listen` may take to connect or print.
pub const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// A running `kite listen`, connected, whose stdout the test reads line by line.
pub struct Listen {
    pub child: Child,
    out: Lines<BufReader<ChildStdout>>,
    /// Every line it wrote to stderr so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listen {
    /// Starts `kite listen` against `inst` and waits until it is connected.
    pub async fn start(inst: &Instance, args: &[&str]) -> Self {
        Self::start_with_home(inst, args, std::path::Path::new("/nonexistent")).await
    }

    /// Starts `kite listen` with `HOME` at `home` (where its config file lives).
    pub async fn start_with_home(inst: &Instance, args: &[&str], home: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kite"))
            .arg("listen")
            .args(["--instance", &inst.url])
            .args(args)
            .env("KITE_API_KEY", &inst.key)
            .env("HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kite listen");
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (connected_tx, connected) = tokio::sync::oneshot::channel::<()>();
        let lines = stderr.clone();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            while let Ok(Some(l)) = err.next_line().await {
                if l.contains("connected") {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                if let Ok(mut v) = lines.lock() {
                    v.push(l);
                }
            }
        });
        let ok = tokio::time::timeout(LISTEN_WAIT, connected).await;
        assert!(
            matches!(ok, Ok(Ok(()))),
            "kite listen did not connect: {:?}",
            stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
        );
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, out, stderr }
    }

    /// The signing secret it printed for --forward-to.
    pub fn signing_secret(&self) -> String {
        let lines = self.stderr.lock().expect("lock");
        lines
            .iter()
            .find_map(|l| l.split("signing secret is ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("a printed signing secret")
            .to_owned()
    }

    /// Whether it wrote a stderr line containing `text`.
    pub fn said(&self, text: &str) -> bool {
        self.stderr
            .lock()
            .map(|v| v.iter().any(|l| l.contains(text)))
            .unwrap_or(false)
    }

    /// The next line it prints.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(LISTEN_WAIT, self.out.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("listen still running")
    }

    /// The next line it prints, as JSON.
    pub async fn json(&mut self) -> Value {
        serde_json::from_str(&self.line().await).expect("JSON line")
    }
}
