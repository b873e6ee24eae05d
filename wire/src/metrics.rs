//! The Prometheus metrics kite exposes (`KITE_METRICS_ADDR`, `/metrics`): their names, kinds,
//! labels and help texts, in one place for the roles that record them, the exporter that
//! describes them, the README and the tests.

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (seconds).
    Histogram,
}

/// Webhooks and federated events in, by `team`, `source` and `outcome` (`accepted`,
/// `duplicate`, `loop`, `rejected`).
pub const INGEST: &str = "kite_ingest_total";
/// Time from a hook request's start to its answer, by `source`.
pub const INGEST_SECONDS: &str = "kite_ingest_duration_seconds";
/// Routing decisions for (event, peer), by `reason` (`forward`, `max_hops`, `loop`,
/// `no_match`).
pub const ROUTING: &str = "kite_routing_decisions_total";
/// Deliveries the ingest writer passed on, by `lane`: `local` (to this process' own delivery
/// role, no broker message) or `broker` (a peer's queue).
pub const HANDED: &str = "kite_deliveries_handed_total";
/// Delivery attempts, by `team`, `peer` and `outcome` (`delivered`, `peer_failure`,
/// `message_failure`, `gone`, `revoked`).
pub const ATTEMPTS: &str = "kite_delivery_attempts_total";
/// Duration of one delivery attempt, by `team` and `peer`.
pub const ATTEMPT_SECONDS: &str = "kite_delivery_attempt_duration_seconds";
/// From an event's receipt to a peer's 2xx, one observation per delivered outbox row, by
/// `team` and `peer`.
pub const END_TO_END_SECONDS: &str = "kite_end_to_end_seconds";
/// Batch requests sent to peers that offered batches (each carrying 2 to 64 events), by
/// `team` and `peer`.
pub const BATCHES: &str = "kite_delivery_batches_total";
/// Events sent in those batches, by `team` and `peer`.
pub const BATCHED_EVENTS: &str = "kite_delivery_batched_events_total";
/// Deliveries that gave up (`dead`), by `team` and `peer`.
pub const DEAD: &str = "kite_deliveries_dead_total";
/// Dead deliveries put back in line by `replay-dead`, by `team` and `peer`.
pub const REPLAYED: &str = "kite_deliveries_replayed_total";
/// Deliveries waiting (a paused peer's included), by `team` and `peer`.
pub const PENDING: &str = "kite_deliveries_pending";
/// Deliveries parked because their peer is unreachable, by `team` and `peer`.
pub const PARKED: &str = "kite_deliveries_parked";
/// Open `/ws` connections, by `team`.
pub const WS_CONNECTIONS: &str = "kite_ws_connections";
/// Database connections in use.
pub const DB_POOL_IN_USE: &str = "kite_db_pool_connections_in_use";
/// Database connections open (in use or idle).
pub const DB_POOL_OPEN: &str = "kite_db_pool_connections_open";
/// The most database connections the pool opens.
pub const DB_POOL_MAX: &str = "kite_db_pool_connections_max";
/// Keys of non-peer servers held as a peer vouched for them (bounded, expiring).
pub const VOUCHED_KEYS: &str = "kite_federation_vouched_keys";
/// Signed server-to-server requests remembered by the replay cache (bounded).
pub const REPLAY_ENTRIES: &str = "kite_federation_replay_cache_entries";
/// Operational events emitted (`kite.peer.degraded`, `kite.delivery.dead`, ...), by `team`
/// and `type`.
pub const OPERATIONAL_EVENTS: &str = "kite_operational_events_total";
/// Changes folded into another operational event by coalescing (a flapping peer's, dead
/// deliveries counted in one event), by `team`.
pub const OPERATIONAL_COALESCED: &str = "kite_operational_coalesced_total";
/// What the process metrics' names start with before `process_`: nothing, so they carry the
/// standard names every Prometheus client library uses (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, ...).
pub const PROCESS_PREFIX: &str = "";

/// Every metric kite records itself: name, kind, labels, help.
pub const ALL: &[(&str, Kind, &[&str], &str)] = &[
    (
        INGEST,
        Kind::Counter,
        &["team", "source", "outcome"],
        "Webhooks and federated events in, by outcome (accepted, duplicate, loop, rejected).",
    ),
    (
        INGEST_SECONDS,
        Kind::Histogram,
        &["source"],
        "Time from a hook request's start to its answer.",
    ),
    (
        ROUTING,
        Kind::Counter,
        &["reason"],
        "Routing decisions for an event and a peer (forward, max_hops, loop, no_match).",
    ),
    (
        HANDED,
        Kind::Counter,
        &["lane"],
        "Deliveries the ingest writer passed on, by lane (local: this process' delivery role; broker: a peer's queue).",
    ),
    (
        ATTEMPTS,
        Kind::Counter,
        &["team", "peer", "outcome"],
        "Delivery attempts by outcome (delivered, peer_failure, message_failure, gone, revoked).",
    ),
    (
        ATTEMPT_SECONDS,
        Kind::Histogram,
        &["team", "peer"],
        "Duration of one delivery attempt.",
    ),
    (
        END_TO_END_SECONDS,
        Kind::Histogram,
        &["team", "peer"],
        "From an event's receipt to the peer's 2xx, one observation per delivered row.",
    ),
    (
        BATCHES,
        Kind::Counter,
        &["team", "peer"],
        "Batch requests sent to peers that offered batches (2 to 64 events each).",
    ),
    (
        BATCHED_EVENTS,
        Kind::Counter,
        &["team", "peer"],
        "Events sent in batch requests.",
    ),
    (
        DEAD,
        Kind::Counter,
        &["team", "peer"],
        "Deliveries that gave up.",
    ),
    (
        REPLAYED,
        Kind::Counter,
        &["team", "peer"],
        "Dead deliveries put back in line.",
    ),
    (
        PENDING,
        Kind::Gauge,
        &["team", "peer"],
        "Deliveries waiting, a paused peer's included.",
    ),
    (
        PARKED,
        Kind::Gauge,
        &["team", "peer"],
        "Deliveries parked while their peer is unreachable.",
    ),
    (
        WS_CONNECTIONS,
        Kind::Gauge,
        &["team"],
        "Open /ws connections.",
    ),
    (
        DB_POOL_IN_USE,
        Kind::Gauge,
        &[],
        "Database connections in use.",
    ),
    (DB_POOL_OPEN, Kind::Gauge, &[], "Database connections open."),
    (
        VOUCHED_KEYS,
        Kind::Gauge,
        &[],
        "Keys of non-peer servers held as a peer vouched for them (bounded, expiring).",
    ),
    (
        REPLAY_ENTRIES,
        Kind::Gauge,
        &[],
        "Signed server-to-server requests the replay cache remembers (bounded).",
    ),
    (
        DB_POOL_MAX,
        Kind::Gauge,
        &[],
        "The most database connections the pool opens.",
    ),
    (
        OPERATIONAL_EVENTS,
        Kind::Counter,
        &["team", "type"],
        "Operational events emitted (kite.peer.degraded, kite.delivery.dead, ...).",
    ),
    (
        OPERATIONAL_COALESCED,
        Kind::Counter,
        &["team"],
        "Changes folded into another operational event by coalescing.",
    ),
];

/// Histogram buckets, in seconds: 1 ms to 60 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        for (name, kind, labels, _) in ALL {
            assert!(name.starts_with("kite_"), "{name}");
            assert_eq!(*kind == Kind::Counter, name.ends_with("_total"), "{name}");
            for l in *labels {
                assert!(
                    ["team", "source", "peer", "outcome", "reason", "lane", "type"].contains(l),
                    "{name}: {l}"
                );
            }
        }
    }
}
