//! Running kite on a machine: `kite serve` and `kite migrate` against services they cannot
//! reach exit at once with one message naming the URL; `scripts/services` reports stopped
//! services with the command that fixes them and leaves running ones alone; a second
//! `kite demo` refuses to start beside a running one, and Ctrl-C cleans up even while the
//! demo is starting.

mod common;

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
    drop_database(&db).await;
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
    let a = Instance::start_with("from-the-env", &[("KITE_CONFIG", path)]).await;
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

// ------------------------------------------------------------------ scripts/services

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of stand-ins for every command that installs or starts a service; each one
/// records its name in `calls` and fails. Put first on PATH, they show whether the script
/// tried to change anything.
fn tripwires() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let calls = dir.path().join("calls");
    for name in [
        "apt-get",
        "apt",
        "sudo",
        "systemctl",
        "service",
        "pg_ctlcluster",
        "pg_createcluster",
        "rabbitmq-server",
        "rabbitmqctl",
        "docker",
    ] {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n",
                calls.display()
            ),
        )
        .expect("write stand-in");
        let mut perm = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
    }
    (dir, calls)
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

/// Runs `scripts/services ARGS` with the tripwires first on PATH and `env`; answers exit
/// success, stdout and stderr.
fn services(tripwires: &Path, args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        tripwires.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo().join("scripts/services"));
    cmd.args(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .env_remove("KITE_PG_HOST")
        .env_remove("KITE_PG_PORT")
        .env_remove("KITE_AMQP_HOST")
        .env_remove("KITE_AMQP_PORT")
        .env_remove("KITE_SERVICES_INSTALL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/services");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn services_script_reports_stopped_services_and_touches_nothing() {
    let (dir, calls) = tripwires();
    let (pg, amqp) = (free_port(), free_port());
    let env = [
        ("KITE_PG_PORT", pg.to_string()),
        ("KITE_AMQP_PORT", amqp.to_string()),
    ];
    let (ok, _, err) = services(dir.path(), &["postgres"], &env);
    assert!(!ok, "a stopped PostgreSQL must fail the script:\n{err}");
    assert!(err.contains(&format!("127.0.0.1:{pg}")), "{err}");
    assert!(
        err.contains(&format!("KITE_PG_PORT={pg} docker compose up -d postgres")),
        "the fix is printed:\n{err}"
    );
    let (ok, _, err) = services(dir.path(), &["rabbitmq"], &env);
    assert!(!ok, "a stopped RabbitMQ must fail the script:\n{err}");
    assert!(err.contains(&format!("127.0.0.1:{amqp}")), "{err}");
    assert!(
        err.contains(&format!(
            "KITE_AMQP_PORT={amqp} docker compose up -d rabbitmq"
        )),
        "the fix is printed:\n{err}"
    );
    // The same through the URLs kite itself reads.
    let (ok, _, err) = services(
        dir.path(),
        &["postgres"],
        &[(
            "KITE_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{pg}/kite"),
        )],
    );
    assert!(
        !ok && err.contains(&format!("127.0.0.1:{pg} (KITE_DATABASE_URL)")),
        "{err}"
    );
    assert!(
        !calls.exists(),
        "the script ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn services_script_changes_nothing_where_services_run() {
    let (dir, calls) = tripwires();
    let (ok, out, err) = services(
        dir.path(),
        &["postgres", "rabbitmq"],
        &[
            ("KITE_DATABASE_URL", format!("{}/postgres", pg_server())),
            ("KITE_AMQP_URL", amqp_url()),
        ],
    );
    assert!(ok, "services run here: the script must pass:\n{out}\n{err}");
    assert_eq!(
        out.matches("nothing to do").count(),
        2,
        "both reported as running:\n{out}"
    );
    assert!(
        !calls.exists(),
        "the script ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

// ------------------------------------------------------------------ kite demo

/// A `kite demo` child whose output lines the test reads; on drop it gets SIGINT (so it
/// stops its instances and removes its data) and, if it does not exit in time, SIGKILL.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Where a demo's databases and broker are: the test servers.
fn demo_env(cmd: &mut Command) {
    cmd.env("KITE_DATABASE_URL", format!("{}/kite", pg_server()))
        .env("KITE_AMQP_URL", amqp_url())
        .env("KITE_DB_POOL_SIZE", "4")
        .env("RUST_LOG", "warn");
}

impl Demo {
    fn start(name: &str, port_a: u16, port_b: u16) -> Self {
        let mut cmd = Command::new(kite_bin());
        cmd.args(["demo", "--name", name])
            .args(["--port-a", &port_a.to_string()])
            .args(["--port-b", &port_b.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        demo_env(&mut cmd);
        let mut child = cmd.spawn().expect("spawn kite demo");
        let (tx, lines) = mpsc::channel();
        let seen: Arc<Mutex<Vec<String>>> = Default::default();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let (tx, seen) = (tx.clone(), seen.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut v) = seen.lock() {
                        v.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Self { child, lines, seen }
    }

    /// Waits for a line containing `text` and answers it.
    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(text) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line with {text:?} in time:\n{}", self.output()),
            }
        }
    }

    fn output(&self) -> String {
        self.seen.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// SIGINT, as Ctrl-C sends it.
    fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the exit; answers its success.
    fn wait(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            if self.wait(Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Runs a demo that must refuse to start; answers its output.
fn refused_demo(name: &str, port_a: u16, port_b: u16) -> String {
    let mut cmd = Command::new(kite_bin());
    cmd.args(["demo", "--once", "--name", name])
        .args(["--port-a", &port_a.to_string()])
        .args(["--port-b", &port_b.to_string()])
        .stdin(Stdio::null());
    demo_env(&mut cmd);
    let started = Instant::now();
    let out = cmd.output().expect("run kite demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the second demo started:\n{text}");
    assert!(
        started.elapsed() < GIVE_UP,
        "it took {:?}",
        started.elapsed()
    );
    assert!(
        !text.contains("starting instance"),
        "it started something:\n{text}"
    );
    text
}

/// The databases named `{name}_a` and `{name}_b` that exist.
async fn demo_databases(name: &str) -> Vec<String> {
    let (client, conn) =
        tokio_postgres::connect(&format!("{}/postgres", pg_server()), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    let mut names: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE datname = ANY($1)",
            &[&vec![format!("{name}_a"), format!("{name}_b")]],
        )
        .await
        .expect("list databases")
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

fn demo_name() -> String {
    format!(
        "kite_setup_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_demo_refuses_to_start_and_the_first_keeps_running() {
    let name = demo_name();
    let (port_a, port_b) = (free_port(), free_port());
    let mut first = Demo::start(&name, port_a, port_b);
    first.wait_for("by invitation", Duration::from_secs(120));
    let a_url = first
        .wait_for("export A_URL=", Duration::from_secs(120))
        .split_whitespace()
        .find_map(|w| w.strip_prefix("A_URL="))
        .expect("A_URL")
        .to_owned();

    // The same ports: refused before anything is touched.
    let text = refused_demo(&name, port_a, port_b);
    assert!(text.contains(&format!("port {port_a}")), "{text}");
    assert!(text.contains("another kite demo"), "{text}");
    // Other ports, the same name (and so the same databases): refused by the demo's lock.
    let text = refused_demo(&name, free_port(), free_port());
    assert!(
        text.contains(&format!("another kite demo named {name}")),
        "{text}"
    );

    // The first demo is untouched: its instance answers and its databases are there.
    let r = reqwest::get(format!("{a_url}/health"))
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    let health: serde_json::Value = r.json().await.expect("health JSON");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
    assert_eq!(
        demo_databases(&name).await,
        [format!("{name}_a"), format!("{name}_b")]
    );

    // Ctrl-C stops it and removes its data.
    first.interrupt();
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(true),
        "{}",
        first.output()
    );
    let out = first.output();
    assert!(out.contains("stopping instance-a"), "{out}");
    assert!(out.contains("cargo install --path ."), "{out}");
    assert!(demo_databases(&name).await.is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_the_demo_starts_stops_and_removes_everything() {
    let name = demo_name();
    let (port_a, port_b) = (free_port(), free_port());
    let mut demo = Demo::start(&name, port_a, port_b);
    demo.wait_for("starting instance-a", Duration::from_secs(60));
    demo.interrupt();
    assert!(
        demo.wait(Duration::from_secs(60)).is_some(),
        "still running:\n{}",
        demo.output()
    );
    let out = demo.output();
    assert!(out.contains("interrupted: stopping"), "{out}");
    assert!(demo_databases(&name).await.is_empty(), "{out}");
    for port in [port_a, port_b] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}:\n{out}"
        );
    }
}
