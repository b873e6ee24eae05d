//! Group commit of delivery results: the batches that finish while one write is running
//! are written together in the next (one `apply_delivery` statement), as the ingest writer
//! does for events. A batch waits only for a write that was already running.

use kite_store::outbox::DeliveryUpdate;
use kite_store::story::NewAttempt;
use kite_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most rows one write carries.
const MOST_ROWS: usize = 1_000;

struct Job {
    updates: Vec<DeliveryUpdate>,
    log: Vec<NewAttempt>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle on the writer task.
pub(crate) struct ResultWriter {
    tx: mpsc::Sender<Job>,
}

impl ResultWriter {
    /// Starts the writer on `store`; it ends when the handle is dropped.
    pub(crate) fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(1_024);
        tokio::spawn(write(store, rx));
        Self { tx }
    }

    /// Writes a batch's rows and attempt log; answers once they are written.
    pub(crate) async fn apply(
        &self,
        updates: Vec<DeliveryUpdate>,
        log: Vec<NewAttempt>,
    ) -> Result<(), StoreError> {
        if updates.is_empty() && log.is_empty() {
            return Ok(());
        }
        let stopped = || StoreError::Unavailable("the delivery writer stopped".into());
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Job { updates, log, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut rows = jobs[0].updates.len();
        while rows < MOST_ROWS {
            match rx.try_recv() {
                Ok(j) => {
                    rows += j.updates.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let mut updates = Vec::with_capacity(rows);
        let mut log = Vec::with_capacity(rows);
        let mut waiting = Vec::with_capacity(jobs.len());
        for j in jobs {
            updates.extend(j.updates);
            log.extend(j.log);
            waiting.push(j.done);
        }
        let result = store.apply_delivery(&updates, &log).await.map(|_| ());
        for done in waiting {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                // Every batch of the write failed the same way; each retries on its own.
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            });
        }
    }
}
