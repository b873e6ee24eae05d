//! Running kite on a machine: `kite serve` and `kite migrate` against services they cannot
//! reach exit at once with one message naming the URL; `scripts/services` reports stopped
//! services with the command that fixes them and leaves running ones alone; a second
//! `kite demo` refuses to start beside a running one, and Ctrl-C cleans up even while the
//! demo is starting.

use crate::common;

mod compose;
mod demo;
mod readme;
mod services;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How long a command pointed at a service it cannot reach may take to give up.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Runs `kite ARGS` with `env` until it exits (or `GIVE_UP` passes: then the test fails).
/// Answers its exit success and stderr.
async fn kite_exit(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(kite_bin());
    cmd.args(args)
        .env("KITE_PORT", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(GIVE_UP, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kite {args:?} still running after {GIVE_UP:?}"))
        .expect("kite runs");
    assert!(started.elapsed() < GIVE_UP);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one stderr line that names `needle`; fails unless there is exactly one and it is
/// kite's error line.
fn one_error_naming(stderr: &str, needle: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(
        lines.len(),
        1,
        "one line should name {needle}, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("kite: error: "),
        "not an error line: {}",
        lines[0]
    );
    lines[0].to_owned()
}

#[tokio::test]
async fn serve_and_migrate_exit_naming_an_unreachable_database() {
    let port = free_port();
    let url = format!("postgres://postgres:s3cret@127.0.0.1:{port}/kite");
    let env = [("KITE_DATABASE_URL", url.clone())];
    let (serve, migrate) = tokio::join!(
        kite_exit(&["serve", "--dev"], &env),
        kite_exit(&["migrate"], &env)
    );
    for (what, (ok, stderr)) in [("serve", serve), ("migrate", migrate)] {
        assert!(!ok, "kite {what} should fail:\n{stderr}");
        let line = one_error_naming(&stderr, &format!("127.0.0.1:{port}"));
        assert!(line.contains("Postgres"), "{line}");
        assert!(line.contains("KITE_DATABASE_URL"), "{line}");
        assert!(!stderr.contains("s3cret"), "the password leaked:\n{stderr}");
    }
}

#[tokio::test]
async fn serve_exits_naming_an_unreachable_broker() {
    let port = free_port();
    let db = format!(
        "kite_setup_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (ok, stderr) = kite_exit(
        &["serve", "--dev"],
        &[
            ("KITE_DATABASE_URL", format!("{}/{db}", pg_server())),
            (
                "KITE_AMQP_URL",
                format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f"),
            ),
        ],
    )
    .await;
    drop_database(&pg_server(), &db).await;
    assert!(!ok, "kite serve should fail:\n{stderr}");
    let line = one_error_naming(&stderr, &format!("127.0.0.1:{port}"));
    assert!(line.contains("RabbitMQ"), "{line}");
    assert!(line.contains("KITE_AMQP_URL"), "{line}");
    assert!(!stderr.contains("s3cret"), "the password leaked:\n{stderr}");
}

#[tokio::test]
async fn serve_refuses_invalid_settings_naming_them() {
    // Nothing is clamped: each of these is an error naming the setting, before kite
    // connects to anything (so no services are needed).
    let dir = tempdir::Dir::new();
    let file = dir.path().join("kite.env");
    std::fs::write(
        &file,
        "# tuning\nKITE_SWEEP_GRACE_MS=100\nKITE_HEADER_TIMEOUT_MS=5\n",
    )
    .expect("write");
    let file = file.to_str().expect("utf-8").to_owned();
    /// Arguments, environment, and what the error must name.
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, String)>, &'a str);
    let cases: [Case; 5] = [
        (
            &["serve", "--dev", "--retry-base-ms", "0"],
            vec![],
            "--retry-base-ms",
        ),
        (
            &["serve", "--dev"],
            vec![("KITE_MAX_CONNECTIONS", "0".into())],
            "--max-connections",
        ),
        (&["serve", "--dev", "--config", &file], vec![], "kite.env:3"),
        (
            &[
                "serve",
                "--dev",
                "--retry-base-ms",
                "5000",
                "--retry-max-delay-ms",
                "10",
            ],
            vec![],
            "KITE_RETRY_MAX_DELAY_MS",
        ),
        (
            &["serve", "--dev"],
            vec![("KITE_CONFIG", format!("{file}.missing"))],
            "KITE_CONFIG",
        ),
    ];
    for (args, env, needle) in cases {
        let (ok, stderr) = kite_exit(args, &env).await;
        assert!(!ok, "kite {args:?} should fail:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "kite {args:?} {env:?}: no {needle}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn a_settings_file_fills_what_the_environment_leaves_unset() {
    let dir = tempdir::Dir::new();
    let file = dir.path().join("kite.env");
    std::fs::write(
        &file,
        "KITE_RATE_TEAM_PER_SEC=1\nKITE_RATE_TEAM_BURST=2\nKITE_INSTANCE_ID=from-the-file\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    // The binary reads the settings file: a process of its own.
    let a = Instance::process_with("from-the-env", &[("KITE_CONFIG", path)]).await;
    // The environment wins over the file: the instance is the one the environment names.
    let health = a
        .http
        .get(format!("{}/health", a.url))
        .send()
        .await
        .expect("health");
    assert_eq!(
        health
            .headers()
            .get(kite_wire::signature::INSTANCE_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("from-the-env")
    );
    // The file's team rate (a burst of 2) holds where the environment says nothing.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (s, _) = a
            .hook(
                "stripe",
                &stripe_event(&format!("evt_file_{i}"), "charge.succeeded"),
            )
            .await;
        statuses.push(s);
    }
    assert_eq!(&statuses[..2], [202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

#[test]
fn version_names_the_revision_and_completions_cover_every_command() {
    let out = Command::new(kite_bin())
        .arg("--version")
        .output()
        .expect("kite --version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        version.starts_with(&format!("kite {} (", env!("CARGO_PKG_VERSION")))
            && version.trim_end().ends_with(')'),
        "{version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(kite_bin())
            .args(["completions", shell])
            .output()
            .expect("kite completions");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !script.is_empty(), "{shell}");
        for word in ["serve", "demo", "listen", "admin", "port-a"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

/// A scratch directory removed on drop.
mod tempdir {
    /// The directory.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("kite-setup-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
