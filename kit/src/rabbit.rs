//! A RabbitMQ cluster of a test's own: nodes with their own names, loopback ports and data
//! directories, joined into one cluster, killed, paused and restarted one at a time by the
//! test; the machine's own RabbitMQ is never touched. The nodes run as the `rabbitmq` user
//! (whose Erlang cookie they and `rabbitmqctl` share), from Debian's package.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the cluster could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// A command failed.
    #[error("{command}: {output}")]
    Command {
        /// What was run.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A node did not take connections in time.
    #[error("node {0} did not start: {1}")]
    NotStarted(String, String),
    /// The filesystem or a process refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where Debian's package keeps the server and its CLI.
const BIN: &str = "/usr/lib/rabbitmq/bin";
/// The `rabbitmq` user's home: its Erlang cookie.
const HOME: &str = "/var/lib/rabbitmq";
/// How long a node may take to take connections.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One node of the cluster.
struct Node {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

/// A running cluster of this test's own; its nodes are killed and their data removed when it
/// is dropped.
pub struct OwnCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

fn free_port() -> Result<u16, RabbitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}{}", std::process::id(), nanos % 1_000_000_000)
}

impl OwnCluster {
    /// Starts `n` nodes and joins them into one cluster (the first node's).
    pub async fn start(n: usize) -> Result<Self, RabbitError> {
        Self::start_on(n, None).await
    }

    /// The same, each node listening also on `extra` (a test's own network namespace's
    /// link), on the same port.
    pub async fn start_on(n: usize, extra: Option<&str>) -> Result<Self, RabbitError> {
        let id = unique();
        let dir = std::env::temp_dir().join(format!("kite-rabbit-{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let amqp_port = free_port()?;
            let dist_port = free_port()?;
            let mut conf =
                format!("listeners.tcp.local = 127.0.0.1:{amqp_port}\nloopback_users = none\n");
            if let Some(a) = extra {
                conf.push_str(&format!("listeners.tcp.link = {a}:{amqp_port}\n"));
            }
            std::fs::write(node_dir.join("rabbitmq.conf"), conf)?;
            std::fs::write(
                node_dir.join("rabbitmq-env.conf"),
                "ERL_EPMD_ADDRESS=127.0.0.1\n",
            )?;
            std::fs::write(node_dir.join("enabled_plugins"), "[].\n")?;
            nodes.push(Node {
                name: format!("kite{id}n{i}@localhost"),
                amqp_port,
                dist_port,
                dir: node_dir,
                child: None,
            });
        }
        run(
            "chown",
            &["-R", "rabbitmq:rabbitmq", &dir.display().to_string()],
        )
        .await?;
        let mut me = Self { dir, nodes };
        for i in 0..n {
            me.spawn(i)?;
        }
        for i in 0..n {
            me.wait_up(i).await?;
        }
        let first = me.nodes[0].name.clone();
        for i in 1..n {
            let name = me.nodes[i].name.clone();
            ctl(&name, &["stop_app"]).await?;
            ctl(&name, &["join_cluster", &first]).await?;
            ctl(&name, &["start_app"]).await?;
        }
        for i in 0..n {
            ctl(&me.nodes[i].name, &["await_startup"]).await?;
        }
        Ok(me)
    }

    /// The nodes' AMQP URLs, comma-separated (what `KITE_AMQP_URL` takes for a cluster).
    pub fn urls(&self) -> String {
        self.urls_at("127.0.0.1")
    }

    /// The same at another address the nodes listen on.
    pub fn urls_at(&self, address: &str) -> String {
        self.nodes
            .iter()
            .map(|n| format!("amqp://guest:guest@{address}:{}/%2f", n.amqp_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The name of node `i` (from 0).
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The nodes the client connections named `name` are on (kite names its connections
    /// after its AMQP prefix), as node `i` lists the cluster's connections.
    pub async fn connections(&self, i: usize, name: &str) -> Result<Vec<String>, RabbitError> {
        let out = ctl_output(
            &self.nodes[i].name,
            &[
                "-q",
                "list_connections",
                "--no-table-headers",
                "pid",
                "client_properties",
            ],
        )
        .await?;
        // A pid is `<node@host.1.2.3>`: the node is its name part.
        Ok(crate::faults::connections_named(&out, name)
            .into_iter()
            .filter_map(|pid| {
                let (node, host) = pid.trim_start_matches('<').split_once('@')?;
                Some(format!("{node}@{}", host.split('.').next()?))
            })
            .collect())
    }

    /// SIGKILLs node `i` (its Erlang VM): it is gone at once, as in a crash.
    pub async fn kill(&mut self, i: usize) -> Result<(), RabbitError> {
        self.signal(i, "KILL").await?;
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        Ok(())
    }

    /// SIGSTOPs node `i`: it holds its connections and answers nothing.
    pub async fn pause(&self, i: usize) -> Result<(), RabbitError> {
        self.signal(i, "STOP").await
    }

    /// SIGCONTs a paused node `i`.
    pub async fn resume(&self, i: usize) -> Result<(), RabbitError> {
        self.signal(i, "CONT").await
    }

    /// Starts node `i` again (after [`OwnCluster::kill`]) with its data: it rejoins the
    /// cluster. Answers once it takes connections.
    pub async fn restart(&mut self, i: usize) -> Result<(), RabbitError> {
        self.spawn(i)?;
        self.wait_up(i).await?;
        ctl(&self.nodes[i].name, &["await_startup"]).await
    }

    fn pid(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.nodes[i].dir.join("pid"))
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    async fn signal(&self, i: usize, sig: &str) -> Result<(), RabbitError> {
        let pid = self.pid(i).ok_or_else(|| {
            RabbitError::NotStarted(self.nodes[i].name.clone(), "no pid file".into())
        })?;
        run("kill", &[&format!("-{sig}"), &pid]).await
    }

    fn spawn(&mut self, i: usize) -> Result<(), RabbitError> {
        let node = &mut self.nodes[i];
        let _ = std::fs::remove_file(node.dir.join("pid"));
        let path = |p: &str| node.dir.join(p).display().to_string();
        let log = std::fs::File::create(node.dir.join("out.log"))?;
        let child = tokio::process::Command::new("runuser")
            .args(["-u", "rabbitmq", "--", "env"])
            .arg(format!("HOME={HOME}"))
            .arg(format!("RABBITMQ_NODENAME={}", node.name))
            .arg(format!("RABBITMQ_DIST_PORT={}", node.dist_port))
            .arg(format!("RABBITMQ_CONFIG_FILE={}", path("rabbitmq.conf")))
            .arg(format!(
                "RABBITMQ_CONF_ENV_FILE={}",
                path("rabbitmq-env.conf")
            ))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={}",
                path("enabled_plugins")
            ))
            .arg(format!("RABBITMQ_MNESIA_BASE={}", path("mnesia")))
            .arg(format!("RABBITMQ_LOG_BASE={}", path("log")))
            .arg(format!("RABBITMQ_PID_FILE={}", path("pid")))
            .arg("ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}")
            .arg(Path::new(BIN).join("rabbitmq-server"))
            .current_dir(HOME)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    async fn wait_up(&self, i: usize) -> Result<(), RabbitError> {
        let node = &self.nodes[i];
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", node.amqp_port))
                .await
                .is_ok()
                && self.pid(i).is_some()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let out = std::fs::read_to_string(node.dir.join("out.log")).unwrap_or_default();
        let tail: String = out
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(RabbitError::NotStarted(node.name.clone(), tail))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.pid(i) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rabbitmqctl -n node args...` as the `rabbitmq` user (its cookie).
async fn ctl(node: &str, args: &[&str]) -> Result<(), RabbitError> {
    ctl_output(node, args).await.map(|_| ())
}

/// The same, answering what it printed.
async fn ctl_output(node: &str, args: &[&str]) -> Result<String, RabbitError> {
    let ctl = Path::new(BIN).join("rabbitmqctl").display().to_string();
    let mut all = vec![
        "-u".to_string(),
        "rabbitmq".into(),
        "--".into(),
        "env".into(),
        format!("HOME={HOME}"),
        ctl,
        "-n".into(),
        node.to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    output("runuser", &refs).await
}

async fn run(program: &str, args: &[&str]) -> Result<(), RabbitError> {
    output(program, args).await.map(|_| ())
}

async fn output(program: &str, args: &[&str]) -> Result<String, RabbitError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(HOME)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(RabbitError::Command {
        command: format!("{program} {}", args.join(" ")),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}
