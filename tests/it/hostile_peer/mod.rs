//! A hostile peer can only hurt itself. kite against the kit's hostile peer: a fake kite
//! server with its own keys that joins through a genuine invitation (or invites) and then
//! misbehaves. One test per way it tries; each checks the refusal, that nothing was stored or
//! sent, and that genuine peers' traffic at the same moment went through.

use crate::common;

mod bounds;
mod keys;
mod origins;
mod requests;

use std::time::Duration;

use common::cli::*;
use common::metrics::{scrape, value};
use common::peering::*;
use common::*;
use futures::StreamExt;
use kite_kit::hostile::{Answer, HostilePeer, Key};
use kite_wire::identity::PublicKey;
use kite_wire::peering::{PublishedKey, Terms};
use kite_wire::provenance;
use serde_json::{json, Value};

/// Where a genuine instance is, as a peer addresses it: its URL and server name.
fn at(inst: &Instance) -> (&str, &str) {
    (&inst.url, &inst.name)
}

/// A new invitation of `inst`'s (its API), sending `scopes`.
async fn invitation(inst: &Instance, scopes: &[&str]) -> String {
    let (s, v) = inst
        .post("/api/federation/invitations", json!({"scopes": scopes}))
        .await;
    assert_eq!(s, 201, "{v}");
    v["invitation"].as_str().expect("invitation").to_owned()
}

/// A hostile peer named `name`, joined to `inst` by an invitation of `inst`'s sending
/// `scopes`; it says it sends everything.
async fn joined(inst: &Instance, name: &str, scopes: &str) -> HostilePeer {
    let h = HostilePeer::start(name).await.expect("hostile peer");
    let inv = invitation(inst, &[scopes]).await;
    let (s, v) = h.join(&inv, &["*"]).await;
    assert_eq!(s, 200, "{name} joins {}: {v}", inst.name);
    h
}

/// A federated event `origin` sends, unsigned: origin and chain `chain`, hops its length.
fn unsigned(id: &str, ty: &str, origin: &str, chain: &[&str]) -> String {
    json!({
        "specversion": "1.0", "id": id, "source": "/hooks/default/x", "type": ty,
        "datacontenttype": "application/json", "data": {"id": id},
        "kitefedorigin": origin,
        "kitefedchain": serde_json::to_string(chain).expect("chain"),
        "kitefedhops": chain.len()
    })
    .to_string()
}

/// The process' resident memory, from its metrics.
async fn rss(inst: &Instance) -> f64 {
    value(&scrape(inst).await, "process_resident_memory_bytes", &[]).expect("resident memory")
}

const MIB: f64 = 1024.0 * 1024.0;

/// Waits until `inst` holds the event `id` once.
async fn holds(inst: &Instance, id: &str) {
    eventually(&format!("{id} on {}", inst.name), WAIT, || async {
        (inst.count_events(id).await == 1).then_some(())
    })
    .await;
}

/// The events the hostile peer was sent (their ids), in order.
fn delivered_to(h: &HostilePeer) -> Vec<String> {
    h.seen_at("/hooks/default/kite")
        .iter()
        .flat_map(|s| {
            let v: Value = serde_json::from_slice(&s.body).unwrap_or(Value::Null);
            match v {
                Value::Array(items) => items,
                one => vec![one],
            }
        })
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}
