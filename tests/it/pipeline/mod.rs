//! The federation pipeline end to end: real instances, Postgres and RabbitMQ, over HTTP.

use crate::common;

mod batches;
mod lifecycle;
mod routing;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

async fn outbox_state(inst: &Instance, peer_id: &str, event_id: &str) -> Option<Value> {
    inst.outbox(&format!("peer_id={peer_id}"))
        .await
        .into_iter()
        .find(|r| r["event_id"] == event_id)
}

async fn wait_state(inst: &Instance, peer_id: &str, event_id: &str, state: &str) -> Value {
    eventually(
        &format!("{event_id} {state} on {}", inst.name),
        WAIT,
        || async {
            outbox_state(inst, peer_id, event_id)
                .await
                .filter(|r| r["status"] == state)
        },
    )
    .await
}

async fn wait_event(inst: &Instance, id: &str) -> Value {
    eventually(&format!("{id} at {}", inst.name), WAIT, || inst.event(id)).await
}
