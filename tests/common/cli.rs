//! Running the `kite` binary as a person would: `kite admin`, `kite peer` and the rest,
//! with no settings from the environment or a config file unless a test gives them.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use super::Instance;

/// What one `kite` run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

impl Run {
    /// Asserts it succeeded; answers itself.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "kite failed: {self:?}");
        self
    }

    /// Its stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `kite args...` with no settings from the environment or a config file, unless `home`
/// names the directory whose `.config/kite/config.toml` it reads.
pub async fn kite_in(home: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(args)
        .env_remove("KITE_INSTANCE")
        .env_remove("KITE_API_KEY")
        .env_remove("KITE_TEAM_ID")
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run kite");
    Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn kite(args: &[&str]) -> Run {
    kite_in(std::path::Path::new("/nonexistent"), args).await
}

/// `kite admin --instance URL --api-key KEY args...` against `inst`.
pub async fn admin(inst: &Instance, args: &[&str]) -> Run {
    let mut all = vec!["admin", "--instance", &inst.url, "--api-key", &inst.key];
    all.extend_from_slice(args);
    kite(&all).await
}

/// The same with `--output json`; must succeed; answers the JSON it printed.
pub async fn admin_json(inst: &Instance, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--output", "json"]);
    admin(inst, &all).await.ok().json()
}

/// `kite peer --instance URL --api-key KEY args...` against `inst`.
pub async fn peer_cmd(inst: &Instance, args: &[&str]) -> Run {
    let mut all = vec!["peer", "--instance", &inst.url, "--api-key", &inst.key];
    all.extend_from_slice(args);
    kite(&all).await
}
