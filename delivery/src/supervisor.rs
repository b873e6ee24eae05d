//! The per-peer supervisor: one consumer for each active peer, or a prober for each
//! unreachable one, kept in step with the peers table.

use std::collections::HashMap;
use std::sync::Arc;

use kite_bus::{Bus, ConsumeOptions, Flow, Queue, Settle};
use kite_store::types::PeerHealth;
use kite_store::Store;
use kite_wire::ids::PeerId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::claimed::Claiming;
use crate::{Ctx, DeliveryConfig, Handled};
use kite_federation::{http_client, ClientError};

/// Runs the delivery role until `shutdown` is cancelled: keeps one consumer per active
/// peer, each under a child token of `shutdown` so that it can be stopped alone.
pub async fn run(
    store: Store,
    bus: Arc<Bus>,
    lane: Arc<kite_bus::LocalLane<kite_store::outbox::DeliveryRow>>,
    fed: Arc<kite_federation::Federation>,
    mut config_generation: watch::Receiver<u64>,
    cfg: DeliveryConfig,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let http = http_client(
        cfg.request_timeout,
        cfg.allow_private_peers,
        cfg.peer_ca.as_deref(),
    )?;
    let ctx = Arc::new(Ctx {
        results: crate::results::ResultWriter::start(store.clone()),
        store,
        bus,
        lane,
        http,
        fed,
        cfg,
        recorded_success: Default::default(),
        dests: Default::default(),
        gates: Default::default(),
        held: Default::default(),
        batching: Default::default(),
    });
    let ops_stop = shutdown.child_token();
    let ops = tokio::spawn(crate::operational::run(ctx.clone(), ops_stop.clone()));
    let mut workers: HashMap<PeerId, Worker> = HashMap::new();
    let ended = Arc::new(tokio::sync::Notify::new());
    loop {
        match ctx.store.all_peers().await {
            Ok(peers) => {
                ctx.forget_all_but(&peers.iter().map(|p| p.id).collect());
                let wanted: HashMap<PeerId, Kind> = peers
                    .iter()
                    .filter(|p| p.status.delivers())
                    .map(|p| {
                        let kind = if p.health == PeerHealth::Unreachable {
                            Kind::Probe(Claiming::of(&ctx.cfg, p))
                        } else if let Some(how) = Claiming::of(&ctx.cfg, p) {
                            Kind::Claim(how)
                        } else {
                            Kind::Deliver
                        };
                        (p.id, kind)
                    })
                    .collect();
                workers.retain(|id, w| {
                    let keep = wanted.get(id) == Some(&w.kind)
                        && !w.handle.is_finished()
                        && !w.stop.is_cancelled();
                    if !keep {
                        w.stop.cancel();
                    }
                    keep
                });
                for (id, kind) in wanted {
                    if workers.contains_key(&id) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    let work: futures::future::BoxFuture<'static, ()> = match kind {
                        Kind::Deliver => Box::pin(peer_worker(ctx.clone(), id, stop.clone())),
                        Kind::Claim(how) => {
                            Box::pin(crate::claimed::worker(ctx.clone(), id, how, stop.clone()))
                        }
                        Kind::Probe(how) => Box::pin(prober(ctx.clone(), id, how, stop.clone())),
                    };
                    let ended = ended.clone();
                    let done = stop.clone();
                    let handle = tokio::spawn(async move {
                        work.await;
                        // Marked ended before the supervisor is woken to look.
                        done.cancel();
                        ended.notify_one();
                    });
                    workers.insert(id, Worker { kind, stop, handle });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot load peers"),
        }
        tokio::select! {
            _ = config_generation.changed() => {}
            // A worker ended by itself (a prober whose peer answers again, a consumer that
            // stopped): start what the peer's state asks for now.
            _ = ended.notified() => {}
            _ = tokio::time::sleep(ctx.cfg.supervise_interval) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, w) in workers {
        w.stop.cancel();
        let _ = w.handle.await;
    }
    ops_stop.cancel();
    let _ = ops.await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Its queue and the local lane.
    Deliver,
    /// Claimed from Postgres (ordered or rate-limited; `crate::claimed`).
    Claim(Claiming),
    /// Unreachable: probed (its first rows of each key, when they are claimed).
    Probe(Option<Claiming>),
}

struct Worker {
    kind: Kind,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// While a peer is unreachable its deliveries stay parked in its queue; this task tries the
/// oldest pending one every probe interval until one gets through. A peer failure costs the
/// row no attempt; a message failure is that row's own (attempts + 1, or dead) and the probe
/// moves on to the next row.
async fn prober(
    ctx: Arc<Ctx>,
    peer_id: PeerId,
    claimed: Option<Claiming>,
    stop: CancellationToken,
) {
    tracing::warn!(peer = %peer_id, "peer unreachable; deliveries parked, probing");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.probe_interval) => {}
            _ = stop.cancelled() => return,
        }
        let probed = match claimed {
            Some(how) => ctx.probe_claimed(peer_id, how).await,
            None => ctx.probe(peer_id).await,
        };
        match probed {
            Ok(true) => {
                tracing::info!(peer = %peer_id, "peer reachable again; parked deliveries resume");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(peer = %peer_id, error = %e, "probe bookkeeping failed"),
        }
    }
}

async fn peer_worker(ctx: Arc<Ctx>, peer_id: PeerId, end: CancellationToken) {
    let opts = ConsumeOptions::new(
        &format!("kite-delivery-{peer_id}"),
        ctx.cfg.prefetch,
        usize::from(ctx.cfg.prefetch.max(1)),
    );
    tracing::info!(peer = %peer_id, "delivery consuming");
    let lane = ctx.lane.attach(
        peer_id,
        ctx.cfg.lane_capacity,
        ctx.cfg.attempts_in_flight.max(1) * 2,
        ctx.cfg.lease,
    );
    // Unsettled messages go back to the queue when the consumer ends. A consumer that
    // stops by itself (the peer parked or paused) ends the whole worker, local lane
    // included, so that the supervisor sees it finished and starts what the peer's state
    // asks for now: had the peer's health turned back meanwhile (a success recorded by an
    // attempt still in flight), a worker with a stopped consumer would otherwise stay and
    // nothing would take the peer's queue.
    let consumer = async {
        ctx.bus
            .consume(Queue::Peer(peer_id), &opts, end.clone(), |job| {
                let ctx = ctx.clone();
                async move {
                    match ctx.handle(peer_id, job).await {
                        Handled::Done => (Settle::Ack, Flow::Continue),
                        Handled::Retry => (Settle::Requeue, Flow::Continue),
                        Handled::Parked => (Settle::Ack, Flow::Stop),
                        Handled::PeerNotActive => (Settle::Requeue, Flow::Stop),
                    }
                }
            })
            .await;
        end.cancel();
    };
    tokio::join!(consumer, local(ctx.clone(), peer_id, lane, end.clone()));
}

/// Delivers what this process' ingest writer hands over for `peer_id` (the local lane),
/// with as many handoffs at once as the consumer takes messages, until `end`; then closes
/// the lane, lets the handoffs in flight finish and sends the rest through the broker.
/// A handoff the peer took whole frees its slot at once: its bookkeeping runs beside the
/// next ones (at most four times as many), and nothing here ends before it is done.
async fn local(
    ctx: Arc<Ctx>,
    peer_id: PeerId,
    mut lane: kite_bus::local::Attached<kite_store::outbox::DeliveryRow>,
    end: CancellationToken,
) {
    use futures::StreamExt;
    let most = usize::from(ctx.cfg.prefetch.max(1));
    let mut running = futures::stream::FuturesUnordered::new();
    let mut settling = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            h = lane.rx.recv(), if running.len() < most && settling.len() < most * 4 => match h {
                Some(h) => running.push(ctx.clone().handed(h)),
                None => break,
            },
            Some(rest) = running.next(), if !running.is_empty() => settling.extend(rest),
            Some(()) = settling.next(), if !settling.is_empty() => {}
            _ = end.cancelled() => break,
        }
    }
    ctx.lane.detach(peer_id, &mut lane);
    // Both at once: a handoff still sending must not hold back the writes of those done.
    loop {
        tokio::select! {
            Some(rest) = running.next(), if !running.is_empty() => settling.extend(rest),
            Some(()) = settling.next(), if !settling.is_empty() => {}
            else => break,
        }
    }
    while let Some(h) = lane.rx.recv().await {
        ctx.to_broker(h).await;
    }
}
