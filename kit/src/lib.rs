//! kite-kit: one way to drive kite instances from outside, shared by the end-to-end tests,
//! the bench and chaos runs, `kite demo` and `kite admin`.
//!
//! - [`client`]: the typed client of the admin API (`ApiClient`), and [`client::peer`]
//!   ("peer A with B");
//! - [`ready`]: the ready line `kite serve` prints;
//! - [`faults`]: fault injectors (broker connections, database backends);
//! - [`pg`], [`rabbit`], [`netns`]: a Postgres server, a RabbitMQ cluster and a network
//!   namespace of a test's own, to restart, kill, pause and cut ([`cmd`] runs their
//!   commands);
//! - [`process`]: `kite serve` as a child process (environment, start, kill, terminate);
//! - `hostile` (feature `hostile`, tests only): a fake kite server that joins through a
//!   genuine invitation and then misbehaves.

pub mod client;
pub mod cmd;
pub mod faults;
#[cfg(feature = "hostile")]
pub mod hostile;
pub mod netns;
pub mod pg;
pub mod process;
pub mod rabbit;
pub mod ready;
