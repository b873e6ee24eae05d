//! Group commit: concurrent requests share one multi-row INSERT and one confirmed publish
//! of their sequence numbers; each request is answered after its own commit.

use std::sync::Arc;

use kite_bus::{Bus, Message};
use kite_protocol::ApiError;
use kite_store::events::{InsertOutcome, NewEvent};
use kite_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{ApiErr, IngressConfig};

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, ApiErr>>,
}

/// Handle on the group-commit writers.
pub(crate) struct Ingest {
    tx: mpsc::Sender<Job>,
}

impl Ingest {
    pub(crate) fn start(store: Store, bus: Arc<Bus>, cfg: &IngressConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(cfg.ingest_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.ingest_writers.max(1) {
            tokio::spawn(writer(
                store.clone(),
                bus.clone(),
                rx.clone(),
                cfg.ingest_batch.max(1),
                cfg.publishes_in_flight,
            ));
        }
        Self { tx }
    }

    /// Stores one event durably; answers whether it was new.
    pub(crate) async fn submit(&self, event: NewEvent) -> Result<InsertOutcome, ApiErr> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    ApiErr(ApiError::unavailable("ingest queue is full, retry later"))
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ApiErr(ApiError::unavailable("shutting down"))
                }
            })?;
        rx.await
            .map_err(|_| ApiErr(ApiError::unavailable("ingest writer stopped")))?
    }
}

async fn writer(
    store: Store,
    bus: Arc<Bus>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max: usize,
    publishes: usize,
) {
    // Beyond this many publishes the writer waits (and the ingest queue fills, so new
    // requests get 503) instead of holding unbounded memory.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(publishes.max(1)));
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(j) => jobs.push(j),
                None => return,
            }
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        let (events, replies): (Vec<NewEvent>, Vec<_>) =
            jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
        let outcomes: Vec<Result<InsertOutcome, ApiErr>> = match store.insert_events(&events).await
        {
            Ok(o) => o.into_iter().map(Ok).collect(),
            Err(StoreError::Unavailable(m)) => {
                let api: ApiErr = StoreError::Unavailable(m).into();
                for reply in replies {
                    let _ = reply.send(Err(ApiErr(api.0.clone())));
                }
                continue;
            }
            // The database refused something in the batch: one bad row must not fail the
            // others, so each is written alone and answered for itself.
            Err(e) => {
                tracing::warn!(error = %e, count = events.len(), "batch insert refused; writing its events one by one");
                one_by_one(&store, &events).await
            }
        };
        drop(events);
        // Publish and answer in the background, so the next batch's commit starts now.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let bus = bus.clone();
        tokio::spawn(async move {
            let seqs: Vec<i64> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Ok(InsertOutcome::Inserted { seq, .. }) => Some(*seq),
                    _ => None,
                })
                .collect();
            if !seqs.is_empty() {
                let count = seqs.len();
                // The commit made the events durable; if the broker is down, the router's
                // sweeper publishes them once it is back.
                if let Err(e) = bus.send(&[Message::Route { seqs }]).await {
                    tracing::warn!(error = %e, count, "events stored but not published; the sweeper will");
                }
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
            drop(permit);
        });
    }
}

/// Writes each event in its own statement: the ones the database refuses get a 400 of
/// their own, a lost connection a 503.
async fn one_by_one(store: &Store, events: &[NewEvent]) -> Vec<Result<InsertOutcome, ApiErr>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(match store.insert_events(std::slice::from_ref(e)).await {
            Ok(mut o) => o.pop().ok_or_else(|| ApiErr(ApiError::internal())),
            Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m).into()),
            Err(err) => {
                tracing::warn!(error = %err, id = %e.ce_id, "event refused by the database");
                Err(ApiErr(ApiError::bad_request(
                    "unstorable_event",
                    "the database refused this event",
                )))
            }
        });
    }
    out
}
