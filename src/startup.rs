//! Reaching Postgres and RabbitMQ at start: `kite serve`, `kite migrate` and `kite demo` try
//! for a while, then exit with one error that names the URL (never its password).

use std::time::Duration;

use kite_bus::Bus;
use kite_store::Store;

/// How long `kite serve`, `kite migrate` and `kite demo` keep trying to reach Postgres and
/// RabbitMQ at start before they exit with one error naming the URL.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

/// `url` with its password replaced by `***`, for messages: the userinfo of a URL
/// (`scheme://user:password@host`) and any `password=` parameter (a query string or a
/// libpq `key=value` string).
pub fn redact(url: &str) -> String {
    // A list of URLs (a cluster's nodes): each on its own. Only a comma that starts
    // another `scheme://` separates: one inside a password or a multi-host authority
    // (`postgres://u:p@h1,h2/db`) does not.
    let parts = url_list(url);
    if parts.len() > 1 {
        return parts.into_iter().map(redact).collect::<Vec<_>>().join(",");
    }
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..]
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace())
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// `url` split at each comma or white space followed by a `scheme://` (the URLs of a list,
/// as the broker URL takes them).
fn url_list(url: &str) -> Vec<&str> {
    let starts_url = |s: &str| {
        s.trim_start().split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    };
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in url.char_indices() {
        if (c == ',' || c.is_whitespace()) && starts_url(&url[i + 1..]) {
            let piece = url[start..i].trim();
            if !piece.is_empty() {
                out.push(piece);
            }
            start = i + 1;
        }
    }
    let last = url[start..].trim();
    if !last.is_empty() || out.is_empty() {
        out.push(last);
    }
    out
}

/// Tries `attempt` until it succeeds, answers an error `retry` says is not worth retrying, or
/// [`STARTUP_PATIENCE`] is spent (an attempt that hangs is cut off then). The error names
/// `service` and its URL without the password, and `setting`, where the URL came from.
pub async fn reach<T, E, F, Fut>(
    service: &str,
    url: &str,
    setting: &str,
    retry: impl Fn(&E) -> bool,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: std::error::Error,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + STARTUP_PATIENCE;
    let mut delay = Duration::from_millis(200);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (err, again) =
            match tokio::time::timeout(left.max(Duration::from_millis(100)), attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let again = retry(&e);
                    // The causes too: a connect error's own text rarely says what failed.
                    let mut text = e.to_string();
                    let mut cause = e.source();
                    while let Some(c) = cause {
                        text = format!("{text}: {c}");
                        cause = c.source();
                    }
                    (text, again)
                }
                Err(_) => ("no answer".to_owned(), true),
            };
        let now = tokio::time::Instant::now();
        if !again || now + delay >= deadline {
            let tried = if again {
                format!(
                    ", tried for {} s",
                    now.duration_since(start).as_secs().max(1)
                )
            } else {
                String::new()
            };
            anyhow::bail!(
                "cannot connect to {service} at {} ({setting}){tried}: {err}",
                redact(url)
            );
        }
        tracing::debug!(service, error = %err, retry_in = ?delay, "not reachable yet");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

const DATABASE_SETTING: &str = "--database-url / KITE_DATABASE_URL";

/// Connects the store (creating the database if missing) once the server answers, which it
/// must within [`STARTUP_PATIENCE`]. Any answer counts, a refused login or a missing database
/// too: the store's own connect then says what is wrong.
pub async fn connect_store(url: &str, pool_size: usize) -> anyhow::Result<Store> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{DATABASE_SETTING} is not a Postgres URL: {e}"))?;
    reach(
        "Postgres",
        url,
        DATABASE_SETTING,
        |_| true,
        || async {
            match config.connect(tokio_postgres::NoTls).await {
                Ok(_) => Ok(()),
                Err(e) if e.as_db_error().is_some() => Ok(()),
                Err(e) => Err(e),
            }
        },
    )
    .await?;
    Store::connect(url, pool_size).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot use Postgres at {} ({DATABASE_SETTING}): {e}",
            redact(url)
        )
    })
}

/// Connects to the broker within [`STARTUP_PATIENCE`].
pub async fn connect_bus(url: &str, prefix: &str) -> anyhow::Result<Bus> {
    reach(
        "RabbitMQ",
        url,
        "--amqp-url / KITE_AMQP_URL",
        // A refused login or vhost stays refused: only the rest is worth retrying.
        |e: &kite_bus::BusError| {
            let text = e.to_string();
            !(text.contains("ACCESS_REFUSED") || text.contains("NOT_ALLOWED"))
        },
        // One attempt each (no patience of its own): the retries are ours.
        || Bus::connect(url, prefix, Duration::ZERO),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("amqp://g:s1@a:5672/%2f,amqp://g:s2@b:5672/%2f"),
            "amqp://g:***@a:5672/%2f,amqp://g:***@b:5672/%2f"
        );
        assert_eq!(
            redact("postgres://u:p@h1:5432,h2:5432/db"),
            "postgres://u:***@h1:5432,h2:5432/db"
        );
        assert_eq!(
            redact("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/kite"),
            "postgres://postgres@127.0.0.1:5432/kite"
        );
        assert_eq!(
            redact("postgres://u:p@ss@h:1/db?password=x&sslmode=disable"),
            "postgres://u:***@h:1/db?password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=127.0.0.1 password=secret dbname=kite"),
            "host=127.0.0.1 password=*** dbname=kite"
        );
        // Nodes separated by white space, as the broker URL takes them.
        assert_eq!(
            redact("amqp://g:s1@a:5672/%2f amqp://g:s2@b:5672/%2f"),
            "amqp://g:***@a:5672/%2f,amqp://g:***@b:5672/%2f"
        );
        assert_eq!(
            redact("amqp://g:s1@a/%2f , amqp://g:s2@b/%2f"),
            "amqp://g:***@a/%2f,amqp://g:***@b/%2f"
        );
        // A comma inside a password separates nothing.
        assert_eq!(redact("postgres://u:p,w@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(
            redact("host=h password=a,b dbname=kite"),
            "host=h password=*** dbname=kite"
        );
    }
}
