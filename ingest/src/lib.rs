//! kite-ingest: the ingest stage. A hook's events are handed to [`Ingest::submit`]; the
//! group-commit writers ([`commit`]) gather what concurrent requests submit, route each
//! batch with `kite_route::rules`, and store events and outbox rows in one statement; each
//! request is answered once its batch is committed. The deliveries made go to this
//! process' delivery worker down the local lane when it runs here and has room ([`lanes`]),
//! else in one confirmed publish to each peer's queue.

pub mod commit;
pub mod lanes;

use std::sync::Arc;

use kite_bus::{Bus, LocalLane};
use kite_store::cache::{Cache, PeerSnapshot};
use kite_store::events::{InsertOutcome, NewEvent};
use kite_store::outbox::DeliveryRow;
use kite_store::Store;
use tokio::sync::{mpsc, oneshot, Mutex};

use commit::{writer, Writer};

/// Why an event was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// More events wait for a commit than the queue holds: retry later.
    #[error("ingest queue is full, retry later")]
    Full,
    /// The process is stopping.
    #[error("shutting down")]
    ShuttingDown,
    /// The writer went away before answering.
    #[error("ingest writer stopped")]
    Stopped,
    /// The database cannot be reached: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused this event (written on its own).
    #[error("the database refused this event")]
    Unstorable,
    /// A bug: a commit answered fewer events than it was given.
    #[error("internal error")]
    Internal,
}

/// The ingest stage's settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// This instance's id (loop checks in routing).
    pub instance_id: String,
    /// Events waiting for a group commit before submitting is refused ([`IngestError::Full`]).
    pub queue: usize,
    /// Most events one group commit writes.
    pub batch: usize,
    /// Concurrent group-commit writers.
    pub writers: usize,
    /// Batches of stored events being published at once before a writer waits.
    pub publishes_in_flight: usize,
}

impl IngestConfig {
    /// The defaults.
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            queue: 20_000,
            batch: 1_000,
            // One writer: each team's inserts serialize on its stream lock anyway, and one
            // writer lets every waiting request join the next commit.
            writers: 1,
            publishes_in_flight: 64,
        }
    }
}

/// One event submitted and where its answer goes.
struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, IngestError>>,
}

/// Handle on the group-commit writers.
pub struct Ingest {
    tx: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the writers.
    pub fn start(
        store: Store,
        bus: Arc<Bus>,
        lane: Arc<LocalLane<DeliveryRow>>,
        peers: Arc<Cache<PeerSnapshot>>,
        cfg: &IngestConfig,
    ) -> Self {
        // Settings are at least 1 (checked at load); a channel of 0 would panic.
        let (tx, rx) = mpsc::channel::<Job>(cfg.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.writers.max(1) {
            tokio::spawn(writer(Writer {
                store: store.clone(),
                bus: bus.clone(),
                lane: lane.clone(),
                peers: peers.clone(),
                instance_id: cfg.instance_id.clone(),
                rx: rx.clone(),
                max: cfg.batch.max(1),
                publishes: cfg.publishes_in_flight,
            }));
        }
        Self { tx }
    }

    /// Stores one event durably; answers whether it was new.
    pub async fn submit(&self, event: NewEvent) -> Result<InsertOutcome, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IngestError::Full,
                mpsc::error::TrySendError::Closed(_) => IngestError::ShuttingDown,
            })?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }
}
