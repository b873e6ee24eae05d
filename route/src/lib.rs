//! kite-route: takes batches of stored events from `{prefix}.events`, applies the routing
//! rules (status, scopes, hops, loops), writes one outbox row per matching peer and publishes
//! the pending rows to each peer's delivery queue. A sweeper republishes work whose message
//! was lost.

use std::sync::Arc;
use std::time::Duration;

use kite_bus::{Bus, ConsumeOptions, Flow, Job, Message, Queue, Settle};
use kite_store::cache::{Cache, PeerSnapshot};
use kite_store::Store;
use kite_wire::ids::{Delivery, EventSeq};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This instance's id (loop checks).
    pub instance_id: String,
    /// Messages the broker hands over before they are settled.
    pub prefetch: u16,
    /// Messages routed at once.
    pub concurrency: usize,
    /// How long a message whose routing failed waits before it is handed back.
    pub retry_pause: Duration,
    /// Most events (and deliveries) one sweep republishes.
    pub sweep_limit: i64,
    /// Most events one retention pass deletes.
    pub prune_limit: i64,
    /// How often the sweeper looks for lost work.
    pub sweep_interval: Duration,
    /// How overdue work must be before the sweeper republishes it.
    pub sweep_grace: Duration,
    /// How long settled events are kept (duplicate window and stream replay).
    pub retention: Duration,
}

impl RouterConfig {
    /// The defaults for an instance: prefetch 32, 8 messages routed at once, a failed
    /// message handed back after 500 ms, sweeps every 5 s of work overdue by 30 s (5,000 at
    /// most), settled events kept 7 days (10,000 deleted a pass).
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            prefetch: 32,
            concurrency: 8,
            retry_pause: Duration::from_millis(500),
            sweep_limit: 5_000,
            prune_limit: 10_000,
            sweep_interval: Duration::from_secs(5),
            sweep_grace: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub mod rules;

pub use rules::{decide, Decision};

struct Router {
    store: Store,
    bus: Arc<Bus>,
    peers: Cache<PeerSnapshot>,
    cfg: RouterConfig,
}

/// Runs the router role until `shutdown` is cancelled.
pub async fn run(
    store: Store,
    bus: Arc<Bus>,
    config_generation: watch::Receiver<u64>,
    cfg: RouterConfig,
    shutdown: CancellationToken,
) {
    let router = Arc::new(Router {
        peers: Cache::new(store.clone(), config_generation),
        store,
        bus,
        cfg,
    });
    let sweeper = tokio::spawn(sweep_loop(router.clone(), shutdown.child_token()));
    consume_loop(router, shutdown.child_token()).await;
    let _ = sweeper.await;
}

async fn consume_loop(router: Arc<Router>, shutdown: CancellationToken) {
    let opts = ConsumeOptions::new("kite-router", router.cfg.prefetch, router.cfg.concurrency);
    router
        .bus
        .consume(Queue::Router, &opts, shutdown, |job| {
            let router = router.clone();
            async move { (router.handle(job).await, Flow::Continue) }
        })
        .await;
}

impl Router {
    async fn handle(&self, job: Job) -> Settle {
        let Message::Route { seqs } = job.message else {
            tracing::warn!("the router got a message that is not Route; dropped");
            return Settle::Ack;
        };
        match self.route(&seqs).await {
            Ok(()) => Settle::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "routing failed; message requeued");
                tokio::time::sleep(self.cfg.retry_pause).await;
                Settle::Requeue
            }
        }
    }

    async fn route(&self, seqs: &[EventSeq]) -> Result<(), RouteError> {
        let snapshot = self.peers.get().await?;
        let events = self
            .store
            .unrouted_events(seqs, &snapshot.filtering, &snapshot.reading_data)
            .await?;
        if events.is_empty() {
            return Ok(());
        }
        let rows = rules::outbox_rows(&self.cfg.instance_id, &snapshot, &events);
        let routed: Vec<EventSeq> = events.iter().map(|e| e.at).collect();
        let pending = self.store.commit_routing(&routed, &rows).await?;
        self.publish_pending(pending).await
    }

    async fn publish_pending(&self, pending: Vec<Delivery>) -> Result<(), RouteError> {
        self.bus.send_deliveries(pending).await?;
        Ok(())
    }

    async fn sweep(&self) -> Result<(), RouteError> {
        let Some(found) = self
            .store
            .sweep(self.cfg.sweep_grace, self.cfg.sweep_limit)
            .await?
        else {
            return Ok(());
        };
        if !found.events.is_empty() {
            tracing::info!(
                count = found.events.len(),
                "sweeper republishes unrouted events"
            );
            self.bus
                .send(&[Message::Route { seqs: found.events }])
                .await?;
        }
        if !found.rows.is_empty() {
            tracing::info!(
                count = found.rows.len(),
                "sweeper republishes overdue deliveries"
            );
            self.publish_pending(found.rows).await?;
        }
        Ok(())
    }
}

async fn sweep_loop(router: Arc<Router>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(router.cfg.sweep_interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = router.sweep().await {
            tracing::warn!(error = %e, "sweep failed");
        }
        match router
            .store
            .prune(router.cfg.retention, router.cfg.prune_limit)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "pruned events past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
        match router.store.analyze_changed().await {
            Ok(t) if t.is_empty() => {}
            Ok(t) => tracing::debug!(tables = ?t, "analyzed tables that changed a lot"),
            Err(e) => tracing::warn!(error = %e, "analyzing tables failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error(transparent)]
    Store(#[from] kite_store::StoreError),
    #[error(transparent)]
    Bus(#[from] kite_bus::BusError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_store::cache::RoutedPeer;
    use kite_store::peers::Peer;
    use kite_store::types::PeerHealth;
    use kite_store::types::PeerStatus;
    use kite_store::types::SkipReason;
    use kite_wire::fed::FedInfo;
    use kite_wire::scope::ScopeSet;

    /// [`decide`] for an event without attributes beyond its federation extensions.
    fn dec(self_id: &str, p: &RoutedPeer, ty: &str, fed: &FedInfo) -> Decision {
        decide(self_id, p, ty, fed, &mut crate::rules::facts(None, fed))
    }

    fn peer(
        scopes: &[&str],
        max_hops: i32,
        status: PeerStatus,
        instance: Option<&str>,
    ) -> RoutedPeer {
        let now = chrono::Utc::now();
        RoutedPeer {
            peer: Peer {
                id: kite_wire::ids::PeerId::default(),
                team_id: "t".into(),
                name: "b".into(),
                peer_hook_url: "http://127.0.0.1:9/hooks/t/kite".into(),
                outbound_token: String::new(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                filters: Vec::new(),
                ordering_key: None,
                on_dead: Default::default(),
                delivery: Default::default(),
                content_mode: Default::default(),
                max_hops,
                status,
                peer_instance_id: instance.map(str::to_string),
                last_error: None,
                last_status_code: None,
                last_error_at: None,
                last_success_at: None,
                consecutive_failures: 0,
                health: PeerHealth::Active,
                key_id: None,
                previous_outbound_token: None,
                previous_until: None,
                server_name: None,
                peer_base_url: None,
                peer_team: None,
                last_heartbeat_at: None,
                last_heartbeat_ok_at: None,
                heartbeat_failures: 0,
                inbound_token: None,
                protocol_version: None,
                created_at: now,
                updated_at: now,
            },
            scopes: ScopeSet::compile(scopes).ok(),
        }
    }

    fn fed(chain: &[&str]) -> FedInfo {
        FedInfo {
            origin: chain.first().map(|s| s.to_string()),
            chain: chain.iter().map(|s| s.to_string()).collect(),
            hops: chain.len() as u32,
        }
    }

    #[test]
    fn decide_follows_the_routing_rules() {
        let ty = "com.stripe.charge.succeeded";
        let b = peer(&["stripe.*"], 3, PeerStatus::Active, Some("b"));
        assert_eq!(dec("a", &b, ty, &fed(&[])), Decision::Forward);
        // Out of scope, or revoked: not for this peer at all.
        assert_eq!(dec("a", &b, "com.github.push", &fed(&[])), Decision::None);
        let revoked = peer(&["*"], 3, PeerStatus::Revoked, None);
        assert_eq!(dec("a", &revoked, ty, &fed(&[])), Decision::None);
        // A paused peer still gets its rows (they wait for it).
        let paused = peer(&["*"], 3, PeerStatus::Paused, None);
        assert_eq!(dec("a", &paused, ty, &fed(&[])), Decision::Forward);
        // A handshake peer routes once accepted, and while degraded; not while proposed.
        for (status, want) in [
            (PeerStatus::Proposed, Decision::None),
            (PeerStatus::Accepted, Decision::Forward),
            (PeerStatus::Degraded, Decision::Forward),
        ] {
            let p = peer(&["*"], 3, status, None);
            assert_eq!(dec("a", &p, ty, &fed(&[])), want, "{status}");
        }
        // Hops at the peer's limit.
        assert_eq!(
            dec("a", &b, ty, &fed(&["x", "y", "z"])),
            Decision::Skip(SkipReason::MaxHops)
        );
        // Loops: this instance, or the peer, already forwarded it.
        assert_eq!(
            dec("a", &b, ty, &fed(&["a"])),
            Decision::Skip(SkipReason::Loop)
        );
        assert_eq!(
            dec("a", &b, ty, &fed(&["b"])),
            Decision::Skip(SkipReason::Loop)
        );
        assert_eq!(dec("a", &b, ty, &fed(&["c"])), Decision::Forward);
        // Scopes that no longer compile match nothing.
        let broken = RoutedPeer {
            scopes: None,
            ..peer(&["*"], 3, PeerStatus::Active, None)
        };
        assert_eq!(dec("a", &broken, ty, &fed(&[])), Decision::None);
    }
}
