//! The routing rules: for one event and one peer, forward it, record it skipped (and why),
//! or leave the peer out. Pure functions of a [`PeerSnapshot`] and a batch of events: the
//! ingest writer calls them on the events it is about to store (by their place in the batch,
//! [`BatchPos`](kite_wire::ids::BatchPos)) and then stores the events and their outbox rows
//! in one statement; the router calls them on stored events the ingest path left unrouted
//! (by sequence number, [`EventSeq`](kite_wire::ids::EventSeq)).

use std::collections::HashMap;
use std::hash::Hash;

use kite_api::filters::{first_mismatch, Facts};
use kite_wire::fed::FedInfo;

use kite_store::cache::{PeerSnapshot, RoutedPeer};
use kite_store::events::{NewOutbox, RoutingEvent};
use kite_store::types::{OutboxState, SkipReason};

/// What routing does with an event for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it.
    Forward,
    /// Record it as skipped with this reason.
    Skip(SkipReason),
    /// Not for this peer at all.
    None,
}

/// DESIGN's routing rules for one event and one peer: its status, its scopes, its filters
/// (over the event, `ev`: its attributes and, for expressions, its data), its hop limit and
/// the loop check.
pub fn decide(
    self_id: &str,
    peer: &RoutedPeer,
    ty: &str,
    fed: &FedInfo,
    ev: &mut Facts<'_>,
) -> Decision {
    let p = &peer.peer;
    if !p.status.routes() {
        return Decision::None;
    }
    let in_scope = peer.scopes.as_ref().is_some_and(|s| s.matches(ty));
    if !in_scope {
        return Decision::None;
    }
    if !p.filters.is_empty() && first_mismatch(&p.filters, ev).is_some() {
        return Decision::None;
    }
    if i64::from(fed.hops) >= i64::from(p.max_hops) {
        return Decision::Skip(SkipReason::MaxHops);
    }
    let peer_seen = p
        .peer_instance_id
        .as_deref()
        .is_some_and(|id| fed.visited(id));
    if fed.visited(self_id) || peer_seen {
        return Decision::Skip(SkipReason::Loop);
    }
    Decision::Forward
}

/// The outbox rows of a batch of events: one per peer an event is for, pending or skipped.
/// Counts the decisions (`kite_routing_decisions_total` by reason).
pub fn outbox_rows<K: Copy + Eq + Hash>(
    self_id: &str,
    snapshot: &PeerSnapshot,
    events: &[RoutingEvent<K>],
) -> Vec<NewOutbox<K>> {
    let (rows, no_match) = decide_rows(self_id, snapshot, events);
    count(rows.iter().map(|r| r.reason), no_match.values().sum());
    rows
}

/// [`outbox_rows`] without counting: the rows, and by event how many of the team's peers it
/// is not for. Where some events may turn out not stored (duplicates), the caller counts
/// those that were, with [`count`].
pub fn decide_rows<K: Copy + Eq + Hash>(
    self_id: &str,
    snapshot: &PeerSnapshot,
    events: &[RoutingEvent<K>],
) -> (Vec<NewOutbox<K>>, HashMap<K, u64>) {
    let mut rows = Vec::new();
    let mut no_match = HashMap::new();
    for ev in events {
        let Some(peers) = snapshot.by_team.get(&ev.team_id) else {
            continue;
        };
        let mut facts = facts(ev.text.as_deref(), &ev.fed);
        for peer in peers {
            let (state, reason) = match decide(self_id, peer, &ev.ce_type, &ev.fed, &mut facts) {
                Decision::None => {
                    *no_match.entry(ev.at).or_default() += 1;
                    continue;
                }
                Decision::Forward => (OutboxState::Pending, None),
                Decision::Skip(r) => (OutboxState::Skipped, Some(r)),
            };
            let ordering_key = peer.peer.ordering_key.as_deref().map(|attr| {
                kite_wire::signature::ordering_key(facts.attribute(attr).unwrap_or_default())
            });
            rows.push(NewOutbox {
                event: ev.at,
                peer_id: peer.peer.id,
                team_id: ev.team_id.clone(),
                state,
                reason,
                ordering_key,
                lease: None,
            });
        }
    }
    (rows, no_match)
}

/// Counts routing decisions (`kite_routing_decisions_total` by reason): the rows made, by
/// their skip reason (None: forwarded), and `no_match` pairs of an event and a peer it is
/// not for.
pub fn count(reasons: impl IntoIterator<Item = Option<SkipReason>>, no_match: u64) {
    let mut by_reason: HashMap<&'static str, u64> = HashMap::new();
    for r in reasons {
        let reason = r.map_or("forward", SkipReason::as_str);
        *by_reason.entry(reason).or_default() += 1;
    }
    if no_match > 0 {
        by_reason.insert("no_match", no_match);
    }
    for (reason, n) in by_reason {
        metrics::counter!(kite_wire::metrics::ROUTING, "reason" => reason).increment(n);
    }
}

/// An event as its filters read it: its text (None: not read), parsed when the first
/// filter asks, and the federation extensions, which are kept apart from the stored text
/// (`kitefedorigin`, `kitefedchain` a list, `kitefedhops`).
pub fn facts<'a>(text: Option<&'a str>, fed: &FedInfo) -> Facts<'a> {
    let ev = Facts::new(text);
    match &fed.origin {
        Some(origin) => ev
            .with("kitefedorigin", origin.clone().into())
            .with("kitefedchain", fed.chain.clone().into())
            .with("kitefedhops", fed.hops.into()),
        None => ev,
    }
}
