//! `kite demo`: a second one refuses to start beside a running one; Ctrl-C cleans up even while starting.

use super::*;

/// A `kite demo` child whose output lines the test reads; on drop it gets SIGINT (so it
/// stops its instances and removes its data) and, if it does not exit in time, SIGKILL.
pub(super) struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Where a demo's databases and broker are: the test servers.
pub(super) fn demo_env(cmd: &mut Command) {
    cmd.env("KITE_DATABASE_URL", format!("{}/kite", pg_server()))
        .env("KITE_AMQP_URL", amqp_url())
        .env("KITE_DB_POOL_SIZE", "4")
        .env("RUST_LOG", "warn");
}

impl Demo {
    pub(super) fn start(name: &str, port_a: u16, port_b: u16) -> Self {
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
    pub(super) fn wait_for(&self, text: &str, timeout: Duration) -> String {
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

    pub(super) fn output(&self) -> String {
        self.seen.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// SIGINT, as Ctrl-C sends it.
    pub(super) fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the exit; answers its success.
    pub(super) fn wait(&mut self, timeout: Duration) -> Option<bool> {
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
pub(super) async fn demo_databases(name: &str) -> Vec<String> {
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

pub(super) fn demo_name() -> String {
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
    // The version and the revision it was built from, as `kite --version` names them.
    assert_eq!(health["version"], kite::VERSION, "{health}");
    let version = Command::new(kite_bin())
        .arg("--version")
        .output()
        .expect("kite --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kite {}", kite::VERSION)
    );
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
    // What it printed to paste works right away: bare `kite` finds this binary.
    let dir = kite_bin()
        .parent()
        .expect("the binary's directory")
        .display()
        .to_string();
    assert!(
        out.contains(&format!("export PATH=\"{dir}:$PATH\"")),
        "{out}"
    );
    assert!(
        out.contains("  kite listen --instance $B_URL --source kite --api-key $B_KEY"),
        "{out}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn demo_once_relays_prints_each_instances_urls_and_no_export_lines() {
    let name = demo_name();
    let (port_a, port_b) = (free_port(), free_port());
    let mut cmd = Command::new(kite_bin());
    cmd.args(["demo", "--once", "--name", &name])
        .args(["--port-a", &port_a.to_string()])
        .args(["--port-b", &port_b.to_string()])
        .stdin(Stdio::null());
    demo_env(&mut cmd);
    let out = cmd.output().expect("run kite demo --once");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("instance-b received:"), "{text}");
    for port in [port_a, port_b] {
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            text.contains(&format!("dashboard: {url}/ui   metrics: {url}/metrics")),
            "each instance's dashboard and metrics:\n{text}"
        );
    }
    assert!(
        !text.contains("export "),
        "no export lines for instances it stops:\n{text}"
    );
    assert!(text.contains("--once: both instances stop now"), "{text}");
    assert!(demo_databases(&name).await.is_empty(), "its data removed");
}
