//! The `request` / `response` calls of `/ws`, as the public Kite CLI makes them (`kite
//! endpoints`, `kite keys`, `kite logs`, `kite status`): each method, its parameters, its
//! answer, and the permission it needs. Kite's "hooks" (endpoints) are kite's signed
//! sources: `/hooks/{team}/{source}` with a signing secret.

use kite_store::keys::KeyGrant;
use kite_store::types::Permission;
use kite_wire::provider::Scheme;
use kite_wire::token;
use kite_wire::Code;
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
        "hooks.list" => {
            let hooks: Vec<Value> = st
                .store
                .list_sources(team)
                .await?
                .iter()
                .map(|s| {
                    json!({"id": s.id, "source": s.name, "scheme": s.scheme, "active": true,
                           "webhook_secret_configured": true,
                           "endpoint": format!("/hooks/{team}/{}", s.name),
                           "created_at": s.created_at})
                })
                .collect();
            Ok(json!({"team_id": team, "hooks": hooks}))
        }
        "hooks.create" => {
            let source = str_param(params, "source")?
                .ok_or_else(|| RpcError::new(Code::InvalidParams, "source is required"))?;
            kite_wire::event::validate_source_name(source)
                .map_err(|e| RpcError::new(Code::InvalidParams, e.message))?;
            if source == kite_wire::event::FEDERATION_SOURCE {
                return Err(RpcError::new(
                    Code::InvalidParams,
                    "kite is the federation source; peers are trusted with /api/federation/trusted-senders",
                ));
            }
            // A provider's own scheme when the source is named after it, else Standard Webhooks.
            let scheme = match Scheme::parse(source) {
                Some(s @ (Scheme::Stripe | Scheme::Github | Scheme::Slack)) => s,
                _ => Scheme::StandardWebhooks,
            };
            let given = str_param(params, "webhook_secret")?;
            let secret = given
                .map(str::to_owned)
                .unwrap_or_else(token::mint_federation_token);
            let src = st
                .store
                .create_source(team, source, scheme.name(), &secret, None)
                .await?;
            st.senders.invalidate().await;
            let endpoint = format!("/hooks/{team}/{source}");
            let mut out = json!({"id": src.id, "source": src.name, "scheme": src.scheme,
                                 "endpoint": endpoint, "endpoint_with_token": endpoint,
                                 "hook_token": Value::Null, "webhook_secret_configured": true});
            // A secret kite made is shown once, here.
            if given.is_none() {
                out["webhook_secret"] = json!(secret);
                if scheme == Scheme::Github {
                    out["github_webhook_secret"] = json!(secret);
                }
            }
            Ok(out)
        }
        "hooks.deactivate" => {
            let id = id_param(params)?;
            let src = st
                .store
                .list_sources(team)
                .await?
                .into_iter()
                .find(|s| s.id == id)
                .ok_or_else(|| RpcError::new(Code::NotFound, "no such hook"))?;
            st.store.delete_source(team, &src.name).await?;
            st.senders.invalidate().await;
            Ok(json!({"id": id, "active": false}))
        }
        "keys.list" => {
            let keys: Vec<Value> = st
                .store
                .list_api_keys(team)
                .await?
                .iter()
                .map(|k| {
                    json!({"id": k.id, "name": k.label, "key_prefix": k.prefix,
                           "permissions": held(k.permission), "revoked": k.revoked_at.is_some(),
                           "created_at": k.created_at})
                })
                .collect();
            Ok(json!({"team_id": team, "keys": keys}))
        }
        "keys.create" => {
            let name = str_param(params, "name")?.unwrap_or_default();
            let permission = highest(params.get("permissions"))?;
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
            let (info, key) = st.store.create_api_key(team, permission, name).await?;
            Ok(
                json!({"id": info.id, "key_prefix": info.prefix, "api_key": key,
                      "permissions": held(info.permission)}),
            )
        }
        "keys.revoke" => {
            let id = id_param(params)?;
            let info = st.store.revoke_api_key(team, id).await?;
            Ok(json!({"id": info.id, "revoked": true}))
        }
        "events.recent" => {
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
            let events: Vec<Value> = st
                .store
                .recent_events(team, limit)
                .await?
                .into_iter()
                .filter_map(|e| {
                    let text = e.text(true).ok()?;
                    let event: Value = serde_json::from_str(&text).ok()?;
                    Some(json!({"seq": e.seq, "source": e.hook_source,
                                "created_at": e.received_at, "event": event}))
                })
                .collect();
            Ok(json!({"events": events}))
        }
        "dashboard.stats" => {
            let stats = st.store.team_stats(team).await?;
            Ok(
                json!({"team_id": team, "webhooks_today": stats.events_today,
                      "active_endpoints": stats.sources, "active_api_keys": stats.active_keys,
                      "current_key_permissions": held(grant.permission),
                      "plan_name": "self-hosted", "active_sources_limit": Value::Null}),
            )
        }
        _ => Err(RpcError::new(
            Code::UnknownMethod,
            format!("unknown method {method:?}"),
        )),
    }
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
