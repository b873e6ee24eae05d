//! The router and delivery stages over the in-memory bus: their logic against a real
//! Postgres, with no broker, through the same contract RabbitMQ implements.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kite_bus::{Bus, Message, Queue};
use kite_store::events::NewEvent;
use kite_store::peers::NewPeer;
use kite_store::types::PeerStatus;
use kite_store::Store;
use kite_wire::fed::FedInfo;
use kite_wire::ids::EventSeq;

/// A fresh database of its own, dropped at the end.
struct Db {
    name: String,
    store: Store,
}

impl Db {
    async fn new() -> Self {
        let name = format!(
            "kite_stage_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let store = Store::connect(&format!("{}/{name}", pg_server()), 4)
            .await
            .expect("connect")
            .with_secrets(
                kite_wire::secret_box::SecretBox::from_base64(
                    &kite_wire::secret_box::SecretBox::generate_key(),
                )
                .expect("key"),
            );
        store.migrate().await.expect("migrate");
        Self { name, store }
    }

    async fn drop_database(self) {
        drop(self.store);
        drop_database(&pg_server(), &self.name).await;
    }
}

#[tokio::test]
async fn the_router_turns_a_route_message_into_deliveries_in_memory() {
    let db = Db::new().await;
    let store = db.store.clone();
    store.ensure_team("t").await.expect("team");
    let new_peer = |name: &str, scopes: &[&str]| NewPeer {
        ordering_key: None,
        on_dead: Default::default(),
        delivery: Default::default(),
        content_mode: Default::default(),
        filters: Vec::new(),
        name: name.into(),
        peer_hook_url: "http://127.0.0.1:9/hooks/t/kite".into(),
        outbound_token: "kfed_x".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        max_hops: 3,
        status: PeerStatus::Active,
        key_id: None,
        inbound_token: None,
    };
    // An expression reads the data, which the router reads only for teams whose filters
    // need it: the small charge is not for the peer.
    let mut stripe_peer = new_peer("stripe-peer", &["stripe.*"]);
    stripe_peer.filters = vec![kite_api::filters::Filter::Cel(
        kite_api::filters::cel::Cel::compile("data.amount > 10".into()),
    )];
    let stripe = store.create_peer("t", &stripe_peer).await.expect("peer");
    let github = store
        .create_peer("t", &new_peer("other-peer", &["shopify.*"]))
        .await
        .expect("peer");
    let events: Vec<NewEvent> = [
        "com.stripe.charge.succeeded",
        "com.github.push",
        "com.stripe.charge.succeeded",
    ]
    .iter()
    .enumerate()
    .map(|(i, ty)| NewEvent {
        team_id: "t".into(),
        ce_source: "/hooks/t/x".into(),
        ce_id: format!("e{i}"),
        hook_source: "x".into(),
        ce_type: ty.to_string(),
        event: format!(
            r#"{{"id":"e{i}","type":"{ty}","data":{{"amount":{}}}}}"#,
            50 - 20 * i
        ),
        fed: FedInfo::default(),
        origin_sig: None,
        trace: None,
    })
    .collect();
    let seqs: Vec<EventSeq> = store
        .insert_events(&events)
        .await
        .expect("insert")
        .into_iter()
        .filter_map(|o| match o {
            kite_store::events::InsertOutcome::Inserted { seq, .. } => Some(seq),
            kite_store::events::InsertOutcome::Duplicate => None,
        })
        .collect();

    let bus = Arc::new(Bus::in_memory());
    let stop = tokio_util::sync::CancellationToken::new();
    let (_gen_tx, generation) = tokio::sync::watch::channel(0u64);
    let cfg = kite_route::RouterConfig::new("a");
    let router = tokio::spawn(kite_route::run(
        store.clone(),
        bus.clone(),
        generation,
        cfg,
        stop.clone(),
    ));
    bus.send(&[Message::Route { seqs: seqs.clone() }])
        .await
        .expect("send");
    let memory = bus.memory().expect("in memory");
    let mut got = Vec::new();
    let stripe_rows = eventually(
        "a delivery for the stripe peer",
        Duration::from_secs(20),
        || {
            let taken = memory.take(Queue::Peer(stripe.id));
            got.extend(taken);
            let found = got.clone();
            async move { (!found.is_empty()).then_some(found) }
        },
    )
    .await;
    stop.cancel();
    let _ = router.await;
    // One row, for the large stripe charge only; nothing for the peer whose scopes do not
    // match.
    assert!(
        matches!(&stripe_rows[..], [Message::Deliver { peer, ids }] if *peer == stripe.id && ids.len() == 1)
    );
    assert!(memory.take(Queue::Peer(github.id)).is_empty());
    let routed = store
        .unrouted_events(&seqs, &[], &[])
        .await
        .expect("unrouted");
    assert!(routed.is_empty(), "every event is routed");
    db.drop_database().await;
}
