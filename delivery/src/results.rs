//! Group commit of delivery results: the batches that finish while one write is running
//! are written together in the next (one `apply_delivery` statement), as the ingest writer
//! does for events. An urgent batch (one whose message or lease waits on the write, or
//! whose attempts failed) waits only for a write that was already running; a lazy one (a
//! local-lane handoff the peer took whole, already acknowledged to nobody) waits up to
//! [`LINGER`] for others to share its write, so that at everyday rates one write carries
//! the results of many events instead of one.

use kite_store::outbox::DeliveryUpdate;
use kite_store::story::NewAttempt;
use kite_store::{Store, StoreError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Most rows one write carries.
const MOST_ROWS: usize = 1_000;

/// How long a lazy batch waits for others before it is written. Far below the local
/// lane's lease (the rows are not due for anyone else meanwhile) and below the sweeper's
/// period; a delivery is at its peer before this wait starts.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

struct Job {
    updates: Vec<DeliveryUpdate>,
    log: Vec<NewAttempt>,
    urgent: bool,
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

    /// Writes a batch's rows and attempt log; answers once they are written. A batch that
    /// is not `urgent` may wait up to [`LINGER`] to share its write.
    pub(crate) async fn apply(
        &self,
        updates: Vec<DeliveryUpdate>,
        log: Vec<NewAttempt>,
        urgent: bool,
    ) -> Result<(), StoreError> {
        if updates.is_empty() && log.is_empty() {
            return Ok(());
        }
        let stopped = || StoreError::Unavailable("the delivery writer stopped".into());
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Job {
                updates,
                log,
                urgent,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = Gathered::new(first);
        // What is queued goes along; while only lazy batches are here, so does what comes
        // until the linger is over, an urgent batch comes or the write is full.
        let until = tokio::time::Instant::now() + LINGER;
        while jobs.rows < MOST_ROWS {
            let next = if jobs.urgent {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(until, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
            match next {
                Some(j) => jobs.push(j),
                None => break,
            }
        }
        let (jobs, rows) = (jobs.jobs, jobs.rows);
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

/// The batches one write carries.
struct Gathered {
    jobs: Vec<Job>,
    rows: usize,
    urgent: bool,
}

impl Gathered {
    fn new(first: Job) -> Self {
        let mut g = Self {
            jobs: Vec::new(),
            rows: 0,
            urgent: false,
        };
        g.push(first);
        g
    }

    fn push(&mut self, j: Job) {
        self.rows += j.updates.len();
        self.urgent |= j.urgent;
        self.jobs.push(j);
    }
}
