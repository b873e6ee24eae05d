//! `kite admin`: the admin API verbs a person would otherwise type as curl, and
//! `secret-key`, which makes a KITE_SECRET_KEY.

use anyhow::Context;
use clap::{Args, Subcommand};
use kite_kit::admin::{AdminClient, AdminError};
use serde_json::{json, Value};

/// `kite admin` options.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the instance.
    #[arg(
        long,
        env = "KITE_INSTANCE",
        global = true,
        default_value = "http://127.0.0.1:7700"
    )]
    pub instance: String,
    /// Admin API key of the team.
    #[arg(long, env = "KITE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// The verb.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// An admin verb.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Print a new random KITE_SECRET_KEY (32 bytes, base64).
    SecretKey,
    /// API keys of the team.
    Keys {
        /// What to do with them.
        #[command(subcommand)]
        verb: KeyVerb,
    },
    /// Federation tokens (shared secrets for one direction of a peering).
    Tokens {
        /// What to do with them.
        #[command(subcommand)]
        verb: TokenVerb,
    },
    /// List the team's peers with their health.
    Peers,
    /// List the team's trusted senders.
    TrustedSenders,
}

/// API key verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyVerb {
    /// Mint a key (shown once).
    Create {
        /// `read`, `write` or `admin`.
        #[arg(long, default_value = "read")]
        permission: String,
        /// A label to recognise it by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (prefixes only).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Federation token verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenVerb {
    /// Mint a token (shown once).
    Create {
        /// A label to recognise it by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (labels only).
    List,
}

/// One admin call through the kit's typed client; a refused key is [`AuthFailed`] (exit 2).
async fn call(
    a: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let key = a
        .api_key
        .as_deref()
        .context("no API key: pass --api-key or set KITE_API_KEY")?;
    match AdminClient::new(&a.instance, key)
        .ok(method, path, body.as_ref())
        .await
    {
        Ok(v) => Ok(v),
        Err(AdminError::Status {
            status: 401,
            code,
            message,
            ..
        }) => Err(crate::listen::AuthFailed).context(format!("{code}: {message}")),
        Err(e) => Err(e.into()),
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs an admin verb.
pub async fn admin(a: AdminArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    match &a.command {
        AdminCommand::SecretKey => {
            println!("{}", kite_protocol::secret_box::SecretBox::generate_key());
        }
        AdminCommand::Keys { verb } => match verb {
            KeyVerb::Create { permission, label } => {
                let v = call(
                    &a,
                    Method::POST,
                    "/api/keys",
                    Some(json!({"permission": permission, "label": label})),
                )
                .await?;
                print(&v);
                eprintln!("store the key now: it is not shown again");
            }
            KeyVerb::List => print(&call(&a, Method::GET, "/api/keys", None).await?),
            KeyVerb::Revoke { id } => {
                print(&call(&a, Method::DELETE, &format!("/api/keys/{id}"), None).await?)
            }
        },
        AdminCommand::Tokens { verb } => match verb {
            TokenVerb::Create { label } => {
                print(
                    &call(
                        &a,
                        Method::POST,
                        "/api/federation/tokens",
                        Some(json!({"label": label})),
                    )
                    .await?,
                );
                eprintln!("store the token now: it is not shown again");
            }
            TokenVerb::List => print(&call(&a, Method::GET, "/api/federation/tokens", None).await?),
        },
        AdminCommand::Peers => print(&call(&a, Method::GET, "/api/federation/peers", None).await?),
        AdminCommand::TrustedSenders => {
            print(&call(&a, Method::GET, "/api/federation/trusted-senders", None).await?)
        }
    }
    Ok(())
}
