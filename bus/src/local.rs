//! The local lane: deliveries that the ingest writer of a process hands straight to the
//! delivery role of the same process, with no broker message in between. It carries the
//! delivery stage's own rows (`T`), which the bus knows nothing of.
//!
//! The ingest writer reserves a slot of a peer's lane before its commit (only a peer whose
//! delivery worker runs here and has room), writes that peer's outbox rows with a lease (not
//! due before it ends) in the same statement as the events, and after the commit sends the
//! rows, event and peer included, through the slot. The outbox row is the durable record:
//! if this process dies before it settles the rows, the lease ends and the sweeper publishes
//! them like any lost work. No other process is told of a leased row, so none POSTs it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kite_wire::ids::PeerId;
use tokio::sync::mpsc;

/// Deliveries handed over: rows of one peer, loaded already, leased until `until`.
#[derive(Debug)]
pub struct Handoff<T> {
    /// The peer.
    pub peer: PeerId,
    /// The rows to deliver, as the store would load them.
    pub rows: Vec<T>,
    /// When their lease ends (past it, the sweeper may publish them).
    pub until: Instant,
}

/// A reserved place in a peer's lane, taken before the commit that writes the rows.
#[derive(Debug)]
pub struct Slot<T> {
    permit: mpsc::OwnedPermit<Handoff<T>>,
    peer: PeerId,
    lease: Duration,
    rows: usize,
    taken: Instant,
}

impl<T> Slot<T> {
    /// How long the rows written for this slot are leased.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The most rows one handoff carries (the rest of a batch goes through the broker), so
    /// that a handoff is done well within its lease.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Hands the committed rows to the peer's worker.
    pub fn send(self, rows: Vec<T>) {
        let until = self.taken + self.lease;
        self.permit.send(Handoff {
            peer: self.peer,
            rows,
            until,
        });
    }
}

/// A peer's lane as its worker holds it.
#[derive(Debug)]
pub struct Attached<T> {
    /// The handoffs.
    pub rx: mpsc::Receiver<Handoff<T>>,
    generation: u64,
}

#[derive(Debug)]
struct Worker<T> {
    tx: mpsc::Sender<Handoff<T>>,
    lease: Duration,
    rows: usize,
    generation: u64,
}

/// The lanes of one process, by peer.
#[derive(Debug)]
pub struct LocalLane<T> {
    workers: Mutex<HashMap<PeerId, Worker<T>>>,
    generations: AtomicU64,
}

impl<T> Default for LocalLane<T> {
    fn default() -> Self {
        Self {
            workers: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
        }
    }
}

impl<T> LocalLane<T> {
    /// Opens a lane for `peer` with room for `capacity` handoffs of at most `rows` rows,
    /// leased for `lease` (the delivery worker of the peer calls it when it starts).
    pub fn attach(
        &self,
        peer: PeerId,
        capacity: usize,
        rows: usize,
        lease: Duration,
    ) -> Attached<T> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.workers.lock() {
            w.insert(
                peer,
                Worker {
                    tx,
                    lease,
                    rows: rows.max(1),
                    generation,
                },
            );
        }
        Attached { rx, generation }
    }

    /// Closes `peer`'s lane, unless a newer worker opened it again: no new slots. Slots
    /// reserved already still arrive, so the worker drains its receiver.
    pub fn detach(&self, peer: PeerId, attached: &mut Attached<T>) {
        if let Ok(mut w) = self.workers.lock() {
            if w.get(&peer)
                .is_some_and(|x| x.generation == attached.generation)
            {
                w.remove(&peer);
            }
        }
        attached.rx.close();
    }

    /// A slot in `peer`'s lane: None when no worker of this process delivers to it or its
    /// lane is full (the rows then go through the broker).
    pub fn reserve(&self, peer: PeerId) -> Option<Slot<T>> {
        let w = self.workers.lock().ok()?;
        let worker = w.get(&peer)?;
        let permit = worker.tx.clone().try_reserve_owned().ok()?;
        Some(Slot {
            permit,
            peer,
            lease: worker.lease,
            rows: worker.rows,
            taken: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_takes_what_it_has_room_for_and_closes_for_good() {
        let lane = LocalLane::<()>::default();
        let peer = PeerId(uuid::Uuid::new_v4());
        assert!(lane.reserve(peer).is_none(), "no worker, no slot");
        let mut a = lane.attach(peer, 1, 8, Duration::from_secs(5));
        let slot = lane.reserve(peer).expect("room for one");
        assert_eq!(slot.lease(), Duration::from_secs(5));
        assert_eq!(slot.rows(), 8);
        assert!(lane.reserve(peer).is_none(), "full");
        slot.send(Vec::new());
        assert_eq!(a.rx.recv().await.map(|h| h.peer), Some(peer));
        // A newer worker's lane survives the older one's detach.
        let mut b = lane.attach(peer, 1, 8, Duration::from_secs(5));
        lane.detach(peer, &mut a);
        assert!(lane.reserve(peer).is_some());
        lane.detach(peer, &mut b);
        assert!(lane.reserve(peer).is_none());
        assert!(b.rx.recv().await.is_none());
    }
}
