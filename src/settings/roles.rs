//! Each role's configuration, derived from the settings (defaults are the roles' own).

use std::time::Duration;

use kite_delivery::{DeliveryConfig, RetryPolicy};
use kite_federation::FederationConfig;
use kite_http::server::ServerLimits;
use kite_http::{IngressConfig, Rate};
use kite_route::RouterConfig;

use super::Settings;

impl Settings {
    /// The retry schedule of deliveries.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            max_delay: Duration::from_millis(self.retry_max_delay_ms),
            max_attempts: self.retry_max_attempts,
        }
    }

    /// The router role's configuration.
    pub fn router(&self, instance_id: &str) -> RouterConfig {
        RouterConfig {
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            sweep_grace: Duration::from_millis(self.sweep_grace_ms),
            retention: Duration::from_secs(self.retention_secs),
            ..RouterConfig::new(instance_id)
        }
    }

    /// The delivery role's configuration.
    pub fn delivery(&self, instance_id: &str) -> DeliveryConfig {
        DeliveryConfig {
            retry: self.retry(),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            failure_threshold: self.peer_failure_threshold,
            max_in_flight: self.peer_max_in_flight,
            probe_interval: Duration::from_millis(self.peer_probe_interval_ms),
            lease: Duration::from_millis(self.delivery_lease_ms),
            operational_window: Duration::from_millis(self.operational_window_ms),
            allow_private_peers: self.allow_private_peers,
            peer_ca: self.peer_ca.clone(),
            ..DeliveryConfig::new(instance_id)
        }
    }

    /// The ingress role's configuration.
    pub fn ingress(&self, instance_id: &str) -> IngressConfig {
        let rate = |per_second, burst| Rate { per_second, burst };
        IngressConfig {
            version: crate::VERSION.to_owned(),
            ingest: kite_ingest::IngestConfig {
                queue: self.ingest_queue,
                ..kite_ingest::IngestConfig::new(instance_id)
            },
            stream_max_connections: self.stream_max_connections,
            stream_max_per_key: self.stream_max_per_key,
            stream_stall: Duration::from_millis(self.stream_stall_ms),
            stream_connect_timeout: Duration::from_millis(self.stream_connect_timeout_ms),
            require_signed_hooks: self.require_signed_hooks,
            allow_private_peers: self.allow_private_peers,
            secret_overlap: Duration::from_secs(self.secret_overlap_secs),
            operator_key: self.operator_key.clone(),
            team_rate: rate(self.rate_team_per_sec, self.rate_team_burst),
            sender_rate: rate(self.rate_sender_per_sec, self.rate_sender_burst),
            anon_rate: rate(
                self.rate_unauthenticated_per_sec,
                self.rate_unauthenticated_burst,
            ),
            peer_rate: rate(self.rate_peer_per_sec, self.rate_peer_burst),
            ..IngressConfig::new(instance_id)
        }
    }

    /// Federation's configuration; `listen_url` is the public URL unless one is set.
    pub fn federation(&self, instance_id: &str, listen_url: Option<&str>) -> FederationConfig {
        FederationConfig {
            public_url: self
                .public_url
                .as_deref()
                .or(listen_url)
                .map(|u| u.trim_end_matches('/').to_string()),
            heartbeat_interval: Duration::from_secs(self.heartbeat_interval_secs),
            heartbeat_misses: self.heartbeat_misses,
            key_overlap: Duration::from_secs(self.key_overlap_secs),
            key_rotation: (self.key_rotation_secs > 0)
                .then(|| Duration::from_secs(self.key_rotation_secs)),
            request_timeout: Duration::from_millis(self.federation_timeout_ms),
            allow_private_peers: self.allow_private_peers,
            peer_ca: self.peer_ca.clone(),
            ..FederationConfig::new(instance_id)
        }
    }

    /// The HTTP server's bounds.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}
