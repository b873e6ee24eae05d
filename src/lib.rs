//! kite, the webhook federation relay, as a library: what the `kite` binary runs. An
//! instance can start in-process with [`serve::run`] (configuration and a shutdown signal).

/// The package version and the git revision it was built from (build.rs): what
/// `kite --version` prints and `/health` answers.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KITE_GIT_REV"), ")");

pub mod cli;
pub mod demo;
pub mod forward;
pub mod listen;
pub mod metrics;
pub mod serve;
pub mod settings;
pub mod startup;
pub mod stdout;
pub mod telemetry;
pub mod trigger;

/// Makes aws-lc-rs the process' TLS provider (serving, peers, `kite listen`). rustls picks
/// one by itself only when exactly one is compiled in; naming it keeps that true whatever
/// else the build pulls in. Calling it again does nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
