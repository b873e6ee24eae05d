//! Traffic helpers: a webhook provider that retries like a real one, and the check that
//! every accepted event arrived exactly once.

use std::time::{Duration, Instant};

use super::{eventually, stripe_event, Instance};

/// Posts events like a webhook provider does: each id is retried (503, 5xx, connection
/// errors) with backoff until it is answered 202 or 200, for up to `patience`. Answers the
/// ids accepted and every status seen.
pub async fn provider_send(
    url: String,
    ids: Vec<String>,
    concurrency: usize,
    patience: Duration,
) -> (Vec<String>, Vec<u16>) {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let results: Vec<(Option<String>, Vec<u16>)> = futures::stream::iter(ids)
        .map(|id| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let deadline = Instant::now() + patience;
                let mut seen = Vec::new();
                let mut delay = Duration::from_millis(50);
                while Instant::now() < deadline {
                    let r = http
                        .post(format!("{url}/hooks/default/stripe"))
                        .json(&stripe_event(&id, "charge.succeeded"))
                        .send()
                        .await;
                    match r {
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            seen.push(s);
                            if s == 202 || s == 200 {
                                return (Some(id), seen);
                            }
                        }
                        Err(_) => seen.push(0),
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                (None, seen)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut accepted = Vec::new();
    let mut statuses = Vec::new();
    for (id, seen) in results {
        accepted.extend(id);
        statuses.extend(seen);
    }
    (accepted, statuses)
}

/// Waits until `inst` holds every id, then checks each is stored exactly once.
pub async fn assert_all_once(inst: &Instance, ids: &[String], timeout: Duration) {
    let db = inst.db().await;
    let want = ids.len() as i64;
    eventually(
        &format!("{want} events at {}", inst.name),
        timeout,
        || async {
            let n: i64 = db
                .query_one(
                    "SELECT count(DISTINCT ce_id) FROM events WHERE ce_id = ANY($1)",
                    &[&ids],
                )
                .await
                .ok()?
                .get(0);
            (n == want).then_some(())
        },
    )
    .await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM events WHERE ce_id = ANY($1)", &[&ids])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, want, "each event stored exactly once");
}
