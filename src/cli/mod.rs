//! `kite admin`: every admin API verb at the command line, through the kit's typed client
//! ([`kite_kit::client::ApiClient`]), printed as a table or as the API's JSON; and
//! `secret-key`, which makes a KITE_SECRET_KEY.
//!
//! Settings come from `--instance`/`--api-key`, then `KITE_INSTANCE`/`KITE_API_KEY`, then
//! the config file `kite listen` reads (`~/.config/kite/config.toml`).

mod federation;
mod output;
mod resources;
mod rows;
mod trust;

pub use federation::{PeerCreate, PeerUpdate, PeerVerb, SenderVerb, TokenVerb};
pub use output::OutputFormat;
pub use resources::{
    EventListArgs, EventVerb, EventsArgs, KeyVerb, OutboxArgs, OutboxFilterArgs, OutboxVerb,
    SourceVerb, TeamVerb,
};
pub use trust::{IdentityVerb, InvitationVerb, OperationalVerb, PeerArgs, PeerCommand, PolicyVerb};

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::builder::TypedValueParser;
use clap::{Args, Subcommand};
use kite_kit::client::{ApiClient, ClientError};
use kite_store::types::Spelled;

use crate::listen::AuthFailed;
use output::Printer;

/// The instance `kite admin` calls when no flag, variable or config file names one.
pub const DEFAULT_INSTANCE: &str = "http://127.0.0.1:7700";

/// Where `kite admin` and `kite peer` call, with which key, and how they print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Root URL of the instance (http(s)://host:port); else the config file's `instance`,
    /// else http://127.0.0.1:7700.
    #[arg(long, env = "KITE_INSTANCE", global = true)]
    pub instance: Option<String>,
    /// API key: a team admin key (the operator key for `teams`); else the config file's
    /// `api_key`.
    #[arg(long, env = "KITE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Config file (default ~/.config/kite/config.toml) with `instance` and `api_key`.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// `table`: aligned columns for lists, `key: value` lines for one object; `json`: the
    /// API's JSON answer.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
}

/// `kite admin` options.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The instance, key and output.
    #[command(flatten)]
    pub conn: Connection,
    /// The verb.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// An admin resource and its verb. Without a verb, a resource is listed.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Print a new random KITE_SECRET_KEY (32 bytes, base64).
    SecretKey,
    /// API keys of the team.
    Keys {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<KeyVerb>,
    },
    /// Federation tokens (shared secrets for one direction of a peering), minted here for a
    /// sender.
    Tokens {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<TokenVerb>,
    },
    /// Peers: instances this one forwards events to.
    Peers {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<PeerVerb>,
    },
    /// Trusted senders: instances allowed to forward events to this one.
    TrustedSenders {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<SenderVerb>,
    },
    /// Signed provider sources (`/hooks/{team}/{name}` checks their signature).
    Sources {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<SourceVerb>,
    },
    /// Deliveries: one row per event and peer, with where it stands.
    Outbox(OutboxArgs),
    /// Stored events, in seq order.
    Events(EventsArgs),
    /// Teams of the instance (with the operator key, KITE_OPERATOR_KEY of `kite serve`).
    Teams {
        /// What to do with them (default: list).
        #[command(subcommand)]
        verb: Option<TeamVerb>,
    },
    /// The instance's identity: its server descriptor and Ed25519 keys.
    Identity {
        /// What to do (default: show).
        #[command(subcommand)]
        verb: Option<IdentityVerb>,
    },
    /// The team's federation policy: who may peer with it.
    Policy {
        /// What to do (default: show).
        #[command(subcommand)]
        verb: Option<PolicyVerb>,
    },
    /// The team's operational endpoint: where kite POSTs its own events (a peer degraded,
    /// unreachable or recovered, a delivery dead, a peer joined or revoked, the identity
    /// rotated), signed with Standard Webhooks.
    Operational {
        /// What to do (default: show).
        #[command(subcommand)]
        verb: Option<OperationalVerb>,
    },
    /// The team's invitations (`kite peer invite` makes them).
    Invitations {
        /// What to do (default: list).
        #[command(subcommand)]
        verb: Option<InvitationVerb>,
    },
}

/// What a verb works with: the client for the instance and the printer.
pub(crate) struct Ctx {
    /// The typed admin client.
    pub(crate) client: ApiClient,
    /// Prints answers in the chosen `--output`.
    pub(crate) out: Printer,
}

/// Runs an admin verb.
pub async fn admin(a: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::SecretKey = a.command {
        crate::stdout::println(&kite_wire::secret_box::SecretBox::generate_key());
        return Ok(());
    }
    let ctx = Ctx::connect(&a.conn)?;
    let done = match a.command {
        AdminCommand::SecretKey => Ok(()),
        AdminCommand::Keys { verb } => resources::keys(&ctx, verb).await,
        AdminCommand::Tokens { verb } => federation::tokens(&ctx, verb).await,
        AdminCommand::Peers { verb } => federation::peers(&ctx, verb).await,
        AdminCommand::TrustedSenders { verb } => federation::senders(&ctx, verb).await,
        AdminCommand::Sources { verb } => resources::sources(&ctx, verb).await,
        AdminCommand::Outbox(o) => resources::outbox(&ctx, o).await,
        AdminCommand::Events(e) => resources::events(&ctx, e).await,
        AdminCommand::Teams { verb } => resources::teams(&ctx, verb).await,
        AdminCommand::Identity { verb } => trust::identity(&ctx, verb).await,
        AdminCommand::Policy { verb } => trust::policy(&ctx, verb).await,
        AdminCommand::Invitations { verb } => trust::invitations(&ctx, verb).await,
        AdminCommand::Operational { verb } => trust::operational(&ctx, verb).await,
    };
    done.map_err(explained)
}

/// Runs a `kite peer` verb.
pub async fn peer(a: PeerArgs) -> anyhow::Result<()> {
    let ctx = Ctx::connect(&a.conn)?;
    trust::peer(&ctx, a.command).await.map_err(explained)
}

/// An admin error in a verb's result as a message naming the URL and the fix.
fn explained(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<ClientError>() {
        Ok(e) => explain(e),
        Err(e) => e,
    }
}

impl Ctx {
    fn connect(conn: &Connection) -> anyhow::Result<Self> {
        let (instance, key) = settings(conn)?;
        let client = ApiClient::for_instance(&instance, &key).map_err(explain)?;
        Ok(Ctx {
            client,
            out: Printer::new(conn.output),
        })
    }
}

/// The instance and the API key: flags, then the environment (clap reads both), then the
/// config file (read only when one of them is missing).
fn settings(a: &Connection) -> anyhow::Result<(String, String)> {
    let (mut instance, mut key) = (a.instance.clone(), a.api_key.clone());
    if instance.is_none() || key.is_none() {
        let file = crate::listen::load_file_config(a.config.as_ref())?;
        instance = instance.or_else(|| file.instance());
        key = key.or_else(|| file.api_key());
    }
    let key = key.context(
        "no API key: pass --api-key, set KITE_API_KEY, or put `api_key` in ~/.config/kite/config.toml",
    )?;
    Ok((
        instance.unwrap_or_else(|| DEFAULT_INSTANCE.to_string()),
        key,
    ))
}

/// An admin error as a message that names the URL and what to do about it.
fn explain(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::NoScheme { url } => anyhow!(
            "--instance needs an http(s):// URL, got {url:?}: use --instance http://{}",
            url.trim()
        ),
        ClientError::NotRoot { url, root } => anyhow!(
            "--instance is the instance's root URL, not a path under it: got {url:?}, use --instance {root}"
        ),
        ClientError::BadUrl { url, reason } => {
            anyhow!("--instance {url:?} is not a URL ({reason}): use http(s)://host:port")
        }
        ClientError::Unreachable { url, source } => anyhow::Error::new(source).context(format!(
            "cannot reach {url}: is kite running there? (check --instance / KITE_INSTANCE)"
        )),
        ClientError::Status {
            status: 401,
            method,
            url,
            code,
            message,
        } if kite_wire::Code::Unauthorized == code.as_str() => {
            let teams = if url.contains("/api/teams") {
                " (teams need the operator key, KITE_OPERATOR_KEY of kite serve)"
            } else {
                ""
            };
            anyhow::Error::new(AuthFailed).context(format!(
                "the instance refused the API key; check --api-key / KITE_API_KEY{teams} \
                 ({method} {url} answered 401 {code}: {message})"
            ))
        }
        ClientError::Status {
            status: 403,
            method,
            url,
            code,
            message,
        } if kite_wire::Code::Forbidden == code.as_str() => anyhow!(
            "the API key may not do this: {message}; use a team admin key ({method} {url} answered 403)"
        ),
        ClientError::Status {
            status: 404,
            method,
            url,
            code,
            message,
        } if kite_wire::Code::NotFound != code.as_str() || message.starts_with("no route") => anyhow!(
            "{method} {url} is not a route this instance serves ({code}: {message}): is --instance \
             the root URL of a kite instance, of a version with this API?"
        ),
        e => anyhow!(e),
    }
}

/// A flag's parser for one of `values` (listed in `--help`), read as the domain's own type.
pub(crate) fn one_of<T: Spelled>(
    values: &'static [T],
) -> impl clap::builder::TypedValueParser<Value = T> {
    clap::builder::PossibleValuesParser::new(values.iter().map(|v| v.as_str()))
        .try_map(|s| T::parse(&s).ok_or("not one of the values listed"))
}

/// A secret given as a flag: `-` reads it from stdin (first line), so it stays out of the
/// shell history and the process list.
pub(crate) fn secret_arg(value: &str, what: &str) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let line = line.trim();
    if line.is_empty() {
        bail!("no {what} on stdin");
    }
    Ok(line.to_string())
}

/// The id of the item of a listing whose `id`, `name` or `server_name` is `arg` (`kind` names the resource
/// in the error, `list` is the command that lists them).
pub(crate) fn find_id<T: Named>(
    listing: &[T],
    arg: &str,
    kind: &str,
    list: &str,
) -> anyhow::Result<String> {
    listing
        .iter()
        .find(|i| i.id() == arg || i.names().contains(&Some(arg)))
        .map(Named::id)
        .with_context(|| format!("no {kind} with id or name {arg:?}: `{list}` shows them"))
}

/// What a person may name a resource by on the command line: its id, or one of its names.
pub(crate) trait Named {
    /// Its id.
    fn id(&self) -> String;
    /// Its names (a peer: its name and server name).
    fn names(&self) -> [Option<&str>; 2];
}

impl Named for kite_api::peers::PeerView {
    fn id(&self) -> String {
        self.peer.id.to_string()
    }
    fn names(&self) -> [Option<&str>; 2] {
        [Some(&self.peer.name), self.peer.server_name.as_deref()]
    }
}

impl Named for kite_api::senders::Sender {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn names(&self) -> [Option<&str>; 2] {
        [Some(&self.name), None]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    #[test]
    fn verbs_parse_and_labels_are_optional() {
        for args in [
            &["x", "keys", "create"][..],
            &["x", "tokens", "create"],
            &["x", "peers"],
            &["x", "peers", "pause", "instance-b"],
            &["x", "outbox", "--status", "dead", "--output", "json"],
            &["x", "events", "show", "evt_1"],
            &["x", "teams", "create", "acme"],
            &[
                "x",
                "peers",
                "create",
                "--name",
                "b",
                "--url",
                "http://b/hooks/default/kite",
                "--token",
                "t",
                "--scope",
                "stripe.*",
                "--scope",
                "github.*",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["x", "outbox", "--status", "lost"]).is_err());
        assert!(Cli::try_parse_from(["x", "peers", "create", "--name", "b"]).is_err());
    }

    #[test]
    fn errors_name_the_url_and_the_fix() {
        let e = explain(ClientError::NoScheme {
            url: "127.0.0.1:7700".into(),
        });
        assert!(
            format!("{e:#}").contains("use --instance http://127.0.0.1:7700"),
            "{e:#}"
        );
        let e = ApiClient::for_instance("http://127.0.0.1:7700/api", "k")
            .map_err(explain)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("use --instance http://127.0.0.1:7700"), "{e}");
        let e = explain(ClientError::Status {
            method: reqwest::Method::GET,
            url: "http://h/api/keys".into(),
            status: 401,
            code: "unauthorized".into(),
            message: "unknown or revoked API key".into(),
        });
        assert!(e.chain().any(|c| c.is::<AuthFailed>()));
        assert!(format!("{e:#}").contains("check --api-key / KITE_API_KEY"));
    }
}
