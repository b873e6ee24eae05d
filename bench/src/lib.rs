//! kite-bench: a receiving federation sink and a webhook load generator for measuring kite.
//!
//! - [`sink`]: an HTTP server that plays a federation peer, verifies signatures, counts events
//!   and duplicates and records end-to-end latency.
//! - [`load`]: an open-loop, fixed-rate webhook generator with bounded concurrency.
//! - [`run`]: the self-contained A→sink benchmark (starts kite as a child process).
//! - [`chaos`]: A (three processes) federating to B while faults are injected; counts losses
//!   and duplicates at B.
//! - [`hostile`]: hostile requests of every kind mixed into a chaos run (`--hostile`).
//! - [`harness`]: starting kite children, admin calls, `psql`, cleanup (shared by both).
//! - [`stats`]: percentile helpers.

pub mod chaos;
pub mod cpu;
pub mod harness;
pub mod hostile;
pub mod load;
pub mod run;
pub mod sink;
pub mod soak;
pub mod stats;

/// Microseconds since the UNIX epoch, by the wall clock (0 if the clock is before 1970).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `n` random lowercase hex characters (from UUIDv4 random bits), `n` at most 24.
pub fn random_hex(n: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    // The first 12 characters are fully random; skip the version nibble after them.
    let tail = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(12);
    s.push_str(&tail[..12]);
    s.truncate(n.min(24));
    s
}
