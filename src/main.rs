//! The `kite` binary: `serve`, `migrate`, `listen`, `demo` and `admin`, over the `kite`
//! library.

use clap::{Parser, Subcommand};
use kite::{admin, demo, listen, serve};

/// kite: a webhook federation relay.
#[derive(Debug, Parser)]
#[command(name = "kite", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an instance (ingress, router and delivery by default).
    Serve(Box<serve::ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(serve::DbArgs),
    /// Print events as they arrive at an instance.
    Listen(listen::ListenArgs),
    /// Start two federated instances, relay a sample event from A to B, keep both running.
    Demo(demo::DemoArgs),
    /// Admin API verbs (keys, tokens, peers) and `secret-key`.
    Admin(admin::AdminArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing();
    kite::install_tls_provider();
    let result = match cli.command {
        Command::Serve(a) => serve::serve(*a).await,
        Command::Migrate(a) => serve::migrate(a).await,
        Command::Listen(a) => listen::listen(a).await,
        Command::Demo(a) => demo::demo(a).await,
        Command::Admin(a) => admin::admin(a).await,
    };
    if let Err(e) = result {
        let code = if e.chain().any(|c| c.is::<listen::AuthFailed>()) {
            2
        } else {
            1
        };
        eprintln!("kite: error: {e:#}");
        std::process::exit(code);
    }
}
