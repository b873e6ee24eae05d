//! `kite peer` (invite, accept, list, show, refresh, identity, revoke, grant, grants,
//! revoke-grant, backfill) and `kite admin identity`, `policy` and
//! `invitations`: peering the way federations do it.

use clap::{Args, Subcommand};

use super::{find_id, one_of, Connection, Ctx};
use anyhow::Context;
use kite_api::grants::{Backfill, NewGrant, Since};
use kite_api::invitations::AcceptInvitation;
use kite_api::invitations::NewInvitation;
use kite_api::policy::PolicyPatch;
use kite_api::request::every_type;
use kite_api::types::{FederationMode, GrantPermission, SignatureProtocol};
use kite_wire::fed::hop_limit;
use kite_wire::peering::Invitation;

/// `kite peer` options.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// The instance, key and output.
    #[command(flatten)]
    pub conn: Connection,
    /// The verb.
    #[command(subcommand)]
    pub command: PeerCommand,
}

/// Peering verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum PeerCommand {
    /// Print an invitation (shown once) for another server: it carries this instance's URL
    /// and a single-use token; `kite peer accept` on the other server uses it.
    Invite {
        /// Event type globs this side sends to whoever accepts (comma-separated or
        /// repeated; default `*`).
        #[arg(long = "scopes", alias = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Hop limit of what this side sends.
        #[arg(long)]
        max_hops: Option<u32>,
        /// Send whoever accepts only events this filter matches, as JSON in a CloudEvents
        /// Subscriptions dialect (repeatable: all must match).
        #[arg(long = "filter", value_name = "JSON", value_parser = kite_api::filters::from_json)]
        filters: Vec<kite_api::filters::Filter>,
        /// The order and delivery policy of what this side sends whoever accepts.
        #[command(flatten)]
        order: super::federation::OrderArgs,
        /// How long the invitation works (`7d`, `12h`, `30m`, `90s`).
        #[arg(long, default_value = "7d", value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Accept another server's invitation: both sides then hold a peer for the other,
    /// with pinned identity keys.
    Accept {
        /// The invitation `kite peer invite` printed on the other server.
        #[arg(value_parser = |s: &str| Invitation::decode(s.trim()).map_err(|e| e.to_string()))]
        invitation: Invitation,
        /// Event type globs this side sends to the inviter (default: what the invitation
        /// offers to send here). The inviter's answer may narrow them, never widen them.
        #[arg(long = "scopes", alias = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Hop limit of what this side sends (default 3).
        #[arg(long)]
        max_hops: Option<u32>,
        /// Send the inviter only events this filter matches, as JSON in a CloudEvents
        /// Subscriptions dialect (repeatable: all must match).
        #[arg(long = "filter", value_name = "JSON", value_parser = kite_api::filters::from_json)]
        filters: Vec<kite_api::filters::Filter>,
        /// The order and delivery policy of what this side sends the inviter.
        #[command(flatten)]
        order: super::federation::OrderArgs,
    },
    /// Peers with their state and health: status, last seen, last heartbeat, last error,
    /// events sent and received in 24 h, pending and dead.
    List,
    /// One peer, with the keys pinned for it.
    Show {
        /// Its id or name.
        peer: String,
    },
    /// Fetch a handshake peer's descriptor again and pin the keys it publishes now (what a
    /// peer whose keys changed needs; an ended key never comes back).
    Refresh {
        /// Its id, name or server name.
        peer: String,
    },
    /// This server's identity: its descriptor, and when its key rotates next.
    Identity,
    /// Revoke a peer: nothing goes to it any more, and its requests are refused (the other
    /// side learns it on its next request).
    Revoke {
        /// Its id or name.
        peer: String,
    },
    /// Give a peer a grant: `send` (event types it may send here) or `backfill` (types it
    /// may pull from here).
    Grant {
        /// Its id, name or server name.
        peer: String,
        /// `send` or `backfill` (comma-separated or repeated).
        #[arg(long = "permission", alias = "permissions", value_delimiter = ',', required = true, value_parser = one_of(GrantPermission::ALL))]
        permissions: Vec<GrantPermission>,
        /// Event type globs it covers (default `*`).
        #[arg(long = "scopes", alias = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// How long it works (`30d`, `12h`, `90s`; default 30 days).
        #[arg(long, value_parser = parse_ttl, conflicts_with = "expires_at")]
        ttl: Option<u64>,
        /// Until when it works (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// A peer's grants.
    Grants {
        /// Its id, name or server name.
        peer: String,
    },
    /// Delete a grant of a peer: it stops working at once.
    RevokeGrant {
        /// Its id, name or server name.
        peer: String,
        /// The grant's id.
        grant: String,
    },
    /// Pull a peer's history (it must hold a `backfill` grant for this side there): every
    /// event's origin signature is checked, and events held already are not stored twice.
    Backfill {
        /// Its id, name or server name.
        peer: String,
        /// From this RFC 3339 time (inclusive) or after this cursor of the peer's.
        #[arg(long)]
        since: Option<Since>,
        /// At most this many events (default 1,000).
        #[arg(long)]
        limit: Option<u32>,
        /// Only these event types (globs; repeated or comma-separated).
        #[arg(long = "type", alias = "types", value_delimiter = ',')]
        types: Vec<String>,
    },
}

/// Identity verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum IdentityVerb {
    /// The server descriptor: name, published keys, endpoints.
    Show,
    /// Make a new identity key; the old one stays valid for the overlap
    /// (KITE_KEY_OVERLAP_SECS of `kite serve`).
    Rotate,
}

/// Operational endpoint verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum OperationalVerb {
    /// The endpoint and its deliveries (never its secret).
    Show,
    /// Set where the events go; prints the signing secret once, when this makes the
    /// endpoint (changing the URL keeps the secret).
    Set {
        /// The endpoint's URL (http or https).
        #[arg(long)]
        url: String,
    },
    /// Stop sending operational events (they stay on the team's stream).
    Delete,
}

/// Policy verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum PolicyVerb {
    /// The team's policy.
    Show,
    /// Change it (only what is given changes).
    Set {
        /// `open` (any server with an invitation), `invite_only` (also named in
        /// allowed peers) or `closed` (every federation request refused).
        #[arg(long, value_parser = one_of(FederationMode::ALL))]
        mode: Option<FederationMode>,
        /// Server names allowed under invite_only (comma-separated or repeated; replaces
        /// the list).
        #[arg(long = "allowed-peers", alias = "allow", value_delimiter = ',')]
        allowed_peers: Vec<String>,
        /// Empty the allowed peers.
        #[arg(long, conflicts_with = "allowed_peers")]
        no_allowed_peers: bool,
        /// The most events one backfill request is answered with.
        #[arg(long)]
        max_backfill: Option<u32>,
        /// The least federation traffic must be signed with: `token` (shared tokens or
        /// identity keys) or `identity` (identity keys only).
        #[arg(long, value_parser = one_of(SignatureProtocol::ALL))]
        min_signature_protocol: Option<SignatureProtocol>,
    },
}

/// Invitation verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum InvitationVerb {
    /// The team's invitations (never their tokens).
    List,
    /// Revoke an unused invitation.
    Delete {
        /// Its id.
        id: String,
    },
}

/// A TTL as people write it (`7d`, `12h`, `30m`, `90s`, or seconds), in seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let secs = match s.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration like 7d, 12h or 30m: {e}"))?
            .as_secs(),
    };
    if secs == 0 {
        return Err("the TTL must be at least a second".into());
    }
    Ok(secs)
}

/// `kite peer ...`.
pub(super) async fn peer(ctx: &Ctx, verb: PeerCommand) -> anyhow::Result<()> {
    let c = &ctx.client;
    let id = |arg: String| async move {
        find_id(
            &c.list_peers().await?.value.items,
            &arg,
            "peer",
            "kite peer list",
        )
    };
    let answer = match verb {
        PeerCommand::Invite {
            scopes,
            max_hops,
            filters,
            order,
            ttl,
        } => {
            let inv = c
                .create_invitation(&NewInvitation {
                    scopes: if scopes.is_empty() {
                        every_type()
                    } else {
                        scopes
                    },
                    max_hops: max_hops
                        .map_or(hop_limit::DEFAULT, |n| i32::try_from(n).unwrap_or(i32::MAX)),
                    filters,
                    ordering_key: order.ordering_key,
                    on_dead: order.on_dead.unwrap_or_default(),
                    delivery: order.delivery.unwrap_or_default(),
                    ttl: i64::try_from(ttl).unwrap_or(i64::MAX),
                })
                .await?;
            match ctx.out.format() {
                super::OutputFormat::Json => ctx.out.one(&inv),
                super::OutputFormat::Table => {
                    crate::stdout::println(&inv.invitation);
                    eprintln!(
                        "invitation {} works once, until {}; on the other server run: kite peer accept <invitation>",
                        inv.id,
                        serde_json::to_value(inv.expires_at)?.as_str().unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        PeerCommand::Accept {
            invitation,
            scopes,
            max_hops,
            filters,
            order,
        } => {
            let accept = AcceptInvitation {
                invitation,
                scopes: (!scopes.is_empty()).then_some(scopes),
                max_hops: max_hops.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                filters,
                ordering_key: order.ordering_key,
                on_dead: order.on_dead.unwrap_or_default(),
                delivery: order.delivery.unwrap_or_default(),
            };
            c.accept_invitation(&accept).await?.text
        }
        PeerCommand::List => {
            ctx.out.list_as(
                &c.list_peers().await?,
                crate::cli::rows::PEER_HEALTH,
                crate::cli::rows::peer_health,
                None,
            );
            return Ok(());
        }
        PeerCommand::Show { peer } => c.get_peer(&id(peer).await?).await?.text,
        PeerCommand::Revoke { peer } => c.revoke_peer(&id(peer).await?).await?.text,
        PeerCommand::Refresh { peer } => c.refresh_peer(&id(peer).await?).await?.text,
        PeerCommand::Identity => c.identity().await?.text,
        PeerCommand::Grant {
            peer,
            permissions,
            scopes,
            ttl,
            expires_at,
        } => {
            let grant = NewGrant {
                permissions,
                scopes: if scopes.is_empty() {
                    every_type()
                } else {
                    scopes
                },
                expires_at: expires_at
                    .as_deref()
                    .map(|t| {
                        chrono::DateTime::parse_from_rfc3339(t)
                            .map(|t| t.to_utc())
                            .context("--expires-at must be an RFC 3339 time")
                    })
                    .transpose()?,
                ttl: ttl.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            };
            c.create_grant(&id(peer).await?, &grant).await?.text
        }
        PeerCommand::Grants { peer } => {
            ctx.out.list(&c.list_grants(&id(peer).await?).await?, None);
            return Ok(());
        }
        PeerCommand::RevokeGrant { peer, grant } => {
            c.delete_grant(&id(peer).await?, &grant).await?.text
        }
        PeerCommand::Backfill {
            peer,
            since,
            limit,
            types,
        } => {
            let b = Backfill {
                since,
                limit: limit.map_or(1000, i64::from),
                types: (!types.is_empty()).then_some(types),
            };
            c.backfill(&id(peer).await?, &b).await?.text
        }
    };
    ctx.out.one_text(&answer);
    Ok(())
}

/// `kite admin identity ...`.
pub(super) async fn identity(ctx: &Ctx, verb: Option<IdentityVerb>) -> anyhow::Result<()> {
    let answer = match verb.unwrap_or(IdentityVerb::Show) {
        IdentityVerb::Show => ctx.client.identity().await?,
        IdentityVerb::Rotate => ctx.client.rotate_identity().await?,
    };
    match ctx.out.format() {
        super::output::OutputFormat::Json => ctx.out.one_text(&answer.text),
        super::output::OutputFormat::Table => {
            let v = &answer.value;
            let next = v
                .next_rotation_at
                .map_or_else(|| "by hand only".to_owned(), |t| t.to_rfc3339());
            println!(
                "server {}  base URL {}  next rotation: {next}\n",
                v.descriptor.server_name, v.descriptor.endpoints.base_url
            );
            let rows: Vec<Vec<serde_json::Value>> = v
                .descriptor
                .keys
                .iter()
                .map(super::rows::key_cells)
                .collect();
            print!(
                "{}",
                super::output::table(
                    &["KEY_ID", "STATE", "VALID_FROM", "VALID_UNTIL", "PUBLIC_KEY"],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// `kite admin policy ...`.
pub(super) async fn policy(ctx: &Ctx, verb: Option<PolicyVerb>) -> anyhow::Result<()> {
    let answer = match verb.unwrap_or(PolicyVerb::Show) {
        PolicyVerb::Show => ctx.client.policy().await?.text,
        PolicyVerb::Set {
            mode,
            allowed_peers,
            no_allowed_peers,
            max_backfill,
            min_signature_protocol,
        } => {
            let allowed = if no_allowed_peers {
                Some(Vec::new())
            } else {
                (!allowed_peers.is_empty()).then_some(allowed_peers)
            };
            if mode.is_none()
                && allowed.is_none()
                && max_backfill.is_none()
                && min_signature_protocol.is_none()
            {
                anyhow::bail!(
                    "nothing to change: pass --mode, --allowed-peers, --no-allowed-peers, \
                     --max-backfill or --min-signature-protocol"
                );
            }
            ctx.client
                .set_policy(&PolicyPatch {
                    default_mode: mode,
                    allowed_peers: allowed,
                    max_backfill_events_per_request: max_backfill
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    min_signature_protocol,
                })
                .await?
                .text
        }
    };
    ctx.out.one_text(&answer);
    Ok(())
}

/// `kite admin operational ...`.
pub(super) async fn operational(ctx: &Ctx, verb: Option<OperationalVerb>) -> anyhow::Result<()> {
    match verb.unwrap_or(OperationalVerb::Show) {
        OperationalVerb::Show => ctx.out.one(&ctx.client.operational_endpoint().await?),
        OperationalVerb::Set { url } => ctx
            .out
            .one(&ctx.client.set_operational_endpoint(&url).await?),
        OperationalVerb::Delete => ctx
            .out
            .one(&ctx.client.delete_operational_endpoint().await?),
    }
    Ok(())
}

/// `kite admin invitations ...`.
pub(super) async fn invitations(ctx: &Ctx, verb: Option<InvitationVerb>) -> anyhow::Result<()> {
    match verb.unwrap_or(InvitationVerb::List) {
        InvitationVerb::List => ctx.out.list(&ctx.client.list_invitations().await?, None),
        InvitationVerb::Delete { id } => ctx.out.one(&ctx.client.delete_invitation(&id).await?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("7d"), Ok(7 * 24 * 3600));
        assert_eq!(parse_ttl("12h"), Ok(12 * 3600));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
