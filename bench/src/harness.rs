//! What `run` and `chaos` share: finding and starting `kite serve` children, waiting for their
//! ready line, capturing their output, admin API calls, `psql`, and cleaning up databases and
//! AMQP names on the shared servers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

use tokio::process::Command;

/// Finds the kite binary: the explicit path, else `target/release/kite` or `target/debug/kite`
/// under the current directory, then under the workspace this crate was built from.
pub fn resolve_kite_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("kite binary {} not found", p.display());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for root in [PathBuf::from("."), workspace] {
        for profile in ["release", "debug"] {
            let p = root.join("target").join(profile).join("kite");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("no kite binary in target/release or target/debug: run `cargo build --release` first, or pass --kite-bin")
}

/// Replaces the database name of a Postgres URL (keeping any `?query`).
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The RabbitMQ virtual host of an AMQP URL (`/` when the URL names none).
pub fn amqp_vhost(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or("");
    match rest.split_once('/') {
        Some((_, path)) if !path.is_empty() => percent_decode(path),
        _ => "/".to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub use kite_kit::faults::{close_amqp_connections as close_amqp, connections_named};
pub use kite_kit::process::{KiteEnv, KiteProcess, LineSink, Output, READY_TIMEOUT};

/// Peak resident set size of a process in MiB (`VmHWM` in `/proc/<pid>/status`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A fresh admin key in kite's format (`kite_` + 8 + `_` + 32 characters).
pub fn random_admin_key() -> String {
    format!(
        "kite_{}_{}",
        crate::random_hex(8),
        crate::random_hex(16) + &crate::random_hex(16)
    )
}

/// A fresh federation token in kite's format (`kfed_` + 43 characters).
pub fn random_fed_token() -> String {
    format!("kfed_{}", crate::random_hex(22) + &crate::random_hex(21))
}

/// A sink that prints each line on our stderr after `prefix`.
pub fn stderr_sink(prefix: &str) -> LineSink {
    let prefix = prefix.to_owned();
    Arc::new(move |line: &str| eprintln!("{prefix}{line}"))
}

/// Removes ANSI colour sequences (`ESC [ ... m`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of one process family (label before any `#generation`) in a [`LogFile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// All lines.
    pub lines: u64,
    /// Lines at level ERROR.
    pub errors: u64,
    /// Lines at level WARN.
    pub warnings: u64,
    /// Lines that report a panic.
    pub panics: u64,
}

/// One log file that several children write to, each line prefixed with the child's label;
/// counts ERROR, WARN and panic lines per label.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    counts: Mutex<BTreeMap<String, LogCounts>>,
}

impl LogFile {
    /// Creates (truncates) the file.
    pub fn create(path: PathBuf) -> Result<Arc<Self>> {
        let file = std::fs::File::create(&path)
            .with_context(|| format!("creating log file {}", path.display()))?;
        Ok(Arc::new(Self {
            path,
            file: Mutex::new(file),
            counts: Mutex::new(BTreeMap::new()),
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line as `label line` and counts it under the label up to any `#`.
    pub fn write(&self, label: &str, line: &str) {
        let line = strip_ansi(line);
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let family = label.split('#').next().unwrap_or(label).to_owned();
            let c = counts.entry(family).or_default();
            c.lines += 1;
            if line.contains(" ERROR ") {
                c.errors += 1;
            } else if line.contains(" WARN ") {
                c.warnings += 1;
            }
            if line.contains("panicked at") {
                c.panics += 1;
            }
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written is not worth failing the run for.
        let _ = writeln!(f, "{label} {line}");
    }

    /// Writes a line of our own (`kite-bench ...`), not counted.
    pub fn note(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "kite-bench {line}");
    }

    /// A [`LineSink`] writing under `label`.
    pub fn sink(self: &Arc<Self>, label: String) -> LineSink {
        let me = self.clone();
        Arc::new(move |line: &str| me.write(&label, line))
    }

    /// The counts so far, by label family.
    pub fn counts(&self) -> BTreeMap<String, LogCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Runs one SQL statement with `psql` (unaligned, tuples only) and answers its output, trimmed.
pub async fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running psql")?;
    if !out.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether an AMQP name belongs to `prefix` (`prefix` itself or `prefix.*`).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Drops `databases` on the server of `database_url` and deletes the queues named under any of
/// `prefixes`; reports on stderr what it could not remove and which exchanges stay.
pub async fn cleanup(database_url: &str, amqp_url: &str, databases: &[&str], prefixes: &[&str]) {
    let admin_url = with_database(database_url, "postgres");
    for db in databases {
        let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
        if let Err(e) = psql(&admin_url, &sql).await {
            eprintln!("kite-bench: could not drop database {db}: {e:#}");
        }
    }

    let vhost = amqp_vhost(amqp_url);
    let ours = |name: &str| prefixes.iter().any(|p| has_prefix(name, p));
    match rabbitmq_list(&vhost, "list_queues").await {
        Ok(queues) => {
            for q in queues.iter().filter(|q| ours(q)) {
                let out = Command::new("rabbitmqctl")
                    .args(["-q", "-p", &vhost, "delete_queue", q])
                    .stdin(Stdio::null())
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => eprintln!(
                        "kite-bench: could not delete queue {q}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => eprintln!("kite-bench: could not delete queue {q}: {e}"),
                }
            }
        }
        Err(e) => eprintln!(
            "kite-bench: could not list queues ({e:#}); delete those named {}.* by hand",
            prefixes.join(".*, ")
        ),
    }
    match rabbitmq_list(&vhost, "list_exchanges").await {
        Ok(exchanges) => {
            let left: Vec<_> = exchanges.into_iter().filter(|x| ours(x)).collect();
            if !left.is_empty() {
                eprintln!(
                    "kite-bench: exchanges left on vhost {vhost} (empty, harmless; rabbitmqctl cannot delete them): {}",
                    left.join(" ")
                );
            }
        }
        Err(e) => eprintln!("kite-bench: could not list exchanges ({e:#})"),
    }
}

/// Names from `rabbitmqctl -q -p VHOST <command> name`.
pub async fn rabbitmq_list(vhost: &str, command: &str) -> Result<Vec<String>> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-p", vhost, command, "name"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {command} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Closes, from the broker side, every AMQP connection named `name` (kite names its
/// connections with its AMQP prefix). Answers how many were closed.
pub async fn close_amqp_connections(name: &str, reason: &str) -> Result<usize> {
    Ok(close_amqp(name, reason).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let base = "postgres://postgres@127.0.0.1:5432";
        assert_eq!(with_database(base, "x"), format!("{base}/x"));
        assert_eq!(with_database(&format!("{base}/"), "x"), format!("{base}/x"));
        assert_eq!(
            with_database(&format!("{base}/kite"), "x"),
            format!("{base}/x")
        );
        assert_eq!(
            with_database(&format!("{base}/kite?sslmode=disable"), "x"),
            format!("{base}/x?sslmode=disable")
        );
        assert_eq!(
            with_database(&format!("{base}?sslmode=disable"), "x"),
            format!("{base}/x?sslmode=disable")
        );
    }

    #[test]
    fn vhosts() {
        assert_eq!(amqp_vhost("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(amqp_vhost("amqp://guest:guest@127.0.0.1:5672"), "/");
        assert_eq!(amqp_vhost("amqp://h:5672/"), "/");
        assert_eq!(amqp_vhost("amqp://h:5672/bench?heartbeat=5"), "bench");
    }

    #[test]
    fn key_and_token_shapes() {
        assert_eq!(random_admin_key().len(), "kite_".len() + 8 + 1 + 32);
        assert_eq!(random_fed_token().len(), 5 + 43);
    }

    #[test]
    fn prefixes() {
        assert!(has_prefix("kitechaos.x.a", "kitechaos.x.a"));
        assert!(has_prefix("kitechaos.x.a.events", "kitechaos.x.a"));
        assert!(!has_prefix("kitechaos.x.ab.events", "kitechaos.x.a"));
        assert!(!has_prefix("other", "kitechaos.x.a"));
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x"),
            "2026 ERROR x"
        );
    }

    #[test]
    fn finds_named_connections() {
        let out = "pid\tclient_properties\n\
            <rabbit@h.1.2.0>\t[{\"capabilities\",[]},{\"connection_name\",\"kitechaos.r.a\"},{\"product\",\"lapin\"}]\n\
            <rabbit@h.1.3.0>\t[{\"connection_name\",\"kitechaos.r.b\"}]\n\
            <rabbit@h.1.4.0>\t[{\"connection_name\",\"kitechaos.r.a\"}]\n";
        assert_eq!(
            connections_named(out, "kitechaos.r.a"),
            vec!["<rabbit@h.1.2.0>", "<rabbit@h.1.4.0>"]
        );
        assert!(connections_named(out, "kitechaos.r").is_empty());
    }

    #[test]
    fn log_file_counts_levels_by_family() {
        let path =
            std::env::temp_dir().join(format!("kite-bench-test-{}.log", crate::random_hex(8)));
        let log = LogFile::create(path.clone()).expect("log");
        log.write("a-router#1", "2026-01-01T00:00:00Z ERROR kite_router: boom");
        log.write("a-router#2", "2026-01-01T00:00:00Z  WARN kite_router: hmm");
        log.write("b#1", "thread 'main' panicked at src/x.rs:1:1");
        let c = log.counts();
        assert_eq!(c["a-router"].lines, 2);
        assert_eq!(c["a-router"].errors, 1);
        assert_eq!(c["a-router"].warnings, 1);
        assert_eq!(c["b"].panics, 1);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("a-router#1 2026"));
        let _ = std::fs::remove_file(path);
    }
}
