//! A RabbitMQ cluster of a test's own: nodes with their own names, loopback ports and data
//! directories, joined into one cluster, killed, paused and restarted one at a time by the
//! test; the machine's own RabbitMQ is never touched. The nodes run as the `rabbitmq` user
//! (whose Erlang cookie they and `rabbitmqctl` share), from Debian's package.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{self, CommandError};

/// Why the cluster could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// A command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A node did not take connections in time.
    #[error("node {0} did not start: {1}")]
    NotStarted(String, String),
    /// There is no such node (a cluster has at least one, numbered from 0).
    #[error("no node {0}")]
    NoNode(usize),
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

impl OwnCluster {
    /// Starts `n` nodes and joins them into one cluster (the first node's).
    pub async fn start(n: usize) -> Result<Self, RabbitError> {
        Self::start_on(n, None).await
    }

    /// The same, each node listening also on `extra` (a test's own network namespace's
    /// link), on the same port.
    pub async fn start_on(n: usize, extra: Option<&str>) -> Result<Self, RabbitError> {
        if n == 0 {
            return Err(RabbitError::NoNode(0));
        }
        let id = format!("{:x}", cmd::unique());
        let dir = std::env::temp_dir().join(format!("kite-rabbit-{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let ports = cmd::free_ports(2)?;
            let (amqp_port, dist_port) = (ports[0], ports[1]);
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
        cmd::run(
            tokio::process::Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(&dir),
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
    pub fn node_name(&self, i: usize) -> Option<&str> {
        self.nodes.get(i).map(|n| n.name.as_str())
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, i: usize) -> Result<&Node, RabbitError> {
        self.nodes.get(i).ok_or(RabbitError::NoNode(i))
    }

    /// The nodes the client connections named `name` are on (kite names its connections
    /// after its AMQP prefix), as node `i` lists the cluster's connections.
    pub async fn connections(&self, i: usize, name: &str) -> Result<Vec<String>, RabbitError> {
        let out = crate::faults::list_connections(Some(&self.node(i)?.name)).await?;
        // A pid is `<node@host.1.2.3>`: the node is its name part.
        Ok(crate::faults::connections_named(&out, name)
            .into_iter()
            .filter_map(|pid| {
                let (node, host) = pid.trim_start_matches('<').split_once('@')?;
                Some(format!("{node}@{}", host.split('.').next()?))
            })
            .collect())
    }

    /// Closes, from node `i`'s side, every client connection named `name` on the
    /// cluster; answers how many.
    pub async fn close_connections(
        &self,
        i: usize,
        name: &str,
        reason: &str,
    ) -> Result<usize, RabbitError> {
        Ok(crate::faults::close_connections(Some(&self.node(i)?.name), name, reason).await?)
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
        self.node(i)?;
        self.spawn(i)?;
        self.wait_up(i).await?;
        ctl(&self.nodes[i].name, &["await_startup"]).await
    }

    fn pid(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.nodes.get(i)?.dir.join("pid"))
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    async fn signal(&self, i: usize, sig: &str) -> Result<(), RabbitError> {
        let node = self.node(i)?;
        let pid = self
            .pid(i)
            .ok_or_else(|| RabbitError::NotStarted(node.name.clone(), "no pid file".into()))?;
        Ok(cmd::run(tokio::process::Command::new("kill").args([&format!("-{sig}"), &pid])).await?)
    }

    fn spawn(&mut self, i: usize) -> Result<(), RabbitError> {
        let node = &mut self.nodes[i];
        let _ = std::fs::remove_file(node.dir.join("pid"));
        let path = |p: &str| node.dir.join(p).display().to_string();
        let log = std::fs::File::create(node.dir.join("out.log"))?;
        let child = cmd::as_user(Some("rabbitmq"), "env")
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
    Ok(cmd::run(rabbitmqctl(node).args(args)).await?)
}

/// `rabbitmqctl` of Debian's package, run as the `rabbitmq` user with its home (its
/// Erlang cookie), against `node`.
pub(crate) fn rabbitmqctl(node: &str) -> tokio::process::Command {
    let mut c = cmd::as_user(Some("rabbitmq"), "env");
    c.arg(format!("HOME={HOME}"))
        .arg(Path::new(BIN).join("rabbitmqctl"))
        .args(["-n", node])
        .current_dir(HOME);
    c
}
