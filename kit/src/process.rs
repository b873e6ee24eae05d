//! `kite serve` as a child process: its environment, start (waiting for the ready line),
//! SIGKILL, SIGTERM and exit checks. The end-to-end tests, the bench and chaos runs and
//! `kite demo` all start instances through [`KiteProcess::start`].

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::ready::{self, ReadyLine};

/// How long a child may take to print its ready line, unless the caller says otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the lines a child writes go.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A sink that drops every line.
pub fn discard() -> LineSink {
    Arc::new(|_: &str| {})
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be executed.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the child's stdout failed.
    #[error("reading kite's stdout: {0}")]
    Read(std::io::Error),
    /// The child exited before it printed its ready line.
    #[error("kite exited before it was ready ({0})")]
    Exited(String),
    /// The child printed no ready line in time.
    #[error("kite printed no ready line within {0} s")]
    Timeout(u64),
}

/// The environment of one `kite serve` process; a later [`KiteEnv::set`] of a name replaces
/// the earlier value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KiteEnv(Vec<(String, String)>);

impl KiteEnv {
    /// The settings every kite started from outside needs: a loopback listener on a free port,
    /// its own database, broker prefix and admin key, team `default`, and peers allowed on
    /// private addresses (tests, benches and the demo only ever talk to loopback).
    pub fn loopback(
        instance_id: &str,
        database_url: &str,
        amqp_url: &str,
        amqp_prefix: &str,
        admin_key: &str,
    ) -> Self {
        let mut env = Self::default();
        env.set("KITE_INSTANCE_ID", instance_id)
            .set("KITE_HOST", "127.0.0.1")
            .set("KITE_PORT", "0")
            .set("KITE_DATABASE_URL", database_url)
            .set("KITE_AMQP_URL", amqp_url)
            .set("KITE_AMQP_PREFIX", amqp_prefix)
            .set("KITE_TEAM_ID", "default")
            .set("KITE_ADMIN_KEY", admin_key)
            .set("KITE_ALLOW_PRIVATE_PEERS", "true");
        env
    }

    /// Sets (or replaces) one variable.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
        self
    }

    /// Sets every pair, in order.
    pub fn extend<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> &mut Self {
        for (k, v) in pairs {
            self.set(k, v);
        }
        self
    }

    /// The value of one variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in the order first set.
    pub fn vars(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Where a child's output goes: stdout lines other than the ready line, and stderr (its logs;
/// `None` inherits ours).
#[derive(Clone)]
pub struct Output {
    /// Stdout lines other than the ready line.
    pub stdout: LineSink,
    /// Stderr lines, or `None` to inherit this process's stderr.
    pub stderr: Option<LineSink>,
}

impl Output {
    /// Drops stdout, inherits stderr.
    pub fn inherit() -> Self {
        Self {
            stdout: discard(),
            stderr: None,
        }
    }

    /// Both streams to one sink.
    pub fn both(sink: LineSink) -> Self {
        Self {
            stdout: sink.clone(),
            stderr: Some(sink),
        }
    }
}

/// A running `kite serve` child that printed its ready line. Killed when dropped.
pub struct KiteProcess {
    child: Child,
    ready: ReadyLine,
}

impl KiteProcess {
    /// Runs `bin serve` with `env` on top of our environment and waits (up to `timeout`) for
    /// its ready line. The child is killed if it does not become ready.
    pub async fn start(
        bin: &Path,
        env: &KiteEnv,
        output: Output,
        timeout: Duration,
    ) -> Result<Self, ProcessError> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .envs(env.vars().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if output.stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            bin: bin.display().to_string(),
            source,
        })?;
        if let (Some(sink), Some(err)) = (output.stderr, child.stderr.take()) {
            forward_lines(err, sink);
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(ProcessError::Read(std::io::Error::other(
                "stdout not piped",
            )));
        };
        let mut lines = BufReader::new(stdout).lines();
        let sink = output.stdout;
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await.map_err(ProcessError::Read)? {
                if let Some(ready) = ready::parse(&line) {
                    return Ok(Some(ready));
                }
                sink(&line);
            }
            Ok(None)
        })
        .await;
        let ready = match found {
            Ok(Ok(Some(ready))) => ready,
            Ok(Ok(None)) => {
                let status = child.wait().await.map_err(ProcessError::Read)?;
                return Err(ProcessError::Exited(status.to_string()));
            }
            Ok(Err(e)) => {
                let _ = child.kill().await;
                return Err(e);
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(ProcessError::Timeout(timeout.as_secs()));
            }
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink(&line);
            }
        });
        Ok(Self { child, ready })
    }

    /// The ready line it printed.
    pub fn ready(&self) -> &ReadyLine {
        &self.ready
    }

    /// Its base URL, when it serves HTTP.
    pub fn url(&self) -> Option<&str> {
        self.ready.url.as_deref()
    }

    /// Its process id (`None` once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some(status)` when it has exited on its own.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGKILL without waiting (for `Drop` impls outside a runtime).
    pub fn start_kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// SIGTERM, then wait up to `timeout` for the exit: `Some(success)`, or `None` when it did
    /// not exit in time (it is then killed).
    pub async fn terminate(mut self, timeout: Duration) -> Option<bool> {
        let pid = self.child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.success()),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// Sends every line of `reader` to `sink` until it closes (in a task).
pub fn forward_lines<R>(reader: R, sink: LineSink)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink(&line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_set_replaces_the_earlier_value() {
        let mut env = KiteEnv::loopback("a", "postgres://x/db", "amqp://y", "p", "k");
        env.set("KITE_PORT", "7701")
            .extend([("KITE_ROLES", "router")]);
        assert_eq!(env.get("KITE_PORT"), Some("7701"));
        assert_eq!(env.get("KITE_ROLES"), Some("router"));
        assert_eq!(
            env.vars().iter().filter(|(k, _)| k == "KITE_PORT").count(),
            1
        );
    }

    #[tokio::test]
    async fn a_child_that_exits_before_its_ready_line_is_an_error() {
        let err = KiteProcess::start(
            Path::new("/bin/false"),
            &KiteEnv::default(),
            Output::inherit(),
            Duration::from_secs(5),
        )
        .await
        .err();
        assert!(matches!(err, Some(ProcessError::Exited(_))), "{err:?}");
    }
}
