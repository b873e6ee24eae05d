//! Group commit: concurrent requests share one statement that stores their events and
//! their outbox rows (decided before, by the routing rules of `kite_route::rules`); each
//! request is answered as soon as that commit is done. An event stored without routing
//! (the peers could not be read, or the batch was written one by one) goes to the router.

use std::collections::HashMap;
use std::sync::Arc;

use kite_bus::{Bus, LocalLane, Message};
use kite_store::cache::{Cache, PeerSnapshot};
use kite_store::events::{routing_events, InsertOutcome, NewEvent};
use kite_store::outbox::DeliveryRow;
use kite_store::types::SkipReason;
use kite_store::{Store, StoreError};
use kite_wire::ids::{BatchPos, Delivery, EventSeq};
use tokio::sync::{mpsc, Mutex};

use crate::lanes::{hand_off, reserve_lanes};
use crate::{IngestError, Job};

/// One group-commit writer's handles and settings.
pub(crate) struct Writer {
    pub(crate) store: Store,
    pub(crate) bus: Arc<Bus>,
    pub(crate) lane: Arc<LocalLane<DeliveryRow>>,
    pub(crate) peers: Arc<Cache<PeerSnapshot>>,
    pub(crate) instance_id: String,
    pub(crate) rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    pub(crate) max: usize,
    pub(crate) publishes: usize,
}

/// What a batch's commit left to publish.
enum Work {
    /// Deliveries made at ingest.
    Deliver(Vec<Delivery>),
    /// Events stored without routing: the router's.
    Route(Vec<EventSeq>),
}

pub(crate) async fn writer(w: Writer) {
    // Beyond this many publishes the writer waits (and the ingest queue fills, so new
    // requests get 503) instead of holding unbounded memory.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(w.publishes.max(1)));
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = w.rx.lock().await;
            match rx.recv().await {
                Some(j) => jobs.push(j),
                None => return,
            }
            while jobs.len() < w.max {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        let (events, replies): (Vec<NewEvent>, Vec<_>) =
            jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
        let (outcomes, work) = match commit(&w, events).await {
            Ok(done) => done,
            Err(api) => {
                for reply in replies {
                    let _ = reply.send(Err(api.clone()));
                }
                continue;
            }
        };
        // Committed: the answers go now; what is left to publish follows (if the broker is
        // down, the router's sweeper publishes it once it is back).
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
        if work.is_empty() {
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let bus = w.bus.clone();
        tokio::spawn(async move {
            if let Err(e) = publish(&bus, work).await {
                tracing::warn!(error = %e, "events stored but not published; the sweeper will");
            }
            drop(permit);
        });
    }
}

impl Work {
    fn is_empty(&self) -> bool {
        match self {
            Work::Deliver(rows) => rows.is_empty(),
            Work::Route(seqs) => seqs.is_empty(),
        }
    }
}

/// Stores a batch: routed in the same statement when the peers can be read, else left for
/// the router. The deliveries of peers whose worker runs here go to it through the local
/// lane. A batch the database refuses is written one event at a time (unrouted), so one
/// bad row never fails the others.
async fn commit(
    w: &Writer,
    events: Vec<NewEvent>,
) -> Result<(Vec<Result<InsertOutcome, IngestError>>, Work), IngestError> {
    let snapshot = match w.peers.get().await {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(error = %e, "peers unreadable; the router routes this batch");
            None
        }
    };
    let refused = match &snapshot {
        Some(snapshot) => {
            // Routing first, a pure function of the peers and the batch; then the events and
            // their outbox rows in one statement.
            let (mut rows, no_match) = kite_route::rules::decide_rows(
                &w.instance_id,
                snapshot,
                &routing_events(&events, |team| snapshot.filters_in(team)),
            );
            let slots = reserve_lanes(&w.lane, &mut rows);
            let decided = Decided {
                rows: rows.iter().map(|r| (r.event, r.reason)).collect(),
                no_match,
            };
            match w.store.insert_events_routed(&events, &rows).await {
                Ok((outcomes, pending)) => {
                    count_stored(decided, &outcomes);
                    let rest = hand_off(snapshot, &events, &outcomes, pending, slots);
                    return Ok((outcomes.into_iter().map(Ok).collect(), Work::Deliver(rest)));
                }
                Err(e) => Some(e),
            }
        }
        None => None,
    };
    let plain = match refused {
        Some(e) => Err(e),
        None => w.store.insert_events(&events).await,
    };
    let unrouted = match plain {
        Ok(o) => o.into_iter().map(Ok).collect(),
        Err(StoreError::Unavailable(m)) => return Err(IngestError::Unavailable(m)),
        Err(e) => {
            tracing::warn!(error = %e, count = events.len(), "batch refused; writing its events one by one");
            one_by_one(&w.store, &events).await
        }
    };
    let seqs = unrouted
        .iter()
        .filter_map(|o| match o {
            Ok(InsertOutcome::Inserted { seq, .. }) => Some(*seq),
            _ => None,
        })
        .collect();
    Ok((unrouted, Work::Route(seqs)))
}

/// A batch's routing decisions, by the events' places in the batch.
struct Decided {
    /// Each row's event and skip reason (None: forwarded).
    rows: Vec<(BatchPos, Option<SkipReason>)>,
    /// How many of the team's peers each event is not for.
    no_match: HashMap<BatchPos, u64>,
}

/// Counts the routing decisions of the events that were stored (a duplicate's were made
/// before the insert told it apart, and wrote nothing).
fn count_stored(decided: Decided, outcomes: &[InsertOutcome]) {
    let stored = |pos: BatchPos| {
        outcomes
            .get(pos.0)
            .is_some_and(|o| matches!(o, InsertOutcome::Inserted { .. }))
    };
    let reasons = decided
        .rows
        .into_iter()
        .filter(|(pos, _)| stored(*pos))
        .map(|(_, reason)| reason);
    let no_match = decided
        .no_match
        .into_iter()
        .filter(|(pos, _)| stored(*pos))
        .map(|(_, n)| n)
        .sum();
    kite_route::rules::count(reasons, no_match);
}

/// Publishes what a commit left: each peer's deliveries to its queue, or the unrouted
/// events to the router; one confirmed publish.
async fn publish(bus: &Bus, work: Work) -> Result<(), kite_bus::BusError> {
    match work {
        Work::Route(seqs) => bus.send(&[Message::Route { seqs }]).await,
        Work::Deliver(pending) => bus.send_deliveries(pending).await,
    }
}

/// Writes each event in its own statement: the ones the database refuses get a 400 of
/// their own, a lost connection a 503.
async fn one_by_one(store: &Store, events: &[NewEvent]) -> Vec<Result<InsertOutcome, IngestError>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(match store.insert_events(std::slice::from_ref(e)).await {
            Ok(mut o) => o.pop().ok_or(IngestError::Internal),
            Err(StoreError::Unavailable(m)) => Err(IngestError::Unavailable(m)),
            Err(err) => {
                tracing::warn!(error = %err, id = %e.ce_id, "event refused by the database");
                Err(IngestError::Unstorable)
            }
        });
    }
    out
}
