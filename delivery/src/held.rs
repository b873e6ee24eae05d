//! The outbox rows this process is delivering now, from their load to their settled
//! write. A row that waits long here (at a slow peer's gate, behind its requests in
//! flight) stays pending past its due time, so the sweeper takes it for lost and publishes
//! it again; the message that brings it back while it is still held is dropped, so the
//! peer is not sent the event a second time. Every way a row is sent takes it first: a
//! message, a local-lane handoff, a claim and a probe. Nothing is lost by a drop: the row stays
//! pending until its holder settles it, and if the holder dies the sweeper publishes it
//! again once it is overdue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kite_wire::ids::OutboxId;

/// The rows held by this process' delivery tasks.
#[derive(Default)]
pub(crate) struct Holding(Mutex<HashSet<OutboxId>>);

/// Rows taken into hand, released when it is dropped.
pub(crate) struct Held {
    of: Arc<Holding>,
    ids: Vec<OutboxId>,
}

impl Holding {
    /// Takes the rows of `ids` not held already; answers them held. If the lock was
    /// poisoned every row is taken (a repeat is then possible, as without this).
    pub(crate) fn take(self: &Arc<Self>, ids: &[OutboxId]) -> Held {
        let ids = match self.0.lock() {
            Ok(mut held) => ids.iter().copied().filter(|id| held.insert(*id)).collect(),
            Err(_) => ids.to_vec(),
        };
        Held {
            of: self.clone(),
            ids,
        }
    }

    /// How many rows are held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |h| h.len())
    }
}

impl Held {
    /// Whether `id` is among the rows this took.
    pub(crate) fn has(&self, id: OutboxId) -> bool {
        self.ids.contains(&id)
    }

    /// The rows this took.
    pub(crate) fn ids(&self) -> &[OutboxId] {
        &self.ids
    }

    /// Lets go of the rows now; answers them (to hand them on).
    pub(crate) fn release(self) -> Vec<OutboxId> {
        self.ids.clone()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = self.of.0.lock() {
            for id in &self.ids {
                held.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_held_once_until_its_holder_lets_go() {
        let h = Arc::new(Holding::default());
        let first = h.take(&[OutboxId(1), OutboxId(2)]);
        assert_eq!(first.ids(), [OutboxId(1), OutboxId(2)]);
        let again = h.take(&[OutboxId(2), OutboxId(3)]);
        assert_eq!(again.ids(), [OutboxId(3)], "2 is in hand already");
        assert!(!again.has(OutboxId(2)));
        drop(first);
        assert_eq!(h.len(), 1);
        assert_eq!(h.take(&[OutboxId(2)]).ids(), [OutboxId(2)]);
        drop(again);
        assert_eq!(h.len(), 0);
        assert_eq!(h.take(&[OutboxId(9)]).release(), [OutboxId(9)]);
        assert_eq!(h.len(), 0, "released rows are let go");
    }
}
