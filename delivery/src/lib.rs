//! kite-delivery: one consumer per active peer on `{prefix}.deliver.{peer_id}`; signed POSTs
//! in the Kite wire format; outbox state in Postgres; retries through TTL tier queues;
//! `dead` after the last attempt.
//!
//! - [`retry`]: the backoff between attempts;
//! - [`outcome`]: what an attempt's result is ([`classify_status`]) and what it does to its
//!   row and peer ([`settle`], a pure function);
//! - `attempt`: one signed POST;
//! - `record`: a batch, a probe, and writing their results;
//! - `results`: group commit of those results;
//! - `held`: the rows this process is delivering, so a message that brings one back
//!   meanwhile is dropped;
//! - `supervisor`: one consumer or prober per peer ([`run`]).

mod attempt;
mod claimed;
mod gate;
mod held;
mod operational;
pub mod outcome;
mod record;
mod results;
pub mod retry;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use kite_bus::Bus;
use kite_store::Store;

pub use kite_federation::{http_client, ClientError};
pub use outcome::{
    classify_error, classify_refusal, classify_status, settle, Outcome, PeerEffect, RowChange,
};
pub use retry::RetryPolicy;
pub use supervisor::run;

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// This instance's id (appended to forwarded chains).
    pub instance_id: String,
    /// Backoff.
    pub retry: RetryPolicy,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Messages in flight per peer consumer.
    pub prefetch: u16,
    /// Failures in a row after which a peer is `unreachable` and its deliveries are parked.
    pub failure_threshold: i32,
    /// How often an unreachable peer is probed.
    pub probe_interval: Duration,
    /// Deliver to loopback and private addresses (otherwise refused at connect time).
    pub allow_private_peers: bool,
    /// PEM file of an extra CA to trust for peers' TLS certificates.
    pub peer_ca: Option<std::path::PathBuf>,
    /// Attempts of one batch made at once.
    pub attempts_in_flight: usize,
    /// Requests to one peer in flight at once from this process, unless the peer's policy
    /// says (`max_in_flight`). It bounds the connections to a peer, however slowly it
    /// answers; at the default, one peer to a host, it is what the HTTP client keeps idle
    /// for that host (`kite_federation::client::IDLE_PER_HOST`).
    pub max_in_flight: u32,
    /// Rows a probe may settle as message failures before it waits for the next probe.
    pub probe_rows: usize,
    /// How often the supervisor reloads peers even without a change notice.
    pub supervise_interval: Duration,
    /// How long a message whose bookkeeping failed waits before it is handed back.
    pub retry_pause: Duration,
    /// How long rows handed over by this process' ingest writer (the local lane) are
    /// leased: not due for anyone else until then. After a crash, the sweeper publishes
    /// them once the lease and its grace are over.
    pub lease: Duration,
    /// Handoffs a peer's local lane holds before the ingest writer uses the broker.
    pub lane_capacity: usize,
    /// The coalescing window of operational events (`kite_store::operational::coalesce`).
    pub operational_window: Duration,
    /// How often operational signals are read and operational deliveries sent.
    pub operational_poll: Duration,
}

impl DeliveryConfig {
    /// The defaults for an instance: 10 attempts from 1 s doubling to 5 min, 15 s requests,
    /// 16 messages in flight a peer with 32 attempts at once, at most 256 requests to a
    /// peer at once, unreachable after 5 failures in a row, probed every 30 s (up to 20
    /// rows a probe), private peers refused, peers reloaded every 2 s at least, failed
    /// bookkeeping retried after 500 ms, local rows leased for 30 s, 64 handoffs a peer's
    /// lane (of at most two rounds of attempts), operational events coalesced over a
    /// minute, read twice a second.
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(15),
            prefetch: 16,
            failure_threshold: 5,
            probe_interval: Duration::from_secs(30),
            allow_private_peers: false,
            peer_ca: None,
            attempts_in_flight: 32,
            max_in_flight: kite_federation::client::IDLE_PER_HOST as u32,
            probe_rows: 20,
            supervise_interval: Duration::from_secs(2),
            retry_pause: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            lane_capacity: 64,
            operational_window: Duration::from_secs(60),
            operational_poll: Duration::from_millis(500),
        }
    }
}

/// What every delivery task shares.
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) bus: Arc<Bus>,
    /// This process' local lane: what its ingest writer hands its workers.
    pub(crate) lane: Arc<kite_bus::LocalLane<kite_store::outbox::DeliveryRow>>,
    pub(crate) http: reqwest::Client,
    pub(crate) fed: Arc<kite_federation::Federation>,
    pub(crate) cfg: DeliveryConfig,
    /// Writes delivery results, batches that finish together in one statement.
    pub(crate) results: results::ResultWriter,
    /// When each peer's last all-success batch was written to its record (the next ones
    /// within a second skip that write).
    pub(crate) recorded_success:
        std::sync::Mutex<std::collections::HashMap<kite_wire::ids::PeerId, std::time::Instant>>,
    /// Peer URLs parsed once, by their text.
    pub(crate) dests: std::sync::Mutex<std::collections::HashMap<String, attempt::Dest>>,
    /// Each peer's gate: the most requests to it in flight from this process.
    pub(crate) gates: gate::Gates,
    /// The rows this process is delivering now (`held`).
    pub(crate) held: Arc<held::Holding>,
    /// The peers that offered batches: the URL that offered and how many events a batch.
    pub(crate) batching:
        std::sync::Mutex<std::collections::HashMap<kite_wire::ids::PeerId, (String, usize)>>,
}

impl Ctx {
    /// Forgets what is kept by peer (gates, batch offers, success records) for peers no
    /// longer in `live`: deleted peers leave nothing behind.
    pub(crate) fn forget_all_but(&self, live: &std::collections::HashSet<kite_wire::ids::PeerId>) {
        self.gates.keep_only(live);
        if let Ok(mut m) = self.recorded_success.lock() {
            m.retain(|id, _| live.contains(id));
        }
        if let Ok(mut m) = self.batching.lock() {
            m.retain(|id, _| live.contains(id));
        }
    }
}

/// A delivery failure that leaves the message for later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error(transparent)]
    Store(#[from] kite_store::StoreError),
    #[error(transparent)]
    Bus(#[from] kite_bus::BusError),
}

/// What handling one message led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Processed; ack.
    Done,
    /// Processed, and the peer just became unreachable or was paused; ack and stop
    /// consuming.
    Parked,
    /// The peer is paused or parked; hand the message back and stop consuming.
    PeerNotActive,
    /// Bookkeeping failed; hand the message back for later.
    Retry,
}
