//! `kite trigger`: posts a realistic sample webhook of a provider to an instance's hook, as
//! `stripe trigger` does, signed as the provider signs when a secret is given (the secret the
//! source was configured with: kite shows a source's secret only when it is set).

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kite_wire::provider::{sign_as, Scheme};
use serde_json::{json, Value};

/// A provider `kite trigger` has samples of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// Stripe events (`payment_intent.succeeded`, `charge.succeeded`, ...).
    Stripe,
    /// GitHub events (`push`, `pull_request`, `issues`, ...).
    Github,
    /// Slack Events API callbacks (`message`, `app_mention`, ...).
    Slack,
}

impl Provider {
    fn scheme(self) -> Scheme {
        match self {
            Provider::Stripe => Scheme::Stripe,
            Provider::Github => Scheme::Github,
            Provider::Slack => Scheme::Slack,
        }
    }

    /// The events it has samples of.
    pub fn events(self) -> &'static [&'static str] {
        match self {
            Provider::Stripe => &[
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.succeeded",
                "charge.refunded",
                "checkout.session.completed",
                "customer.created",
                "invoice.paid",
            ],
            Provider::Github => &["push", "pull_request", "issues", "release", "ping"],
            Provider::Slack => &["message", "app_mention", "reaction_added"],
        }
    }
}

/// `kite trigger` options.
#[derive(Debug, Clone, Args)]
pub struct TriggerArgs {
    /// The provider.
    pub provider: Provider,
    /// The event (`kite trigger stripe --list` names them).
    #[arg(required_unless_present = "list")]
    pub event: Option<String>,
    /// Lists the provider's sample events instead.
    #[arg(long)]
    pub list: bool,
    /// Root URL of the instance (http(s)://host:port).
    #[arg(long, env = "KITE_INSTANCE", default_value = "http://127.0.0.1:7700")]
    pub instance: String,
    /// The team whose hook takes it.
    #[arg(long, default_value = "default")]
    pub team: String,
    /// The hook source it is posted to (default: the provider's name).
    #[arg(long)]
    pub source: Option<String>,
    /// The source's signing secret (kite never shows it again, so it is given here): the
    /// sample is signed as the provider signs. Without it the sample goes unsigned, which a
    /// source with a secret refuses (401).
    #[arg(long, env = "KITE_TRIGGER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// A sample body of `provider`'s `event`, with ids made unique by `n`, and the headers the
/// provider sends beside it (not the signature).
pub fn sample(
    provider: Provider,
    event: &str,
    n: &str,
) -> Option<(Value, Vec<(&'static str, String)>)> {
    if !provider.events().contains(&event) {
        return None;
    }
    let now = chrono::Utc::now().timestamp();
    Some(match provider {
        Provider::Stripe => {
            let object = match event.split('.').next().unwrap_or(event) {
                "payment_intent" => json!({"id": format!("pi_{n}"), "object": "payment_intent",
                    "amount": 2000, "currency": "usd", "customer": format!("cus_{n}"),
                    "status": if event.ends_with("failed") { "requires_payment_method" } else { "succeeded" }}),
                "charge" => json!({"id": format!("ch_{n}"), "object": "charge", "amount": 2000,
                    "amount_refunded": if event.ends_with("refunded") { 2000 } else { 0 },
                    "currency": "usd", "paid": true, "payment_intent": format!("pi_{n}")}),
                "checkout" => json!({"id": format!("cs_test_{n}"), "object": "checkout.session",
                    "amount_total": 2000, "currency": "usd", "mode": "payment",
                    "payment_status": "paid", "status": "complete"}),
                "customer" => json!({"id": format!("cus_{n}"), "object": "customer",
                    "email": "jenny.rosen@example.com", "name": "Jenny Rosen"}),
                _ => json!({"id": format!("in_{n}"), "object": "invoice", "amount_paid": 2000,
                    "currency": "usd", "customer": format!("cus_{n}"), "status": "paid"}),
            };
            (
                json!({"id": format!("evt_{n}"), "object": "event", "api_version": "2024-06-20",
                       "created": now, "livemode": false, "type": event,
                       "data": {"object": object}, "pending_webhooks": 1,
                       "request": {"id": null, "idempotency_key": null}}),
                Vec::new(),
            )
        }
        Provider::Github => {
            let repo = json!({"id": 1296269, "name": "hello-world", "full_name": "octocat/hello-world",
                              "private": false, "html_url": "https://github.com/octocat/hello-world"});
            let sender = json!({"login": "octocat", "id": 1, "type": "User"});
            let body = match event {
                "push" => json!({"ref": "refs/heads/main", "before": "0".repeat(40),
                    "after": format!("{:0>40}", n), "repository": repo, "sender": sender,
                    "commits": [{"id": format!("{:0>40}", n), "message": "Fix the bug", "author": {"name": "Mona"}}]}),
                "pull_request" => {
                    json!({"action": "opened", "number": 42, "repository": repo, "sender": sender,
                    "pull_request": {"number": 42, "title": "Add a feature", "state": "open",
                                     "head": {"ref": "feature"}, "base": {"ref": "main"}}})
                }
                "issues" => json!({"action": "opened", "repository": repo, "sender": sender,
                    "issue": {"number": 7, "title": "Something is broken", "state": "open"}}),
                "release" => json!({"action": "published", "repository": repo, "sender": sender,
                    "release": {"tag_name": "v1.0.0", "name": "v1.0.0", "draft": false}}),
                _ => {
                    json!({"zen": "Keep it logically awesome.", "hook_id": 1, "repository": repo, "sender": sender})
                }
            };
            (
                body,
                vec![
                    ("x-github-event", event.to_owned()),
                    ("x-github-delivery", uuid::Uuid::now_v7().to_string()),
                ],
            )
        }
        Provider::Slack => {
            let inner = match event {
                "reaction_added" => json!({"type": "reaction_added", "user": "U061F7AUR",
                    "reaction": "thumbsup", "item": {"type": "message", "channel": "C0LAN2Q65", "ts": "1360782400.498405"}}),
                other => json!({"type": other, "channel": "C0LAN2Q65", "user": "U061F7AUR",
                    "text": if other == "app_mention" { "<@U0LAN0Z89> is it everything?" } else { "Hello world" },
                    "ts": "1515449522.000016"}),
            };
            (
                json!({"token": "verification-token", "team_id": "T061EG9R6", "api_app_id": "A0MDYCDME",
                       "event": inner, "type": "event_callback", "event_id": format!("Ev{n}"),
                       "event_time": now}),
                Vec::new(),
            )
        }
    })
}

/// Runs `kite trigger`.
pub async fn trigger(a: TriggerArgs) -> anyhow::Result<()> {
    if a.list {
        for e in a.provider.events() {
            println!("{e}");
        }
        return Ok(());
    }
    let event = a.event.as_deref().unwrap_or_default();
    let n = uuid::Uuid::now_v7().simple().to_string();
    let Some((body, mut headers)) = sample(a.provider, event, &n[..24]) else {
        bail!(
            "no sample of {:?} for {}: it has {}",
            event,
            a.provider.scheme().name(),
            a.provider.events().join(", ")
        );
    };
    let body = serde_json::to_vec(&body)?;
    if let Some(secret) = &a.secret {
        headers.extend(sign_as(
            a.provider.scheme(),
            secret,
            chrono::Utc::now().timestamp(),
            &body,
        ));
    }
    let source = a
        .source
        .clone()
        .unwrap_or_else(|| a.provider.scheme().name().to_owned());
    let url = format!(
        "{}/hooks/{}/{}",
        a.instance.trim_end_matches('/'),
        a.team,
        source
    );
    let mut req = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("an HTTP client")?
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    let signed = if a.secret.is_some() {
        "signed"
    } else {
        "unsigned"
    };
    println!(
        "posted a sample {} {event} ({signed}) to {url}: {} {text}",
        a.provider.scheme().name(),
        status.as_u16()
    );
    Ok(())
}
