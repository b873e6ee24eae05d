//! The `kite` binary: `serve`, `migrate`, `listen`, `demo`, `admin` and `completions`, over
//! the `kite` library.

use clap::{CommandFactory, Parser, Subcommand};
use kite::{cli, demo, listen, serve, settings, trigger};

/// kite: a webhook federation relay.
#[derive(Debug, Parser)]
#[command(name = "kite", version = kite::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an instance (ingress, router and delivery by default).
    Serve(Box<settings::Settings>),
    /// Apply database migrations and exit.
    Migrate(settings::DbSettings),
    /// Print events as they arrive at an instance.
    Listen(listen::ListenArgs),
    /// Start two federated instances, relay a sample event from A to B, keep both running.
    Demo(demo::DemoArgs),
    /// Every admin API verb (peers, trusted senders, tokens, keys, sources, outbox, events,
    /// teams, identity, policy, invitations) and `secret-key`.
    Admin(cli::AdminArgs),
    /// Peer with another server by invitation (invite, accept) and see peers' health.
    Peer(cli::PeerArgs),
    /// Post a realistic sample webhook (Stripe, GitHub, Slack) to an instance's hook,
    /// signed when given the source's secret.
    Trigger(trigger::TriggerArgs),
    /// Print a shell completion script.
    ///
    /// For example `kite completions bash > ~/.local/share/bash-completion/completions/kite`.
    Completions {
        /// The shell (bash, zsh, fish, elvish or powershell).
        shell: clap_complete::Shell,
    },
}

/// Logs to stderr, filtered by `RUST_LOG`, else at `default`: text (coloured only on a
/// terminal) or, with `KITE_LOG_FORMAT=json`, one JSON object a line; and, given `exporter`,
/// exports kite's spans to OpenTelemetry.
fn init_tracing(default: &str, exporter: Option<&kite::telemetry::Exporter>) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = std::env::var("KITE_LOG_FORMAT").unwrap_or_default();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format.trim().to_ascii_lowercase().as_str() {
        "json" => fmt
            .json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
        "" | "text" => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        other => {
            return Err(format!(
                "KITE_LOG_FORMAT must be text or json, got {other:?}"
            ))
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(exporter.map(|e| e.layer()))
        .try_init()
        .map_err(|e| e.to_string())
}

/// The process' allocator (see the dependency's note in Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // The settings file of `kite serve` fills what flags and the environment leave unset.
    let cli =
        match settings::with_settings_file(Cli::command(), "serve", std::env::args_os().collect())
            .and_then(Cli::try_parse_from)
        {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kite", &mut script);
        // A closed pipe (`kite completions bash | head`) is not an error worth a message.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return;
    }
    // Only a server exports spans.
    let exporter = match &cli.command {
        Command::Serve(_) => kite::telemetry::Exporter::from_env().unwrap_or_else(|e| {
            eprintln!("kite: error: {e}");
            std::process::exit(1);
        }),
        _ => None,
    };
    // The demo prints its own story on stdout; its instances log warnings themselves.
    if let Err(e) = init_tracing(
        if matches!(cli.command, Command::Demo(_)) {
            "warn"
        } else {
            "info"
        },
        exporter.as_ref(),
    ) {
        eprintln!("kite: error: {e}");
        std::process::exit(1);
    }
    kite::install_tls_provider();
    let result = match cli.command {
        Command::Serve(a) => serve::serve(*a).await,
        Command::Migrate(a) => serve::migrate(a).await,
        Command::Listen(a) => listen::listen(a).await,
        Command::Demo(a) => demo::demo(a).await,
        Command::Admin(a) => cli::admin(a).await,
        Command::Peer(a) => cli::peer(a).await,
        Command::Trigger(a) => trigger::trigger(a).await,
        Command::Completions { .. } => Ok(()),
    };
    if let Some(e) = exporter {
        // The batch processor's export blocks: not on the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    }
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
