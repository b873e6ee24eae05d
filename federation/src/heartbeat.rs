//! Heartbeats: every interval, a signed heartbeat to each handshake peer (one process of
//! several sends it: the store hands each out once an interval), carrying this server's
//! current keys. What came of it moves the peer's status ([`kite_store::federation::heartbeat_status`]);
//! a peer that answers `peer_revoked` is revoked here too.

use std::sync::Arc;

use chrono::Utc;
use kite_store::peers::Peer;
use kite_wire::peering::{self, Heartbeat};
use tokio_util::sync::CancellationToken;

use crate::{FedError, Federation};

/// Sends heartbeats until `stop` is cancelled.
pub async fn run(fed: Arc<Federation>, stop: CancellationToken) {
    let interval = fed.cfg.heartbeat_interval;
    let tick = (interval / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    loop {
        match fed.store.claim_heartbeats(interval).await {
            Ok(peers) => {
                let sends = peers.into_iter().map(|p| {
                    let fed = fed.clone();
                    async move { fed.beat(&p).await }
                });
                futures::future::join_all(sends).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim heartbeats"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

impl Federation {
    /// Sends one heartbeat to a handshake peer and records what came of it.
    async fn beat(&self, peer: &Peer) {
        let (Some(base), Some(team), Some(server)) = (
            peer.peer_base_url.as_deref(),
            peer.peer_team.as_deref(),
            peer.server_name.as_deref(),
        ) else {
            return;
        };
        let keys = match self.published_keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this server's keys");
                return;
            }
        };
        let hb = Heartbeat {
            server_name: self.cfg.server_name.clone(),
            team: peer.team_id.clone(),
            keys,
            sent_at: Utc::now(),
            protocol_versions: peering::PROTOCOL_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect(),
        };
        let body = serde_json::to_vec(&hb).unwrap_or_default();
        let result = self
            .post_signed(
                &peering::heartbeat_url(base, team),
                server,
                body,
                peering::MAX_ANSWER_BYTES,
            )
            .await;
        let (interval, misses) = (self.cfg.heartbeat_interval, self.cfg.heartbeat_misses);
        let recorded = match &result {
            Ok(_) => {
                self.store
                    .record_heartbeat_sent(peer.id, Ok(()), interval, misses)
                    .await
            }
            Err(FedError::Refused { code, .. })
                if kite_wire::Code::parse(code) == Some(kite_wire::Code::PeerRevoked) =>
            {
                tracing::info!(peer = %peer.name, "the peer revoked this server");
                self.store.mark_revoked_by_peer(peer.id, code).await
            }
            Err(e) => {
                let error = match e {
                    FedError::Refused { code, message, .. } => format!("{code}: {message}"),
                    e => e.to_string(),
                };
                tracing::debug!(peer = %peer.name, error = %error, "heartbeat not taken");
                self.store
                    .record_heartbeat_sent(peer.id, Err(&error), interval, misses)
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(peer = %peer.name, error = %e, "cannot record a heartbeat");
        }
    }
}
