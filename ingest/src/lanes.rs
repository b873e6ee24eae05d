//! Lane reservation: the rows of a batch whose peer's delivery worker runs in this process
//! and has room are leased and handed to it down the local lane (`kite_bus::local`) once
//! committed, with the event and peer as delivery would load them; the rest go to the
//! broker.

use std::collections::HashMap;

use kite_bus::local::Slot;
use kite_bus::LocalLane;
use kite_store::cache::PeerSnapshot;
use kite_store::events::{InsertOutcome, NewEvent, NewOutbox, RoutedRow};
use kite_store::outbox::DeliveryRow;
use kite_store::types::OutboxState;
use kite_wire::ids::{BatchPos, Delivery, PeerId};

/// A peer's slots in the local lane, and how many of the batch's rows each carries.
pub(crate) type Slots = HashMap<PeerId, Vec<(Slot<DeliveryRow>, usize)>>;

/// Reserves slots in the local lane for the pending rows of peers whose worker runs here and
/// has room (the last slot of a peer filling up before the next is taken), and leases those
/// rows: they are not due before the lease ends, so no other process POSTs them meanwhile.
pub(crate) fn reserve_lanes(
    lane: &LocalLane<DeliveryRow>,
    rows: &mut [NewOutbox<BatchPos>],
) -> Slots {
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

/// Sends the committed rows of peers with a slot down the local lane, each with its event
/// and peer as delivery would load them; answers the others (for the broker).
pub(crate) fn hand_off(
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
                        .find(|p| p.id == r.peer_id)
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
