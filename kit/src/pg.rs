//! A Postgres server of a test's own: `initdb` into a temporary directory, its own loopback
//! port, started, restarted (`pg_ctl restart -m fast|immediate`) and stopped by the test,
//! never touching the machine's server. Postgres refuses to run as root: as root, the
//! server runs as the `postgres` user (`runuser`).

use std::path::{Path, PathBuf};

use crate::cmd::{self, CommandError};

/// Why the server could not be made, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No Postgres binaries were found.
    #[error("no Postgres server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")]
    NoBinaries,
    /// A command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The filesystem refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a restart stops the server first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Connections are closed and the server shuts down cleanly.
    Fast,
    /// The server is stopped at once; it recovers from its WAL when it starts.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running Postgres server of this test's own; stopped and removed when dropped.
pub struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest installed server's binaries.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl OwnPostgres {
    /// Makes a cluster under a new temporary directory and starts it on a free loopback
    /// port, with trust authentication for `postgres`.
    pub async fn start() -> Result<Self, PgError> {
        Self::start_on(&[]).await
    }

    /// The same, listening also on `extra` addresses (a test's own network namespace's
    /// link), whose clients it trusts too.
    pub async fn start_on(extra: &[&str]) -> Result<Self, PgError> {
        let bin = binaries().ok_or(PgError::NoBinaries)?;
        let dir = std::env::temp_dir().join(format!("kite-pg-{:x}", cmd::unique()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        let me = Self {
            bin,
            port: cmd::free_ports(1)?[0],
            dir,
            as_postgres,
        };
        if as_postgres {
            me.run(
                "chown",
                &["-R", "postgres:postgres", &me.path(&me.dir)],
                false,
            )
            .await?;
        }
        let data = me.path(&me.data());
        me.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
            true,
        )
        .await?;
        // Enough connections for an instance's pools, fsync off (a test's data: a restart,
        // even immediate, keeps what the OS holds), sockets in its own directory. Commits
        // stay synchronous: an immediate stop would otherwise lose commits kite was told
        // had happened (and answered 202 for).
        let mut listen = vec!["127.0.0.1"];
        listen.extend_from_slice(extra);
        if !extra.is_empty() {
            use std::io::Write as _;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(me.data().join("pg_hba.conf"))?;
            for a in extra {
                writeln!(hba, "host all all {a}/30 trust")?;
            }
        }
        std::fs::write(
            me.data().join("postgresql.auto.conf"),
            format!(
                "port = {}\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\n\
                 max_connections = 100\nfsync = off\nfull_page_writes = off\n",
                me.port,
                listen.join(","),
                me.dir.display()
            ),
        )?;
        me.pg_ctl(&["start", "-w", "-t", "60"]).await?;
        Ok(me)
    }

    /// Its URL, without a database name (`postgres://postgres@127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// Its URL at another of its addresses.
    pub fn url_at(&self, address: &str) -> String {
        format!("postgres://postgres@{address}:{}", self.port)
    }

    /// Restarts it, stopping it as `mode` says; answers once it takes connections again.
    pub async fn restart(&self, mode: StopMode) -> Result<(), PgError> {
        self.pg_ctl(&["restart", "-w", "-t", "60", "-m", mode.as_str()])
            .await
    }

    /// Stops it as `mode` says (it stays down until [`OwnPostgres::begin`]).
    pub async fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", mode.as_str()])
            .await
    }

    /// Starts it again after [`OwnPostgres::stop`].
    pub async fn begin(&self) -> Result<(), PgError> {
        self.pg_ctl(&["start", "-w", "-t", "60"]).await
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<(), PgError> {
        let data = self.path(&self.data());
        let log = self.path(&self.dir.join("server.log"));
        let mut all = vec!["-D", data.as_str(), "-l", log.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all, true).await
    }

    /// Runs `program` (one of the server's binaries when `server`), as `postgres` when this
    /// process is root.
    async fn run(&self, program: &str, args: &[&str], server: bool) -> Result<(), PgError> {
        let (path, user) = if server {
            (
                self.bin.join(program),
                self.as_postgres.then_some("postgres"),
            )
        } else {
            (PathBuf::from(program), None)
        };
        Ok(cmd::run(cmd::as_user(user, path).args(args)).await?)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // Stopped at once (its data is thrown away), then removed.
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate", "-w", "-t", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
