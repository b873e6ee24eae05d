//! Change notifications over Postgres LISTEN/NOTIFY, so in-memory caches of peers and
//! senders refresh when they change and stream listeners wake when events commit.

use std::time::Duration;

use backon::BackoffBuilder;

use futures::StreamExt;
use kite_wire::ids::PeerId;
use tokio::sync::{broadcast, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::Store;

/// How long a process' claim to stream events lasts (`stream_listeners.until`).
const LISTENING_FOR: Duration = Duration::from_secs(600);
/// How old a claim may get before a stream connection renews it.
const RENEW_AFTER: Duration = Duration::from_secs(300);

/// This process' claim that it has stream connections open, so that commits of events
/// notify `kite_events` (table `stream_listeners`; see `migrations/V20__quiet_commits.sql`):
/// renewed by each stream connection as it opens and while it is open, one statement at
/// most every few minutes; it lapses by itself once the last one is closed.
pub struct Listening {
    store: Store,
    process: String,
    renewed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl Listening {
    /// Makes sure commits of events notify for the next minutes. A stream connection calls
    /// it before it first reads and then at each of its polls; only a claim older than
    /// [`RENEW_AFTER`] (or none) costs a statement. If it cannot be written the stream still
    /// reads at its poll interval.
    pub async fn renew(&self) {
        let due = self
            .renewed
            .lock()
            .map(|r| r.is_none_or(|t| t.elapsed() >= RENEW_AFTER))
            .unwrap_or(true);
        if !due {
            return;
        }
        match self
            .store
            .claim_listening(&self.process, LISTENING_FOR)
            .await
        {
            Ok(()) => {
                if let Ok(mut r) = self.renewed.lock() {
                    *r = Some(std::time::Instant::now());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot note that this process streams events"),
        }
    }
}

impl Store {
    /// Claims (or renews) that `process` streams events for `term`; drops claims long over.
    async fn claim_listening(&self, process: &str, term: Duration) -> crate::Result<()> {
        let c = self.conn().await?;
        c.execute(
            "WITH gone AS (DELETE FROM stream_listeners WHERE until < now() - interval '1 hour')
             INSERT INTO stream_listeners (process, until)
             VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (process) DO UPDATE SET until = EXCLUDED.until",
            &[&process, &term.as_secs_f64()],
        )
        .await?;
        Ok(())
    }
}

/// Generation counters that move on every change notification (and on every reconnect,
/// since notifications may have been missed while disconnected).
#[derive(Debug, Clone)]
pub struct Notifications {
    /// Peers or trusted senders changed.
    pub config: watch::Receiver<u64>,
    /// Events were committed.
    pub events: watch::Receiver<u64>,
    /// One peer's pinned keys changed (`Some(peer)`), or anything may have (`None`: the
    /// notification connection was re-made).
    pub peer_keys: broadcast::Sender<Option<PeerId>>,
    /// This process' claim to stream events (commits notify only while one is live).
    pub listening: std::sync::Arc<Listening>,
}

impl Store {
    /// Starts a task holding a dedicated LISTEN connection, reconnecting with backoff.
    pub fn listen_for_changes(&self) -> Notifications {
        let (config_tx, config) = watch::channel(0u64);
        let (events_tx, events) = watch::channel(0u64);
        let (keys_tx, _) = broadcast::channel(1024);
        let peer_keys = keys_tx.clone();
        let pg = self.pg_config().clone();
        tokio::spawn(async move {
            let reconnect = || {
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_jitter()
                    .without_max_times()
                    .build()
            };
            let mut delays = reconnect();
            loop {
                match pg.connect(NoTls).await {
                    Ok((client, mut conn)) => {
                        let (ctx, etx, ktx) =
                            (config_tx.clone(), events_tx.clone(), keys_tx.clone());
                        let pump = tokio::spawn(async move {
                            let mut stream =
                                futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                            while let Some(Ok(msg)) = stream.next().await {
                                if let AsyncMessage::Notification(n) = msg {
                                    match n.channel() {
                                        "kite_events" => etx.send_modify(|g| *g += 1),
                                        // A payload that is no id: reload every peer's keys.
                                        "kite_peer_keys" => {
                                            let _ = ktx
                                                .send(n.payload().parse::<Uuid>().ok().map(PeerId));
                                        }
                                        _ => ctx.send_modify(|g| *g += 1),
                                    }
                                }
                            }
                        });
                        if client
                            .batch_execute(
                                "LISTEN kite_config; LISTEN kite_events; LISTEN kite_peer_keys",
                            )
                            .await
                            .is_ok()
                        {
                            delays = reconnect();
                            config_tx.send_modify(|g| *g += 1);
                            events_tx.send_modify(|g| *g += 1);
                            let _ = keys_tx.send(None);
                        }
                        let _ = pump.await;
                        drop(client);
                        tracing::warn!("notification connection lost; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "notification connection failed"),
                }
                if config_tx.is_closed() && events_tx.is_closed() {
                    return;
                }
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
            }
        });
        Notifications {
            config,
            events,
            peer_keys,
            listening: std::sync::Arc::new(Listening {
                store: self.clone(),
                process: Uuid::new_v4().to_string(),
                renewed: std::sync::Mutex::new(None),
            }),
        }
    }
}
