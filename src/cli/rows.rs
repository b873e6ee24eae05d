//! How each answer type of the admin API shows as a table row: its columns, read from its
//! fields (a field renamed or removed in `kite_api` fails to compile here).

use kite_api::events::EventItem;
use kite_api::grants::Grant;
use kite_api::invitations::InvitationInfo;
use kite_api::keys::ApiKeyInfo;
use kite_api::outbox::OutboxEntry;
use kite_api::peers::PeerView;
use kite_api::senders::Sender;
use kite_api::sources::{Source, SourceList};
use kite_api::teams::Team;
use kite_api::tokens::TokenInfo;
use serde_json::{json, Value};

use super::output::Row;

impl Row for ApiKeyInfo {
    const HEADERS: &'static [&'static str] =
        &["ID", "PREFIX", "PERMISSION", "LABEL", "CREATED", "REVOKED"];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(self.prefix),
            json!(self.permission),
            json!(self.label),
            json!(self.created_at),
            json!(self.revoked_at),
        ]
    }
}

impl Row for TokenInfo {
    const HEADERS: &'static [&'static str] = &["ID", "LABEL", "CREATED"];
    fn cells(&self) -> Vec<Value> {
        vec![json!(self.id), json!(self.label), json!(self.created_at)]
    }
}

impl Row for Sender {
    const HEADERS: &'static [&'static str] =
        &["ID", "NAME", "KEY_ID", "LEGACY_SIGNATURE", "CREATED"];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(self.name),
            json!(self.key_id),
            json!(self.legacy_signature),
            json!(self.created_at),
        ]
    }
}

impl Row for PeerView {
    const HEADERS: &'static [&'static str] = &[
        "ID", "NAME", "STATUS", "HEALTH", "SCOPES", "MAX_HOPS", "PENDING", "DEAD", "URL",
    ];
    fn cells(&self) -> Vec<Value> {
        let p = &self.peer;
        vec![
            json!(p.id),
            json!(p.name),
            json!(p.status),
            json!(p.health),
            json!(p.scopes),
            json!(p.max_hops),
            json!(self.pending),
            json!(self.dead),
            json!(p.peer_hook_url),
        ]
    }
}

/// `kite peer list`: each peer's health, as an operator watches it.
pub(crate) const PEER_HEALTH: &[&str] = &[
    "NAME",
    "SERVER",
    "STATUS",
    "HEALTH",
    "LAST_SEEN",
    "LAST_HEARTBEAT",
    "LAST_ERROR",
    "RESOLVED",
    "SENT_24H",
    "RECEIVED_24H",
    "PENDING",
    "DEAD",
];

/// The cells of [`PEER_HEALTH`].
pub(crate) fn peer_health(v: &PeerView) -> Vec<Value> {
    let p = &v.peer;
    vec![
        json!(p.name),
        json!(p.server_name),
        json!(p.status),
        json!(p.health),
        json!(v.last_seen),
        json!(p.last_heartbeat_at),
        json!(p.last_error),
        json!(v.last_error_resolved_at),
        json!(v.events_sent_24h),
        json!(v.events_received_24h),
        json!(v.pending),
        json!(v.dead),
    ]
}

impl Row for Source {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "SIGNED",
        "SCHEME",
        "HEADER",
        "UPDATED",
        "OLD_SECRET_UNTIL",
    ];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.name),
            json!("yes"),
            json!(self.scheme),
            json!(self.header),
            json!(self.updated_at),
            json!(self.previous_until),
        ]
    }
}

/// The sources listing as one table: the signed sources, then the hook sources that took
/// unsigned posts, marked as accepting anyone's.
pub(crate) fn sources(list: &SourceList) -> String {
    let mut rows: Vec<Vec<Value>> = list.items.iter().map(Row::cells).collect();
    rows.extend(list.unsigned.iter().map(|u| {
        vec![
            json!(u.name),
            json!("NO: accepts anyone's posts"),
            Value::Null,
            Value::Null,
            json!(u.last_seen),
            Value::Null,
        ]
    }));
    super::output::table(Source::HEADERS, &rows)
}

impl Row for OutboxEntry {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "SEQ",
        "EVENT",
        "TYPE",
        "PEER",
        "STATUS",
        "REASON",
        "PEER_ANSWER",
        "ATTEMPTS",
        "LAST_ERROR",
    ];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(self.event_seq),
            json!(self.event_id),
            json!(self.event_type),
            json!(self.peer_id),
            json!(self.status),
            json!(self.reason),
            json!(self.peer_answer),
            json!(self.attempts),
            json!(self.last_error),
        ]
    }
}

impl Row for EventItem {
    const HEADERS: &'static [&'static str] =
        &["SEQ", "SOURCE", "RECEIVED", "TYPE", "ID", "ORIGIN", "HOPS"];
    fn cells(&self) -> Vec<Value> {
        let attr = |name| self.attribute(name).unwrap_or(Value::Null);
        vec![
            json!(self.seq),
            json!(self.source),
            json!(self.received_at),
            attr("type"),
            attr("id"),
            attr("kitefedorigin"),
            attr("kitefedhops"),
        ]
    }
}

impl Row for Team {
    const HEADERS: &'static [&'static str] = &["ID", "CREATED"];
    fn cells(&self) -> Vec<Value> {
        vec![json!(self.id), json!(self.created_at)]
    }
}

impl Row for Grant {
    const HEADERS: &'static [&'static str] = &["ID", "PERMISSIONS", "SCOPES", "EXPIRES", "CREATED"];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(self.permissions),
            json!(self.scopes),
            json!(self.expires_at),
            json!(self.created_at),
        ]
    }
}

impl Row for InvitationInfo {
    const HEADERS: &'static [&'static str] =
        &["ID", "SCOPES", "MAX_HOPS", "EXPIRES", "USED", "USED_BY"];
    fn cells(&self) -> Vec<Value> {
        vec![
            json!(self.id),
            json!(self.scopes),
            json!(self.max_hops),
            json!(self.expires_at),
            json!(self.used_at),
            json!(self.used_by),
        ]
    }
}

/// An event's story (`GET /api/events/{id}`) as text: the event, a table of what happened
/// for each peer, then each delivery's attempts and operator actions, oldest first.
pub(crate) fn story(s: &Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let ev = &s["event"];
    let mut out = format!(
        "event {} (seq {}), type {}, from source {}, received {}\n",
        text(&ev["id"]),
        text(&s["seq"]),
        text(&ev["type"]),
        text(&s["source"]),
        text(&s["received_at"]),
    );
    if let Some(origin) = ev["kitefedorigin"].as_str() {
        let chain = ev["kitefedchain"]
            .as_str()
            .and_then(|c| serde_json::from_str::<Vec<String>>(c).ok())
            .map(|c| c.join(" -> "))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "federated: origin {origin}, chain {chain}, hops {}",
            text(&ev["kitefedhops"])
        );
    }
    let none = Vec::new();
    let deliveries = s["deliveries"].as_array().unwrap_or(&none);
    let rows: Vec<Vec<Value>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d["peer"].clone(),
                d["outbox_id"].clone(),
                d["outcome"].clone(),
                d["reason"].clone(),
                d["peer_answer"].clone(),
                json!(d["attempts"].as_array().map_or(0, Vec::len)),
                d["delivered_at"].clone(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&super::output::table(
        &[
            "PEER",
            "ROW",
            "OUTCOME",
            "REASON",
            "PEER_ANSWER",
            "ATTEMPTS",
            "DELIVERED",
        ],
        &rows,
    ));
    for d in deliveries.iter().filter(|d| !d["filter"].is_null()) {
        let _ = write!(
            out,
            "\n{}: not matched by filter {}",
            text(&d["peer"]),
            d["filter"]
        );
        match d["filter_error"].as_str() {
            Some(e) => {
                let _ = writeln!(out, ", which could not answer: {e}");
            }
            None => out.push('\n'),
        }
    }
    for d in deliveries {
        let attempts = d["attempts"].as_array().unwrap_or(&none);
        let actions = d["actions"].as_array().unwrap_or(&none);
        if attempts.is_empty() && actions.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", text(&d["peer"]));
        for a in attempts {
            let _ = write!(out, "  {}  attempt {}", text(&a["at"]), text(&a["outcome"]));
            if let Some(code) = a["status_code"].as_i64() {
                let _ = write!(out, " {code}");
            }
            if let Some(answer) = a["peer_answer"].as_str() {
                let _ = write!(out, " ({answer})");
            }
            if let Some(e) = a["error"].as_str() {
                let _ = write!(out, ": {e}");
            }
            let _ = writeln!(out, " [{} ms]", text(&a["duration_ms"]));
        }
        for a in actions {
            let _ = writeln!(
                out,
                "  {}  {} by key {}",
                text(&a["at"]),
                text(&a["action"]),
                text(&a["by"])
            );
        }
    }
    out
}

/// One of a server's published keys as a table row: the current key has no end.
pub(crate) fn key_cells(k: &kite_wire::peering::PublishedKey) -> Vec<Value> {
    vec![
        json!(k.key_id),
        json!(if k.valid_until.is_none() {
            "current"
        } else {
            "previous"
        }),
        json!(k.valid_from),
        json!(k.valid_until),
        json!(k.public_key),
    ]
}
