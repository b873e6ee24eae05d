//! The system's commands the fault kit runs (`ip`, `initdb`/`pg_ctl`, `rabbitmqctl`, `kill`,
//! `chown`), as another user when a server must not run as root: one error that carries
//! what a failing command printed, and the loopback ports and ids of a test's own servers.

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::process::Command;

/// A command that could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It ran and failed.
    #[error("{command}: {output}")]
    Failed {
        /// What was run.
        command: String,
        /// What it printed (stdout, then stderr).
        output: String,
    },
    /// It could not be run.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `program` as a command, run as `user` (through `runuser`) when one is given.
pub fn as_user(user: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs `cmd` (stdin closed) and answers what it printed on stdout; a failure carries
/// both outputs.
pub async fn output(cmd: &mut Command) -> Result<String, CommandError> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let std = cmd.as_std();
    let command = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    Err(CommandError::Failed {
        command,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Runs `cmd` as [`output`] does, ignoring what it printed.
pub async fn run(cmd: &mut Command) -> Result<(), CommandError> {
    output(cmd).await.map(|_| ())
}

/// `n` distinct loopback ports nobody listens on now (all held while they are chosen).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A number unlikely to repeat across processes and runs: this process' id mixed with the
/// clock's nanoseconds (names of a test's own servers and namespaces).
pub fn unique() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    (u64::from(std::process::id()) << 32) ^ nanos
}
