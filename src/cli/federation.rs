//! `kite admin tokens`, `trusted-senders` and `peers`: the verbs of a peering.

use clap::{Args, Subcommand};
use kite_api::peers::{NewPeer, Peer, PeerPatch};
use kite_api::senders::{NewSender, SenderPatch};
use kite_kit::client::Answered;

use super::{find_id, one_of, secret_arg, Ctx};
use kite_store::types::PeerStatus;

/// Federation token verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenVerb {
    /// Mint a token (shown once) for a sender: trust it here with `trusted-senders create`,
    /// and give it to the sender's `peers create --token`.
    Create {
        /// A label to recognise it by.
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (labels only, never the secret).
    List,
}

/// Trusted sender verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum SenderVerb {
    /// Trust a sender that holds a token minted here.
    Create {
        /// Its name, unique in the team.
        #[arg(long)]
        name: String,
        /// The token it sends (`-` reads it from stdin).
        #[arg(long)]
        token: String,
        /// The key id it names in X-Kite-Key-Id (default: the id of the minted token).
        #[arg(long)]
        key_id: Option<String>,
        /// Also accept the body-only X-Kite-Signature (peers running Kite).
        #[arg(long)]
        legacy_signature: bool,
    },
    /// List trusted senders.
    List,
    /// Change a trusted sender (the old token stays valid for the overlap).
    Update {
        /// Its id or name.
        sender: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New token (`-` reads it from stdin).
        #[arg(long)]
        token: Option<String>,
        /// Accept the body-only X-Kite-Signature or not.
        #[arg(long)]
        legacy_signature: Option<bool>,
    },
    /// Stop trusting a sender.
    Delete {
        /// Its id or name.
        sender: String,
    },
}

/// Peer verbs. A peer is named by its id or its name.
#[derive(Debug, Clone, Subcommand)]
pub enum PeerVerb {
    /// Forward events to another instance.
    Create(PeerCreate),
    /// List peers with their status, health and backlog.
    List,
    /// One peer with its health, last error and backlog.
    Show {
        /// Its id or name.
        peer: String,
    },
    /// Change any of a peer's fields.
    Update(PeerUpdate),
    /// Hold deliveries to a peer (they wait in its queue).
    Pause {
        /// Its id or name.
        peer: String,
    },
    /// Let a paused peer's deliveries flow again.
    Resume {
        /// Its id or name.
        peer: String,
    },
    /// Delete a peer; its pending deliveries are cancelled.
    Delete {
        /// Its id or name.
        peer: String,
    },
    /// Put a peer's dead deliveries back in line.
    ReplayDead {
        /// Its id or name.
        peer: String,
        /// At most this many (default 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `kite admin peers create`.
#[derive(Debug, Clone, Args)]
pub struct PeerCreate {
    /// Its name, unique in the team.
    #[arg(long)]
    pub name: String,
    /// The peer's hook URL: its root followed by /hooks/{team}/kite.
    #[arg(long)]
    pub url: String,
    /// The token minted on the peer for this instance (`-` reads it from stdin).
    #[arg(long)]
    pub token: String,
    /// Forward only event types matching this glob (repeatable; default `*`).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Forward only events this filter matches, as JSON in a CloudEvents Subscriptions
    /// dialect, e.g. '{"prefix":{"subject":"cus_"}}' (repeatable: all must match).
    #[arg(long = "filter", value_name = "JSON", value_parser = kite_api::filters::from_json)]
    pub filters: Vec<kite_api::filters::Filter>,
    /// Events with this many hops or more are not forwarded (default 3).
    #[arg(long)]
    pub max_hops: Option<u32>,
    /// Send this key id as X-Kite-Key-Id instead of the token as a bearer.
    #[arg(long)]
    pub key_id: Option<String>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    /// The token the peer signs its events to this side with (`-` reads it from stdin).
    #[arg(long)]
    pub inbound_token: Option<String>,
    /// How deliveries to it go.
    #[command(flatten)]
    pub conduct: ConductArgs,
}

/// The order and delivery policy of a peer (`peers create|update`, `peer invite|accept`).
#[derive(Debug, Clone, Args)]
pub struct OrderArgs {
    /// Deliver events with the same value of this attribute (subject, source or an
    /// extension's name) in the order they were accepted.
    #[arg(long, value_name = "ATTRIBUTE", value_parser = ordering_key)]
    pub ordering_key: Option<String>,
    /// What an ordered key does once its event went dead.
    #[arg(long, value_parser = one_of(kite_api::types::OnDead::ALL))]
    pub on_dead: Option<kite_api::types::OnDead>,
    /// The peer's own delivery policy, as JSON: retry_base_ms, retry_max_delay_ms,
    /// max_attempts, timeout_ms, max_in_flight, rate_per_sec, rate_burst (each optional;
    /// left out: the instance's), e.g. '{"rate_per_sec":10}'.
    #[arg(long, value_name = "JSON", value_parser = delivery_json)]
    pub delivery: Option<kite_api::peers::DeliveryPolicy>,
}

/// `--ordering-key`, checked as the API checks it.
fn ordering_key(s: &str) -> Result<String, String> {
    let mut body = serde_json::Map::new();
    body.insert(
        "ordering_key".into(),
        serde_json::Value::String(s.to_owned()),
    );
    kite_api::request::opt_ordering_key(&body)
        .map_err(|e| e.message)?
        .flatten()
        .ok_or_else(|| "an attribute's name".to_owned())
}

/// How deliveries to a peer go: order, policy, content mode (`create` and `update`).
#[derive(Debug, Clone, Args)]
pub struct ConductArgs {
    /// Its order and delivery policy.
    #[command(flatten)]
    pub order: OrderArgs,
    /// structured (a CloudEvent: what a kite takes) or binary (ce-* headers and the
    /// provider's body: what an ordinary webhook endpoint takes).
    #[arg(long, value_parser = one_of(kite_api::types::ContentMode::ALL))]
    pub content_mode: Option<kite_api::types::ContentMode>,
}

/// `--delivery JSON`, checked as the API checks it.
fn delivery_json(s: &str) -> Result<kite_api::peers::DeliveryPolicy, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not JSON ({e})"))?;
    let mut body = serde_json::Map::new();
    body.insert("delivery".into(), v);
    kite_api::request::opt_delivery(&body)
        .map_err(|e| e.message)?
        .ok_or_else(|| "an object".to_owned())
}

/// `kite admin peers update`: only the fields given change.
#[derive(Debug, Clone, Args)]
pub struct PeerUpdate {
    /// Its id or name.
    pub peer: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New hook URL.
    #[arg(long)]
    pub url: Option<String>,
    /// New token; the old one stays valid for the overlap (`-` reads it from stdin).
    #[arg(long)]
    pub token: Option<String>,
    /// New scopes (repeatable; replaces them all).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// New filters, as JSON (repeatable; replaces them all).
    #[arg(long = "filter", value_name = "JSON", value_parser = kite_api::filters::from_json)]
    pub filters: Vec<kite_api::filters::Filter>,
    /// Remove every filter.
    #[arg(long, conflicts_with = "filters")]
    pub no_filters: bool,
    /// New hop limit.
    #[arg(long)]
    pub max_hops: Option<u32>,
    /// New key id.
    #[arg(long)]
    pub key_id: Option<String>,
    /// New status.
    #[arg(long, value_parser = one_of(PeerStatus::SETTABLE))]
    pub status: Option<PeerStatus>,
    /// New inbound token (`-` reads it from stdin).
    #[arg(long)]
    pub inbound_token: Option<String>,
    /// New conduct (each flag given changes it).
    #[command(flatten)]
    pub conduct: ConductArgs,
    /// Deliver it unordered again.
    #[arg(long, conflicts_with = "ordering_key")]
    pub no_ordering: bool,
}

/// `kite admin tokens ...`.
pub(super) async fn tokens(ctx: &Ctx, verb: Option<TokenVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    match verb.unwrap_or(TokenVerb::List) {
        TokenVerb::Create { label } => {
            ctx.out
                .one(&c.create_token(label.as_deref().unwrap_or_default()).await?);
            eprintln!("store the token now: it is not shown again");
        }
        TokenVerb::List => ctx.out.list(&c.list_tokens().await?, None),
    }
    Ok(())
}

/// `kite admin trusted-senders ...`.
pub(super) async fn senders(ctx: &Ctx, verb: Option<SenderVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    let id = |arg: String| async move {
        find_id(
            &c.list_senders().await?.value.items,
            &arg,
            "trusted sender",
            "kite admin trusted-senders list",
        )
    };
    let answer = match verb.unwrap_or(SenderVerb::List) {
        SenderVerb::Create {
            name,
            token,
            key_id,
            legacy_signature,
        } => {
            let spec = NewSender {
                name,
                inbound_token: secret_arg(&token, "token")?,
                key_id,
                legacy_signature,
            };
            c.create_sender(&spec).await?.text
        }
        SenderVerb::List => {
            ctx.out.list(&c.list_senders().await?, None);
            return Ok(());
        }
        SenderVerb::Update {
            sender,
            name,
            token,
            legacy_signature,
        } => {
            let changes = SenderPatch {
                name,
                inbound_token: token.map(|t| secret_arg(&t, "token")).transpose()?,
                legacy_signature,
            };
            c.update_sender(&id(sender).await?, &changes).await?.text
        }
        SenderVerb::Delete { sender } => c.delete_sender(&id(sender).await?).await?.text,
    };
    ctx.out.one_text(&answer);
    Ok(())
}

/// `kite admin peers ...`.
pub(super) async fn peers(ctx: &Ctx, verb: Option<PeerVerb>) -> anyhow::Result<()> {
    let c = &ctx.client;
    let id = |arg: String| async move {
        find_id(
            &c.list_peers().await?.value.items,
            &arg,
            "peer",
            "kite admin peers list",
        )
    };
    let answer = match verb.unwrap_or(PeerVerb::List) {
        PeerVerb::Create(p) => {
            let spec = NewPeer {
                ordering_key: p.conduct.order.ordering_key,
                on_dead: p.conduct.order.on_dead.unwrap_or_default(),
                delivery: p.conduct.order.delivery.unwrap_or_default(),
                content_mode: p.conduct.content_mode.unwrap_or_default(),
                name: p.name,
                peer_hook_url: p.url,
                outbound_token: secret_arg(&p.token, "token")?,
                scopes: if p.scopes.is_empty() {
                    kite_api::request::every_type()
                } else {
                    p.scopes
                },
                filters: p.filters,
                max_hops: p.max_hops.map_or(kite_wire::fed::hop_limit::DEFAULT, |n| {
                    i32::try_from(n).unwrap_or(i32::MAX)
                }),
                key_id: p.key_id,
                status: if p.paused {
                    PeerStatus::Paused
                } else {
                    PeerStatus::Active
                },
                inbound_token: p
                    .inbound_token
                    .map(|t| secret_arg(&t, "inbound-token"))
                    .transpose()?,
            };
            c.add_peer(&spec).await?.text
        }
        PeerVerb::List => {
            ctx.out.list(&c.list_peers().await?, None);
            return Ok(());
        }
        PeerVerb::Show { peer } => c.get_peer(&id(peer).await?).await?.text,
        PeerVerb::Update(u) => {
            let changes = PeerPatch {
                ordering_key: if u.no_ordering {
                    Some(None)
                } else {
                    u.conduct.order.ordering_key.map(Some)
                },
                on_dead: u.conduct.order.on_dead,
                delivery: u.conduct.order.delivery,
                content_mode: u.conduct.content_mode,
                name: u.name,
                peer_hook_url: u.url,
                outbound_token: u.token.map(|t| secret_arg(&t, "token")).transpose()?,
                scopes: (!u.scopes.is_empty()).then_some(u.scopes),
                filters: if u.no_filters {
                    Some(Vec::new())
                } else {
                    (!u.filters.is_empty()).then_some(u.filters)
                },
                max_hops: u.max_hops.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                key_id: u.key_id,
                status: u.status,
                inbound_token: u
                    .inbound_token
                    .map(|t| secret_arg(&t, "inbound-token"))
                    .transpose()?,
            };
            if serde_json::to_value(&changes)?
                .as_object()
                .is_none_or(|m| m.is_empty())
            {
                anyhow::bail!(
                    "nothing to change: pass --name, --url, --token, --scope, --filter, \
                     --no-filters, --max-hops, --key-id, --status, --inbound-token, \
                     --ordering-key, --no-ordering, --on-dead, --delivery or --content-mode"
                );
            }
            c.update_peer(&id(u.peer).await?, &changes).await?.text
        }
        PeerVerb::Pause { peer } => {
            let p = c.pause_peer(&id(peer).await?).await?;
            one_line(ctx, &p, "paused: its deliveries wait");
            return Ok(());
        }
        PeerVerb::Resume { peer } => {
            let p = c.resume_peer(&id(peer).await?).await?;
            one_line(ctx, &p, "resumed: its deliveries flow");
            return Ok(());
        }
        PeerVerb::Delete { peer } => c.delete_peer(&id(peer).await?).await?.text,
        PeerVerb::ReplayDead { peer, limit } => c.replay_dead(&id(peer).await?, limit).await?.text,
    };
    ctx.out.one_text(&answer);
    Ok(())
}

/// A peer's new status as one line (`--output json`: the answer).
fn one_line(ctx: &Ctx, p: &Answered<Peer>, what: &str) {
    match ctx.out.format() {
        super::output::OutputFormat::Json => ctx.out.one_text(&p.text),
        super::output::OutputFormat::Table => {
            println!(
                "{} ({}): {what} (status {})",
                p.value.name, p.value.id, p.value.status
            )
        }
    }
}
