//! Driving peerings from tests: invite and accept with the CLI, read a peer's record, and
//! sign requests as an instance (with its identity keys read from its database).

use std::time::Duration;

use chrono::Utc;
use kite_wire::identity::{self, SecretKey};
use serde_json::{json, Value};

use super::cli::peer_cmd;
use super::{eventually, Instance};

pub const WAIT: Duration = Duration::from_secs(30);

/// Fast heartbeats: one a second, `degraded` after two missed.
pub const FAST_HEARTBEATS: &[(&str, &str)] = &[
    ("KITE_HEARTBEAT_INTERVAL_SECS", "1"),
    ("KITE_HEARTBEAT_MISSES", "2"),
];

/// `kite peer invite` on `on`; answers the invitation string it printed.
pub async fn invite(on: &Instance, args: &[&str]) -> String {
    let mut all = vec!["invite"];
    all.extend_from_slice(args);
    let run = peer_cmd(on, &all).await.ok();
    let line = run.out.trim().to_string();
    assert!(line.starts_with("kiteinv_"), "{run:?}");
    assert!(run.err.contains("works once"), "{run:?}");
    line
}

/// The peer record `on` holds for the server named `server`.
pub async fn peer_of(on: &Instance, server: &str) -> Option<Value> {
    let (s, v) = on.get("/api/federation/peers").await;
    assert_eq!(s, 200, "{v}");
    v["items"]
        .as_array()?
        .iter()
        .find(|p| p["server_name"] == server)
        .cloned()
}

/// Waits until `on`'s peer record for `server` is in `status`; answers it.
pub async fn status_becomes(on: &Instance, server: &str, status: &str) -> Value {
    eventually(
        &format!("{}'s peer {server} to be {status}", on.name),
        WAIT,
        || async { peer_of(on, server).await.filter(|p| p["status"] == status) },
    )
    .await
}

/// Invites on `a` (sending `scopes`), accepts on `b` (sending `back`); both by the CLI.
pub async fn handshake(a: &Instance, b: &Instance, scopes: &str, back: &str) -> Value {
    let inv = invite(a, &["--scopes", scopes]).await;
    peer_cmd(b, &["accept", &inv, "--scopes", back, "--output", "json"])
        .await
        .ok()
        .json()
}

/// A Stripe event type.
pub const STRIPE: &str = "com.stripe.charge.succeeded";

/// A federated CloudEvent body of type `ty` as `origin` would forward it (unsigned).
pub fn federated_event(ty: &str, id: &str, origin: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0", "id": id, "source": "/hooks/default/test",
        "type": ty, "datacontenttype": "application/json",
        "data": {"id": id}, "kitefedorigin": origin,
        "kitefedchain": format!("[\"{origin}\"]"), "kitefedhops": 1
    }))
    .expect("json")
}

/// [`federated_event`] with `origin`'s signature (made with its key `key_id`), as an
/// instance sends what enters the federation there.
pub fn signed_event(ty: &str, id: &str, origin: &str, key_id: &str, key: &SecretKey) -> Vec<u8> {
    let text = String::from_utf8(federated_event(ty, id, origin)).expect("utf-8");
    kite_wire::provenance::sign_text(&text, origin, key_id, key)
        .expect("sign")
        .into_bytes()
}

/// POSTs `body` to `to`'s federation hook signed as `server` with `key` named `key_id`.
pub async fn post_signed_as(
    to: &Instance,
    server: &str,
    key_id: &str,
    key: &SecretKey,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = to
        .http
        .post(format!("{}/hooks/default/kite", to.url))
        .header("content-type", "application/cloudevents+json");
    let target = identity::Target {
        method: "POST",
        destination: &to.name,
        path: "/hooks/default/kite",
    };
    for (k, v) in identity::signed_headers(
        server,
        key_id,
        key,
        &target,
        &format!("msg_{}", uuid::Uuid::new_v4().simple()),
        Utc::now().timestamp(),
        &body,
    ) {
        req = req.header(k, v);
    }
    let r = req.body(body).send().await.expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Every identity key `inst` ever had, with its private half, read from its database.
pub async fn keys_of(inst: &Instance) -> Vec<(kite_wire::peering::PublishedKey, SecretKey)> {
    let secret = inst.env.get("KITE_SECRET_KEY").expect("secret key");
    let store = kite_store::Store::connect(&inst.db_url(), 1)
        .await
        .expect("store")
        .with_secrets(kite_wire::secret_box::SecretBox::from_base64(secret).expect("key"));
    store.all_signing_keys().await.expect("keys")
}
