//! kite-kit: one way to drive kite instances from outside, shared by the end-to-end tests,
//! the bench and chaos runs, `kite demo` and `kite admin`.
//!
//! - [`admin`]: the typed admin API client, and [`admin::peer`] ("peer A with B");
//! - [`ready`]: the ready line `kite serve` prints;
//! - [`faults`]: fault injectors (broker connections, database backends);
//! - [`process`]: `kite serve` as a child process (environment, start, kill, terminate).

pub mod admin;
pub mod faults;
pub mod process;
pub mod ready;
