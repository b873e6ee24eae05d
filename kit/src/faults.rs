//! Fault injectors for tests and chaos runs, on this machine's services.

/// Why a fault could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// `rabbitmqctl` could not be run or failed.
    #[error("rabbitmqctl: {0}")]
    Rabbitmqctl(String),
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

/// Closes, from the broker side, every AMQP connection named `name`; answers how many.
pub async fn close_amqp_connections(name: &str, reason: &str) -> Result<usize, FaultError> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| FaultError::Rabbitmqctl(e.to_string()))?;
    if !out.status.success() {
        return Err(FaultError::Rabbitmqctl(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut closed = 0;
    for pid in connections_named(&text, name) {
        let ok = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", &pid, reason])
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        closed += usize::from(ok);
    }
    Ok(closed)
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
