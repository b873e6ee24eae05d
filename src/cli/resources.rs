//! `kite admin keys`, `sources`, `outbox`, `events` and `teams`.

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use kite_api::events::EventParams;
use kite_api::outbox::{OutboxParams, ReplayFilter};
use kite_api::sources::NewSource;
use kite_api::types::Permission;
use kite_wire::provider::Scheme;

use super::{find_id, one_of, secret_arg, Ctx};
use kite_store::types::OutboxState;

/// API key verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyVerb {
    /// Mint a key (shown once).
    Create {
        /// What it may do (default read).
        #[arg(long, value_parser = one_of(Permission::ALL))]
        permission: Option<Permission>,
        /// A label to recognise it by.
        #[arg(long)]
        label: Option<String>,
    },
    /// List keys (prefixes only, never the key).
    List,
    /// Revoke a key.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Signed source verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum SourceVerb {
    /// Make /hooks/{team}/{name} verify the provider's signature on every post.
    Create {
        /// The source name (a-z, 0-9, '_', '-').
        #[arg(long)]
        name: String,
        /// The provider's signature scheme.
        #[arg(long, value_parser = one_of(Scheme::ALL))]
        scheme: Scheme,
        /// The provider's signing secret (`-` reads it from stdin).
        #[arg(long)]
        secret: String,
        /// The signature header (hmac-sha256 scheme).
        #[arg(long)]
        header: Option<String>,
    },
    /// List signed sources (never their secrets), and mark the hook sources that took
    /// unsigned posts (they accept anyone's).
    List,
    /// Give a source a new secret; the old one stays valid for the overlap.
    Rotate {
        /// The source name.
        name: String,
        /// The new secret (`-` reads it from stdin).
        #[arg(long)]
        secret: String,
    },
    /// Remove a source's signature check.
    Delete {
        /// The source name.
        name: String,
    },
}

/// `kite admin outbox [list] [--peer P] [--status S] [--limit N] [--cursor C]`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, flatten_help = true)]
pub struct OutboxArgs {
    /// The verb (default: list).
    #[command(subcommand)]
    pub verb: Option<OutboxVerb>,
    /// Filters of the listing.
    #[command(flatten)]
    pub filter: OutboxFilterArgs,
}

/// Outbox verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum OutboxVerb {
    /// List deliveries, oldest first.
    List(OutboxFilterArgs),
    /// Send one delivery again now (a delivered or dead row).
    Resend {
        /// The outbox row's id (the ID column of `kite admin outbox`).
        id: i64,
    },
    /// Cancel one pending delivery.
    Cancel {
        /// The outbox row's id.
        id: i64,
    },
    /// Replay dead deliveries that match every filter given (all of the team's without any).
    Replay(ReplayArgs),
}

/// The filters of `kite admin outbox replay`.
#[derive(Debug, Clone, Default, Args)]
pub struct ReplayArgs {
    /// Only this peer's dead rows (its name or server name).
    #[arg(long)]
    pub peer: Option<String>,
    /// Which events: type, source, time.
    #[command(flatten)]
    pub about: AboutArgs,
    /// The most rows to replay (default 1000).
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Which events a listing or a replay is about: type, source and time.
#[derive(Debug, Clone, Default, Args)]
pub struct AboutArgs {
    /// Only events whose type matches this glob (`com.stripe.*`).
    #[arg(long = "type", value_name = "GLOB")]
    pub event_type: Option<String>,
    /// Only events that came in on this hook source (`stripe`).
    #[arg(long)]
    pub source: Option<String>,
    /// Only rows at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// Only rows before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<DateTime<Utc>>,
}

/// Filters of an outbox listing.
#[derive(Debug, Clone, Default, Args)]
pub struct OutboxFilterArgs {
    /// Only this peer's deliveries (its id or name).
    #[arg(long, visible_alias = "peer-id")]
    pub peer: Option<String>,
    /// Only deliveries in this state.
    #[arg(long, value_parser = one_of(OutboxState::ALL))]
    pub status: Option<OutboxState>,
    /// Which events: type, source, time.
    #[command(flatten)]
    pub about: AboutArgs,
    /// Page size (default 100, at most 1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Where the page starts (the `next_cursor` of the previous page).
    #[arg(long)]
    pub cursor: Option<i64>,
}

/// `kite admin events [list] [--after SEQ] [--limit N]` or `events show ID|SEQ`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, flatten_help = true)]
pub struct EventsArgs {
    /// The verb (default: list).
    #[command(subcommand)]
    pub verb: Option<EventVerb>,
    /// Where the listing starts.
    #[command(flatten)]
    pub list: EventListArgs,
}

/// Event verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum EventVerb {
    /// List stored events in seq order.
    List(EventListArgs),
    /// One stored event, by its CloudEvent id or its seq.
    Show {
        /// A CloudEvent id, or a seq (a number is tried as a seq first).
        event: String,
        /// Only the event of this hook source (when several sources used the same id).
        #[arg(long)]
        source: Option<String>,
    },
}

/// Where an event listing starts, and its filters.
#[derive(Debug, Clone, Default, Args)]
pub struct EventListArgs {
    /// Events after this seq (default 0: from the first).
    #[arg(long)]
    pub after: Option<i64>,
    /// Which events: type, source, time.
    #[command(flatten)]
    pub about: AboutArgs,
    /// Page size (default 100, at most 1000).
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Team verbs (with the operator key).
#[derive(Debug, Clone, Subcommand)]
pub enum TeamVerb {
    /// Create a team; prints its first admin key (shown once).
    Create {
        /// The team id.
        id: String,
    },
    /// List teams.
    List,
    /// Delete a team.
    Delete {
        /// The team id.
        id: String,
    },
}

/// `kite admin keys ...`.
pub(super) async fn keys(ctx: &Ctx, verb: Option<KeyVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    match verb.unwrap_or(KeyVerb::List) {
        KeyVerb::Create { permission, label } => {
            let v = c
                .create_key(
                    permission.unwrap_or(Permission::Read),
                    label.as_deref().unwrap_or_default(),
                )
                .await?;
            ctx.out.one(&v);
            eprintln!("store the key now: it is not shown again");
        }
        KeyVerb::List => ctx.out.list(&c.list_keys().await?, None),
        KeyVerb::Revoke { id } => ctx.out.one(&c.revoke_key(&id).await?),
    }
    Ok(())
}

/// `kite admin sources ...`.
pub(super) async fn sources(ctx: &Ctx, verb: Option<SourceVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    let answer = match verb.unwrap_or(SourceVerb::List) {
        SourceVerb::Create {
            name,
            scheme,
            secret,
            header,
        } => {
            let spec = NewSource {
                name,
                scheme,
                secret: secret_arg(&secret, "secret")?,
                header,
            };
            c.create_source(&spec).await?.text
        }
        SourceVerb::List => {
            let list = c.list_sources().await?;
            match ctx.out.format() {
                super::output::OutputFormat::Json => ctx.out.one_text(&list.text),
                super::output::OutputFormat::Table => {
                    print!("{}", super::rows::sources(&list.value));
                    if let Some(u) = list.value.unsigned.first() {
                        let scheme = Scheme::parse(&u.name)
                            .filter(|s| {
                                matches!(s, Scheme::Stripe | Scheme::Github | Scheme::Slack)
                            })
                            .unwrap_or(Scheme::StandardWebhooks);
                        eprintln!(
                            "an unsigned source accepts anyone's posts; give it its provider's \
                             signing secret: kite admin sources create --name {} --scheme {} \
                             --secret -",
                            u.name,
                            scheme.name()
                        );
                    }
                }
            }
            return Ok(());
        }
        SourceVerb::Rotate { name, secret } => {
            c.rotate_source(&name, &secret_arg(&secret, "secret")?)
                .await?
                .text
        }
        SourceVerb::Delete { name } => c.delete_source(&name).await?.text,
    };
    ctx.out.one_text(&answer);
    Ok(())
}

/// `kite admin outbox ...`.
pub(super) async fn outbox(ctx: &Ctx, args: OutboxArgs) -> anyhow::Result<()> {
    let c = &ctx.client;
    let f = match args.verb {
        Some(OutboxVerb::List(f)) => f,
        None => args.filter,
        Some(OutboxVerb::Resend { id }) => {
            ctx.out.one(&c.resend(id).await?);
            return Ok(());
        }
        Some(OutboxVerb::Cancel { id }) => {
            ctx.out.one(&c.cancel(id).await?);
            return Ok(());
        }
        Some(OutboxVerb::Replay(r)) => {
            if r.about.source.is_some() {
                bail!("replay takes --peer, --type, --since and --until (not --source)");
            }
            let filter = ReplayFilter {
                peer: r.peer,
                event_type: r.about.event_type,
                since: r.about.since,
                until: r.about.until,
                limit: r.limit.map(i64::from),
            };
            ctx.out.one(&c.replay_matching(&filter).await?);
            return Ok(());
        }
    };
    let peer_id = match f.peer {
        Some(p) => Some(find_id(
            &c.list_peers().await?.value.items,
            &p,
            "peer",
            "kite admin peers list",
        )?),
        None => None,
    };
    let filter = OutboxParams {
        peer_id: peer_id.as_deref().map(str::parse).transpose()?,
        status: f.status,
        r#type: f.about.event_type,
        source: f.about.source,
        since: f.about.since,
        until: f.about.until,
        limit: f.limit.map(i64::from),
        cursor: f.cursor,
        ..OutboxParams::default()
    };
    ctx.out
        .list(&c.list_outbox(&filter).await?, Some("--cursor"));
    Ok(())
}

/// `kite admin events ...`: a listing, or one event's story.
pub(super) async fn events(ctx: &Ctx, args: EventsArgs) -> anyhow::Result<()> {
    let c = &ctx.client;
    let (event, source) = match args.verb {
        Some(EventVerb::Show { event, source }) => (event, source),
        other => {
            let l = match other {
                Some(EventVerb::List(l)) => l,
                _ => args.list,
            };
            let params = EventParams {
                after: l.after,
                limit: l.limit.map(i64::from),
                r#type: l.about.event_type,
                source: l.about.source,
                since: l.about.since,
                until: l.about.until,
                ..EventParams::default()
            };
            ctx.out
                .list(&c.find_events(&params).await?, Some("--after"));
            return Ok(());
        }
    };
    let story = c.event_story(&event, source.as_deref()).await?;
    match ctx.out.format() {
        super::output::OutputFormat::Json => ctx.out.one_text(&story.text),
        super::output::OutputFormat::Table => print!("{}", super::rows::story(&story.value)),
    }
    Ok(())
}

/// `kite admin teams ...`.
pub(super) async fn teams(ctx: &Ctx, verb: Option<TeamVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    match verb.unwrap_or(TeamVerb::List) {
        TeamVerb::Create { id } => {
            ctx.out.one(&c.create_team(&id).await?);
            eprintln!("store the admin key now: it is not shown again");
        }
        TeamVerb::List => ctx.out.list(&c.list_teams().await?, None),
        TeamVerb::Delete { id } => ctx.out.one(&c.delete_team(&id).await?),
    }
    Ok(())
}
