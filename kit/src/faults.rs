//! Fault injectors for tests and chaos runs, on this machine's services.

use crate::cmd::CommandError;

/// Why a fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// `rabbitmqctl` could not be run or failed.
    #[error("rabbitmqctl: {0}")]
    Rabbitmqctl(#[from] CommandError),
    /// Postgres refused.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The pids of the AMQP connections whose `connection_name` is `name` (kite names its
/// connections after its AMQP prefix), from the default (tab-separated) output of
/// `rabbitmqctl list_connections pid client_properties`. The JSON formatter prints pids as
/// `#PID<...>`, which `close_connection` does not accept.
pub fn connections_named(list_output: &str, name: &str) -> Vec<String> {
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    list_output
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(pid, props)| pid.starts_with('<') && props.contains(&needle))
        .map(|(pid, _)| pid.to_owned())
        .collect()
}

/// `rabbitmqctl` for the machine's broker (`None`) or a node of a test's own cluster.
fn rabbitmqctl(node: Option<&str>) -> tokio::process::Command {
    match node {
        Some(n) => crate::rabbit::rabbitmqctl(n),
        None => tokio::process::Command::new("rabbitmqctl"),
    }
}

/// The broker's client connections as `rabbitmqctl list_connections pid client_properties`
/// prints them (read with [`connections_named`]), asked of the machine's broker (`None`)
/// or of a node of a test's own cluster.
pub async fn list_connections(node: Option<&str>) -> Result<String, CommandError> {
    crate::cmd::output(rabbitmqctl(node).args([
        "-q",
        "list_connections",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]))
    .await
}

/// Closes, from the broker's side, every client connection named `name` (the machine's
/// broker for `None`, else a node of a test's own cluster); answers how many.
pub async fn close_connections(
    node: Option<&str>,
    name: &str,
    reason: &str,
) -> Result<usize, CommandError> {
    let list = list_connections(node).await?;
    let mut closed = 0;
    for pid in connections_named(&list, name) {
        let ok = crate::cmd::run(rabbitmqctl(node).args(["-q", "close_connection", &pid, reason]))
            .await
            .is_ok();
        closed += usize::from(ok);
    }
    Ok(closed)
}

/// Closes, from the machine's broker's side, every AMQP connection named `name`; answers
/// how many.
pub async fn close_amqp_connections(name: &str, reason: &str) -> Result<usize, FaultError> {
    Ok(close_connections(None, name, reason).await?)
}

/// Terminates every backend connected to database `db` on the server at `server_url`
/// (a URL to any database there, such as `postgres`); answers how many.
pub async fn terminate_db_connections(server_url: &str, db: &str) -> Result<i64, FaultError> {
    let (client, conn) = tokio_postgres::connect(server_url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await?;
    drop(client);
    let _ = task.await;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_connections_by_name() {
        let out = "<rabbit@h.1.2>\t[{\"connection_name\",\"kite.a\"}]\n<rabbit@h.1.3>\t[{\"connection_name\",\"kite.ab\"}]\n";
        assert_eq!(connections_named(out, "kite.a"), vec!["<rabbit@h.1.2>"]);
    }
}
