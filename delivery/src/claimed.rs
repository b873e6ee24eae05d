//! Peers whose deliveries are claimed from Postgres instead of taken from their queue: an
//! ordered peer (`ordering_key`), whose rows of one key must go one at a time in the order
//! their events were accepted, and a rate-limited one, whose rows would otherwise wait in a
//! queue or a lane until the sweeper took them for lost.
//!
//! The outbox is the one place that knows what is due and in which order, so the worker
//! claims due rows there (`Store::claim_due`), each with a lease: the row is not due for
//! anyone else until the lease ends, so any number of delivery processes claim disjoint
//! rows, and an ordered key's next row is not claimed while its first is leased, waiting for
//! a retry, or (with `on_dead: block`) dead. A process killed mid-attempt leaves its rows
//! leased; once the lease is over another claims them again, in the same order. The peer's
//! queue still carries messages (from ingest, the router, retries and operators): here each
//! is only a doorbell that says something may be due now.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kite_api::types::OnDead;
use kite_bus::{ConsumeOptions, Flow, Queue, Settle};
use kite_wire::ids::PeerId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, Handled};

/// How often a claiming worker looks for due rows without a doorbell (a retry's time come,
/// a lease of a killed process over).
const POLL: Duration = Duration::from_secs(1);

/// How long a claimed row is leased beyond its request's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// What a claiming worker is for: the peer's order and limits as it started with them (a
/// change of any restarts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claiming {
    /// Ordered, and what a dead first row does to its key.
    pub(crate) ordered: Option<OnDead>,
    /// The most rows in flight at once.
    pub(crate) in_flight: usize,
    /// How long a claimed row is leased.
    pub(crate) lease: Duration,
    /// The outbound rate (`rate_per_sec` as bits, `rate_burst`).
    rate: Option<(u64, Option<u32>)>,
}

impl Claiming {
    /// How `peer`'s deliveries are claimed, or None when they are queued as usual
    /// (`crate::gate::claimed`).
    pub(crate) fn of(cfg: &crate::DeliveryConfig, peer: &kite_store::peers::Peer) -> Option<Self> {
        let p = &peer.delivery;
        if !crate::gate::claimed(p, peer.ordering_key.is_some()) {
            return None;
        }
        Some(Self {
            ordered: peer.ordering_key.as_ref().map(|_| peer.on_dead),
            // No more claimed at once than its gate lets through: a claimed row waiting
            // there would age its lease.
            in_flight: p
                .max_in_flight
                .map_or(
                    cfg.attempts_in_flight.min(cfg.max_in_flight as usize),
                    |n| n as usize,
                )
                .max(1),
            lease: crate::gate::timeout(cfg, p) + LEASE_MARGIN,
            rate: p.rate_per_sec.map(|r| (r.to_bits(), p.rate_burst)),
        })
    }

    /// How many rows one probe of the parked peer may try: `probe_rows` (the first of as
    /// many keys), one for a rate-limited peer.
    pub(crate) fn probe_rows(&self, probe_rows: usize) -> usize {
        if self.rate.is_some() {
            1
        } else {
            probe_rows.max(1)
        }
    }

    /// The peer's rate as a token bucket (None: unlimited).
    fn limiter(&self) -> Option<governor::DefaultDirectRateLimiter> {
        let (bits, burst) = self.rate?;
        crate::gate::rate_limiter(f64::from_bits(bits), burst)
    }
}

/// Delivers `peer_id`'s rows by claiming them until `end`, the peer is parked or paused.
pub(crate) async fn worker(ctx: Arc<Ctx>, peer_id: PeerId, how: Claiming, end: CancellationToken) {
    tracing::info!(peer = %peer_id, ordered = how.ordered.is_some(), "delivery claiming");
    let bell = Arc::new(Notify::new());
    let opts = ConsumeOptions::new(&format!("kite-delivery-{peer_id}"), 64, 64);
    let bus = ctx.bus.clone();
    let doorbell = {
        let bell = bell.clone();
        bus.consume(Queue::Peer(peer_id), &opts, end.clone(), move |_job| {
            bell.notify_one();
            async { (Settle::Ack, Flow::Continue) }
        })
    };
    // Both run to their end: the claiming loop lets the attempts it started finish (and
    // record) before it returns, and ends the doorbell when it stops by itself.
    let claiming = async {
        claim_loop(ctx, peer_id, how, bell, end.clone()).await;
        end.cancel();
    };
    tokio::join!(claiming, doorbell);
}

/// Waits for the rate's next token, then takes as many more as the bucket holds, up to
/// `room` in all: how many rows may be claimed. A claimed row so never waits for the rate
/// while its lease runs.
async fn tokens(l: &governor::DefaultDirectRateLimiter, room: usize) -> usize {
    l.until_ready().await;
    let mut n = 1;
    while n < room && l.check().is_ok() {
        n += 1;
    }
    n
}

async fn claim_loop(
    ctx: Arc<Ctx>,
    peer_id: PeerId,
    how: Claiming,
    bell: Arc<Notify>,
    end: CancellationToken,
) {
    let limiter = how.limiter();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut stop = false;
    // A rate-limited peer's tokens, taken before its rows are claimed; kept while no row is
    // due.
    let mut held = 0usize;
    while !stop {
        let room = how.in_flight.saturating_sub(running.len());
        let may = if limiter.is_some() {
            held.min(room)
        } else {
            room
        };
        if may > 0 {
            match ctx
                .store
                .claim_due(peer_id, how.ordered, may as i64, how.lease)
                .await
            {
                Ok(ids) if !ids.is_empty() => match ctx.store.delivery_rows(&ids).await {
                    Ok(rows) => {
                        held = held.saturating_sub(ids.len());
                        for row in rows {
                            // A row another task of this process is sending (one that
                            // started before the peer's policy changed) is left to it.
                            let mine = ctx.held.take(&[row.id]);
                            if mine.ids().is_empty() {
                                continue;
                            }
                            let ctx = ctx.clone();
                            running.push(async move {
                                ctx.deliver_rows(peer_id, vec![row], mine).await
                            });
                        }
                        continue;
                    }
                    Err(e) => {
                        // The rows stay leased and are claimed again once the lease ends.
                        tracing::warn!(peer = %peer_id, error = %e, "cannot load claimed rows");
                    }
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(peer = %peer_id, error = %e, "cannot claim rows"),
            }
        }
        let want_tokens = held == 0 && room > 0;
        tokio::select! {
            Some(done) = running.next(), if !running.is_empty() => match done {
                Ok(Handled::Parked | Handled::PeerNotActive) => stop = true,
                Ok(Handled::Done | Handled::Retry) => {}
                Err(e) => {
                    // Its rows stay leased and are claimed again once the lease ends.
                    tracing::warn!(peer = %peer_id, error = %e, "delivery bookkeeping failed");
                    tokio::time::sleep(ctx.cfg.retry_pause).await;
                }
            },
            n = async {
                match &limiter {
                    Some(l) => tokens(l, room).await,
                    None => std::future::pending().await,
                }
            }, if want_tokens && limiter.is_some() => held = n,
            _ = bell.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = end.cancelled() => stop = true,
        }
    }
    while running.next().await.is_some() {}
}
