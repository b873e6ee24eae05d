//! The `request` / `response` calls of `/ws`, as the public Kite CLI makes them (`kite
//! endpoints`, `kite keys`, `kite logs`, `kite status`): each method, its parameters, its
//! answer, and the permission it needs. Kite's "hooks" (endpoints) are kite's signed
//! sources: `/hooks/{team}/{source}` with a signing secret.

use chrono::{DateTime, Utc};
use kite_api::keys::NewKey;
use kite_api::sources::NewSource;
use kite_store::keys::KeyGrant;
use kite_store::types::Permission;
use kite_wire::provider::Scheme;
use kite_wire::token;
use kite_wire::Code;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::access::Action;
use crate::error::RpcError;
use crate::AppState;

/// The admin API action each method is the twin of (`None`: no such method): the method
/// needs that action's permission, from the one table both doors read.
fn action(method: &str) -> Option<Action> {
    Some(match method {
        "hooks.list" => Action::ListSources,
        "hooks.create" => Action::CreateSource,
        "hooks.deactivate" => Action::DeleteSource,
        "keys.list" => Action::ListKeys,
        "keys.create" => Action::CreateKey,
        "keys.revoke" => Action::RevokeKey,
        "events.recent" => Action::ListEvents,
        "dashboard.stats" => Action::Session,
        _ => return None,
    })
}

/// The permission each method needs (`None`: no such method).
fn needs(method: &str) -> Option<Permission> {
    action(method).map(Action::needs)
}

/// The permissions a key holds, as the CLI checks them (`read`, `write`, `admin`).
fn held(p: Permission) -> Vec<&'static str> {
    Permission::ALL
        .iter()
        .filter(|q| p.allows(**q))
        .map(|q| q.as_str())
        .collect()
}

/// A string parameter: absent or null is `None`; otherwise non-empty and at most 512 bytes.
fn str_param<'a>(params: &'a Value, name: &str) -> Result<Option<&'a str>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => Ok(Some(s)),
        Some(_) => Err(RpcError::new(
            Code::InvalidParams,
            format!("{name} must be a non-empty string of at most 512 bytes"),
        )),
    }
}

/// The required `id` parameter; one that is no UUID names no resource.
fn id_param(params: &Value) -> Result<Uuid, RpcError> {
    str_param(params, "id")?
        .ok_or_else(|| RpcError::new(Code::InvalidParams, "id is required"))?
        .parse()
        .map_err(|_| RpcError::new(Code::NotFound, "no such resource"))
}

/// Answers one call with the payload of a successful response.
pub(crate) async fn call(
    st: &AppState,
    grant: &KeyGrant,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    let need = needs(method)
        .ok_or_else(|| RpcError::new(Code::UnknownMethod, format!("unknown method {method:?}")))?;
    if !grant.permission.allows(need) {
        return Err(RpcError::new(
            Code::Forbidden,
            format!("{method} needs the {need} permission"),
        ));
    }
    if !(params.is_null() || params.is_object()) {
        return Err(RpcError::new(
            Code::InvalidParams,
            "params must be an object",
        ));
    }
    let team = grant.team_id.as_str();
    match method {
        "hooks.list" => hooks_list(st, team).await,
        "hooks.create" => hooks_create(st, team, params).await,
        "hooks.deactivate" => hooks_deactivate(st, team, params).await,
        "keys.list" => keys_list(st, team).await,
        "keys.create" => keys_create(st, team, params).await,
        "keys.revoke" => keys_revoke(st, team, params).await,
        "events.recent" => events_recent(st, team, params).await,
        "dashboard.stats" => dashboard_stats(st, team, grant).await,
        _ => Err(RpcError::new(
            Code::UnknownMethod,
            format!("unknown method {method:?}"),
        )),
    }
}

/// A signed source as the Kite CLI lists a hook.
#[derive(Serialize)]
struct Hook {
    id: Uuid,
    source: String,
    scheme: Scheme,
    active: bool,
    webhook_secret_configured: bool,
    endpoint: String,
    created_at: DateTime<Utc>,
}

/// `hooks.list`'s answer.
#[derive(Serialize)]
struct Hooks<'a> {
    team_id: &'a str,
    hooks: Vec<Hook>,
}

/// `hooks.create`'s answer: the hook, and a secret kite made, shown once.
#[derive(Serialize)]
struct CreatedHook {
    id: Uuid,
    source: String,
    scheme: Scheme,
    endpoint: String,
    endpoint_with_token: String,
    hook_token: Option<String>,
    webhook_secret_configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    github_webhook_secret: Option<String>,
}

/// `hooks.deactivate`'s and `keys.revoke`'s answers.
#[derive(Serialize)]
struct Changed {
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<bool>,
}

/// An API key as the Kite CLI lists it.
#[derive(Serialize)]
struct KeyEntry {
    id: Uuid,
    name: String,
    key_prefix: String,
    permissions: Vec<&'static str>,
    revoked: bool,
    created_at: DateTime<Utc>,
}

/// `keys.list`'s answer.
#[derive(Serialize)]
struct Keys<'a> {
    team_id: &'a str,
    keys: Vec<KeyEntry>,
}

/// `keys.create`'s answer: the key, shown once.
#[derive(Serialize)]
struct CreatedApiKey {
    id: Uuid,
    key_prefix: String,
    api_key: String,
    permissions: Vec<&'static str>,
}

/// A successful payload.
fn answer(v: impl Serialize) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(Code::Internal, e.to_string()))
}

/// `hooks.list`: the team's signed sources, as hooks.
async fn hooks_list(st: &AppState, team: &str) -> Result<Value, RpcError> {
    let hooks = st
        .store
        .list_sources(team)
        .await?
        .into_iter()
        .map(|s| Hook {
            id: s.id,
            endpoint: format!("/hooks/{team}/{}", s.name),
            source: s.name,
            scheme: s.scheme,
            active: true,
            webhook_secret_configured: true,
            created_at: s.created_at,
        })
        .collect();
    answer(Hooks {
        team_id: team,
        hooks,
    })
}

/// `hooks.create`: a new signed source, its secret given or made (and then shown once),
/// read and made as `POST /api/sources` reads and makes one.
async fn hooks_create(st: &AppState, team: &str, params: &Value) -> Result<Value, RpcError> {
    let source = str_param(params, "source")?
        .ok_or_else(|| RpcError::new(Code::InvalidParams, "source is required"))?;
    let scheme = scheme_named_by(source);
    let given = str_param(params, "webhook_secret")?;
    let secret = given
        .map(str::to_owned)
        .unwrap_or_else(token::mint_federation_token);
    // Read as `POST /api/sources` reads its body, so the two doors refuse alike.
    let mut body = kite_api::request::Body::new();
    body.insert("name".into(), json!(source));
    body.insert("scheme".into(), json!(scheme));
    body.insert("secret".into(), json!(secret));
    let new = kite_api::request::read::<NewSource>(&body)
        .map_err(|e| RpcError::new(Code::InvalidParams, e.message))?;
    let src = crate::api::sources::create(st, team, &new).await?;
    let endpoint = format!("/hooks/{team}/{source}");
    // A secret kite made is shown once, here.
    let made = given.is_none().then_some(secret);
    answer(CreatedHook {
        id: src.id,
        source: src.name,
        scheme: src.scheme,
        endpoint_with_token: endpoint.clone(),
        endpoint,
        hook_token: None,
        webhook_secret_configured: true,
        github_webhook_secret: made.clone().filter(|_| scheme == Scheme::Github),
        webhook_secret: made,
    })
}

/// A provider's own scheme when the source is named after it, else Standard Webhooks.
fn scheme_named_by(source: &str) -> Scheme {
    match Scheme::parse(source) {
        Some(s @ (Scheme::Stripe | Scheme::Github | Scheme::Slack)) => s,
        _ => Scheme::StandardWebhooks,
    }
}

/// `hooks.deactivate`: deletes the source with the given id.
async fn hooks_deactivate(st: &AppState, team: &str, params: &Value) -> Result<Value, RpcError> {
    let id = id_param(params)?;
    let src = st
        .store
        .list_sources(team)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| RpcError::new(Code::NotFound, "no such hook"))?;
    crate::api::sources::delete(st, team, &src.name).await?;
    answer(Changed {
        id,
        active: Some(false),
        revoked: None,
    })
}

/// `keys.list`: the team's API keys (never their secrets).
async fn keys_list(st: &AppState, team: &str) -> Result<Value, RpcError> {
    let keys = st
        .store
        .list_api_keys(team)
        .await?
        .into_iter()
        .map(|k| KeyEntry {
            id: k.id,
            name: k.label,
            key_prefix: k.prefix,
            permissions: held(k.permission),
            revoked: k.revoked_at.is_some(),
            created_at: k.created_at,
        })
        .collect();
    answer(Keys {
        team_id: team,
        keys,
    })
}

/// `keys.create`: a new API key with the highest permission asked for, shown once, made as
/// `POST /api/keys` makes one.
async fn keys_create(st: &AppState, team: &str, params: &Value) -> Result<Value, RpcError> {
    let label = str_param(params, "name")?.unwrap_or_default().to_owned();
    let permission = highest(params.get("permissions"))?;
    check_key_options(params)?;
    let created = crate::api::keys::create(st, team, &NewKey { label, permission }).await?;
    answer(CreatedApiKey {
        id: created.info.id,
        key_prefix: created.info.prefix,
        api_key: created.key,
        permissions: held(created.info.permission),
    })
}

/// Refuses the `keys.create` options kite keys do not have: scopes other than `["*"]` and
/// an expiry.
fn check_key_options(params: &Value) -> Result<(), RpcError> {
    match params.get("scopes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(|s| s == "*") => {}
        Some(_) => {
            return Err(RpcError::new(
                Code::Unsupported,
                "kite keys see all of their team's events: scopes must be [\"*\"]",
            ))
        }
    }
    if !params.get("expires_at").is_none_or(Value::is_null) {
        return Err(RpcError::new(
            Code::Unsupported,
            "kite keys do not expire: revoke them instead (expires_at must be null)",
        ));
    }
    Ok(())
}

/// `keys.revoke`: revokes the key with the given id.
async fn keys_revoke(st: &AppState, team: &str, params: &Value) -> Result<Value, RpcError> {
    let id = id_param(params)?;
    let info = st.store.revoke_api_key(team, id).await?;
    answer(Changed {
        id: info.id,
        active: None,
        revoked: Some(true),
    })
}

/// `events.recent`: the team's latest events (`limit`, 100 when absent), those that read.
async fn events_recent(st: &AppState, team: &str, params: &Value) -> Result<Value, RpcError> {
    let limit = match params.get("limit") {
        None | Some(Value::Null) => 100,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                RpcError::new(
                    Code::InvalidParams,
                    "limit must be an integer within 1..=1000",
                )
            })?,
    };
    let events = st
        .store
        .recent_events(team, limit)
        .await?
        .into_iter()
        .filter_map(|e| {
            let event = serde_json::from_str(&e.text(true).ok()?).ok()?;
            Some(RecentEvent {
                seq: e.seq,
                source: e.hook_source,
                created_at: e.received_at,
                event,
            })
        })
        .collect();
    answer(RecentEvents { events })
}

/// One event of `events.recent`.
#[derive(Serialize)]
struct RecentEvent {
    seq: i64,
    source: String,
    created_at: DateTime<Utc>,
    event: Value,
}

/// `events.recent`'s answer.
#[derive(Serialize)]
struct RecentEvents {
    events: Vec<RecentEvent>,
}

/// `dashboard.stats`' answer.
#[derive(Serialize)]
struct Stats<'a> {
    team_id: &'a str,
    webhooks_today: i64,
    active_endpoints: i64,
    active_api_keys: i64,
    current_key_permissions: Vec<&'static str>,
    plan_name: &'static str,
    active_sources_limit: Option<i64>,
}

/// `dashboard.stats`: the team's counts and the calling key's permissions.
async fn dashboard_stats(st: &AppState, team: &str, grant: &KeyGrant) -> Result<Value, RpcError> {
    let stats = st.store.team_stats(team).await?;
    answer(Stats {
        team_id: team,
        webhooks_today: stats.events_today,
        active_endpoints: stats.sources,
        active_api_keys: stats.active_keys,
        current_key_permissions: held(grant.permission),
        plan_name: "self-hosted",
        active_sources_limit: None,
    })
}

/// The highest of the permissions a `keys.create` asks for (`read` when none; `*` is admin).
fn highest(v: Option<&Value>) -> Result<Permission, RpcError> {
    let bad = || {
        RpcError::new(
            Code::InvalidParams,
            "permissions must be an array of read, write, admin or *",
        )
    };
    let items = match v {
        None | Some(Value::Null) => return Ok(Permission::Read),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad()),
    };
    let mut best = Permission::Read;
    for p in items {
        let p = match p.as_str() {
            Some("*") => Permission::Admin,
            Some(s) => Permission::parse(s).ok_or_else(bad)?,
            None => return Err(bad()),
        };
        if p.allows(best) {
            best = p;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_permissions() {
        assert_eq!(needs("keys.create"), Some(Permission::Admin));
        // The same as their HTTP twins: removing a hook's signature check needs admin.
        assert_eq!(needs("hooks.create"), Some(Permission::Admin));
        assert_eq!(needs("hooks.deactivate"), Some(Permission::Admin));
        assert_eq!(needs("events.recent"), Some(Permission::Read));
        assert_eq!(needs("hooks.delete"), None);
        assert_eq!(held(Permission::Write), vec!["read", "write"]);
        assert_eq!(
            highest(Some(&json!(["read", "*"]))).ok(),
            Some(Permission::Admin)
        );
        assert_eq!(highest(None).ok(), Some(Permission::Read));
        assert!(highest(Some(&json!(["root"]))).is_err());
    }
}
