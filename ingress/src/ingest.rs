//! Group commit: concurrent requests share one statement that stores their events and
//! their outbox rows (decided before, by the routing rules of `kite_route::rules`); each
//! request is answered as soon as that commit is done. The deliveries it made go to this
//! process' delivery worker through the local lane (`kite_bus::local`) when it runs here
//! and has room, else in one confirmed publish straight to each peer's queue. An event
//! stored without routing (the peers could not be read, or the batch was written one by
//! one) goes to the router instead.

use kite_wire::Code;
use std::collections::HashMap;
use std::sync::Arc;

use kite_bus::local::Slot;
use kite_bus::{Bus, LocalLane, Message};
use kite_store::cache::{Cache, PeerSnapshot};
use kite_store::events::{routing_events, InsertOutcome, NewEvent, NewOutbox, RoutedRow};
use kite_store::outbox::DeliveryRow;
use kite_store::types::{OutboxState, SkipReason};
use kite_store::{Store, StoreError};
use kite_wire::ids::{BatchPos, Delivery, EventSeq, PeerId};
use kite_wire::ApiError;
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
    pub(crate) fn start(
        store: Store,
        bus: Arc<Bus>,
        lane: Arc<LocalLane<DeliveryRow>>,
        peers: Arc<Cache<PeerSnapshot>>,
        cfg: &IngressConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(cfg.ingest_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.ingest_writers.max(1) {
            tokio::spawn(writer(Writer {
                store: store.clone(),
                bus: bus.clone(),
                lane: lane.clone(),
                peers: peers.clone(),
                instance_id: cfg.instance_id.clone(),
                rx: rx.clone(),
                max: cfg.ingest_batch.max(1),
                publishes: cfg.publishes_in_flight,
            }));
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

/// One group-commit writer's handles and settings.
struct Writer {
    store: Store,
    bus: Arc<Bus>,
    lane: Arc<LocalLane<DeliveryRow>>,
    peers: Arc<Cache<PeerSnapshot>>,
    instance_id: String,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max: usize,
    publishes: usize,
}

/// What a batch's commit left to publish.
enum Work {
    /// Deliveries made at ingest.
    Deliver(Vec<Delivery>),
    /// Events stored without routing: the router's.
    Route(Vec<EventSeq>),
}

async fn writer(w: Writer) {
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
                    let _ = reply.send(Err(ApiErr(api.0.clone())));
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
) -> Result<(Vec<Result<InsertOutcome, ApiErr>>, Work), ApiErr> {
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
            let (mut rows, no_match) =
                kite_route::rules::decide_rows(&w.instance_id, snapshot, &routing_events(&events));
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
        Err(StoreError::Unavailable(m)) => return Err(StoreError::Unavailable(m).into()),
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

/// A peer's slots in the local lane, and how many of the batch's rows each carries.
type Slots = HashMap<PeerId, Vec<(Slot<DeliveryRow>, usize)>>;

/// Reserves slots in the local lane for the pending rows of peers whose worker runs here and
/// has room (the last slot of a peer filling up before the next is taken), and leases those
/// rows: they are not due before the lease ends, so no other process POSTs them meanwhile.
fn reserve_lanes(lane: &LocalLane<DeliveryRow>, rows: &mut [NewOutbox<BatchPos>]) -> Slots {
    let mut slots: Slots = HashMap::new();
    for row in rows.iter_mut().filter(|r| r.state == OutboxState::Pending) {
        let held = slots.entry(row.peer_id).or_default();
        if held.last().is_none_or(|(s, n)| *n >= s.rows()) {
            if let Some(s) = lane.reserve(row.peer_id) {
                held.push((s, 0));
            }
        }
        row.lease = match held.last_mut() {
            Some((s, n)) if *n < s.rows() => {
                *n += 1;
                Some(s.lease())
            }
            _ => None,
        };
    }
    slots
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

/// Sends the committed rows of peers with a slot down the local lane, each with its event
/// and peer as delivery would load them; answers the others (for the broker).
fn hand_off(
    snapshot: &PeerSnapshot,
    events: &[NewEvent],
    outcomes: &[InsertOutcome],
    pending: Vec<RoutedRow>,
    mut slots: Slots,
) -> Vec<Delivery> {
    let mut rest = Vec::new();
    let mut local: HashMap<PeerId, Vec<DeliveryRow>> = HashMap::new();
    let now = chrono::Utc::now();
    // Each leased peer's settings, looked up once a batch.
    let mut found: HashMap<PeerId, Option<&kite_store::peers::Peer>> = HashMap::new();
    for r in pending {
        let event = events.get(r.event.0);
        let peer = match event {
            Some(e) if r.leased && slots.contains_key(&r.peer_id) => {
                *found.entry(r.peer_id).or_insert_with(|| {
                    snapshot
                        .by_team
                        .get(&e.team_id)?
                        .iter()
                        .map(|p| &p.peer)
                        .find(|p| PeerId(p.id) == r.peer_id)
                })
            }
            _ => None,
        };
        match (peer, event, outcomes.get(r.event.0)) {
            (Some(p), Some(e), Some(InsertOutcome::Inserted { received_at, .. })) => {
                local
                    .entry(r.peer_id)
                    .or_default()
                    .push(DeliveryRow::of_new(r.id, e, p, *received_at, now));
            }
            _ => rest.push(Delivery {
                id: r.id,
                peer: r.peer_id,
            }),
        }
    }
    let mut handed = 0;
    for (peer, mut rows) in local {
        // Each slot takes the rows leased for it (as many as it was counted).
        for (slot, n) in slots.remove(&peer).unwrap_or_default() {
            let take = n.min(rows.len());
            if take == 0 {
                break;
            }
            let rest_of = rows.split_off(take);
            handed += rows.len();
            slot.send(rows);
            rows = rest_of;
        }
        // None is left unless the snapshot lost the peer; the broker takes those.
        rest.extend(rows.iter().map(|r| Delivery {
            id: r.id,
            peer: r.peer_id,
        }));
    }
    use kite_wire::metrics as m;
    if handed > 0 {
        metrics::counter!(m::HANDED, "lane" => "local").increment(handed as u64);
    }
    if !rest.is_empty() {
        metrics::counter!(m::HANDED, "lane" => "broker").increment(rest.len() as u64);
    }
    rest
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
async fn one_by_one(store: &Store, events: &[NewEvent]) -> Vec<Result<InsertOutcome, ApiErr>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(match store.insert_events(std::slice::from_ref(e)).await {
            Ok(mut o) => o.pop().ok_or_else(|| ApiErr(ApiError::internal())),
            Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m).into()),
            Err(err) => {
                tracing::warn!(error = %err, id = %e.ce_id, "event refused by the database");
                Err(ApiErr(ApiError::new(
                    Code::UnstorableEvent,
                    "the database refused this event",
                )))
            }
        });
    }
    out
}
