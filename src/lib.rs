//! kite, the webhook federation relay, as a library: what the `kite` binary runs. An
//! instance can start in-process with [`serve::run`] (configuration and a shutdown signal).

pub mod admin;
pub mod demo;
pub mod listen;
pub mod serve;
