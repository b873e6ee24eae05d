//! kite-bus: the AMQP side of kite. Topology under a name prefix, confirmed publishing,
//! and consumers, over one connection that is re-established after a failure.
//!
//! Topology (all durable; queues are quorum queues):
//! - `{prefix}.events`: batches of event sequence numbers for the router;
//! - exchange `{prefix}.deliver` (direct) and one queue `{prefix}.deliver.{peer_id}` a peer,
//!   bound with the peer id: batches of outbox ids for delivery;
//! - per retry tier n, fanout exchange and queue `{prefix}.retry.{n}`, which dead-letters
//!   expired messages back to `{prefix}.deliver` with their routing key (the peer id).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// A bus failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or refused the operation.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker did not confirm a publish (nack, unroutable, or timeout).
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Unavailable(e.to_string())
    }
}

/// Result alias for bus calls.
pub type Result<T> = std::result::Result<T, BusError>;

/// The body of every kite message: a batch of ids (event seqs or outbox ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The ids.
    pub ids: Vec<i64>,
}

impl Batch {
    /// JSON bytes of the batch.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a message body; None for a malformed one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Exchange ("" for the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Body.
    pub payload: Vec<u8>,
    /// Per-message TTL in milliseconds (retry tiers).
    pub expiration_ms: Option<u64>,
}

/// Names of kite's AMQP objects under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    /// The router's input queue.
    pub fn events_queue(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// The exchange routing deliveries to peer queues.
    pub fn deliver_exchange(&self) -> String {
        format!("{}.deliver", self.prefix)
    }
    /// A peer's delivery queue.
    pub fn peer_queue(&self, peer_id: &str) -> String {
        format!("{}.deliver.{peer_id}", self.prefix)
    }
    /// Retry tier `n` (exchange and queue share the name).
    pub fn retry_tier(&self, n: u32) -> String {
        format!("{}.retry.{n}", self.prefix)
    }
}

struct Live {
    conn: Connection,
    publish: Channel,
}

/// A connection to the broker for one kite process.
pub struct Bus {
    url: String,
    names: Names,
    live: Mutex<Option<Live>>,
    publish_timeout: Duration,
    tiers: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("names", &self.names).finish()
    }
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

impl Bus {
    /// Connects, retrying with backoff for up to about `patience`.
    pub async fn connect(url: &str, prefix: &str, patience: Duration) -> Result<Self> {
        let bus = Self {
            url: url.to_string(),
            names: Names::new(prefix),
            live: Mutex::new(None),
            publish_timeout: Duration::from_secs(10),
            tiers: std::sync::atomic::AtomicU32::new(0),
        };
        let deadline = tokio::time::Instant::now() + patience;
        let attempt = || async {
            let mut guard = bus.live.lock().await;
            bus.ensure(&mut guard).await.map(|_| ())
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .without_max_times(),
            )
            .when(|_| tokio::time::Instant::now() < deadline)
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "broker not reachable yet"))
            .await?;
        Ok(bus)
    }

    /// The names of this instance's objects.
    pub fn names(&self) -> &Names {
        &self.names
    }

    async fn ensure<'a>(&self, guard: &'a mut Option<Live>) -> Result<&'a Live> {
        let healthy = guard
            .as_ref()
            .is_some_and(|l| l.conn.status().connected() && l.publish.status().connected());
        if !healthy {
            *guard = None;
            // Named after the prefix, so an operator (or a fault test) can find kite's connections.
            let props = ConnectionProperties::default()
                .with_connection_name(self.names.prefix.clone().into());
            let conn = Connection::connect(&self.url, props).await?;
            let publish = conn.create_channel().await?;
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            tracing::info!("connected to broker");
            *guard = Some(Live { conn, publish });
        }
        guard
            .as_ref()
            .ok_or_else(|| BusError::Unavailable("no connection".into()))
    }

    async fn channel(&self) -> Result<Channel> {
        let mut guard = self.live.lock().await;
        let live = self.ensure(&mut guard).await?;
        match live.conn.create_channel().await {
            Ok(c) => Ok(c),
            Err(e) => {
                *guard = None;
                Err(e.into())
            }
        }
    }

    /// True when the connection is up (reconnecting if it was down).
    pub async fn healthy(&self) -> bool {
        let mut guard = self.live.lock().await;
        self.ensure(&mut guard).await.is_ok()
    }

    /// Declares the router queue, the delivery exchange and `tiers` retry tiers.
    pub async fn declare_base(&self, tiers: u32) -> Result<()> {
        self.tiers
            .store(tiers, std::sync::atomic::Ordering::Relaxed);
        self.redeclare().await
    }

    /// Declares the base topology again (after a reconnect: the broker may have lost it).
    pub async fn redeclare(&self) -> Result<()> {
        let tiers = self.tiers.load(std::sync::atomic::Ordering::Relaxed);
        let ch = self.channel().await?;
        ch.queue_declare(
            self.names.events_queue().into(),
            durable_queue(),
            quorum_args(),
        )
        .await?;
        ch.exchange_declare(
            self.names.deliver_exchange().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
        for n in 1..=tiers {
            let name = self.names.retry_tier(n);
            ch.exchange_declare(
                name.clone().into(),
                ExchangeKind::Fanout,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
            let mut args = quorum_args();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.names.deliver_exchange().into()),
            );
            ch.queue_declare(name.clone().into(), durable_queue(), args)
                .await?;
            ch.queue_bind(
                name.clone().into(),
                name.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Declares a peer's delivery queue and binds it.
    pub async fn declare_peer(&self, peer_id: &str) -> Result<()> {
        let ch = self.channel().await?;
        let q = self.names.peer_queue(peer_id);
        ch.queue_declare(q.clone().into(), durable_queue(), quorum_args())
            .await?;
        ch.queue_bind(
            q.into(),
            self.names.deliver_exchange().into(),
            peer_id.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Deletes a queue (a removed peer's).
    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        let ch = self.channel().await?;
        ch.queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Publishes persistent messages and waits for all their confirms together. Unroutable
    /// messages count as failures.
    pub async fn publish(&self, msgs: &[Outgoing]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let res = tokio::time::timeout(self.publish_timeout, self.publish_inner(msgs)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(BusError::NotConfirmed("timed out".into())),
        };
        if res.is_err() {
            // Start afresh on the next call: the channel may be in an unknown state.
            *self.live.lock().await = None;
        }
        res
    }

    async fn publish_inner(&self, msgs: &[Outgoing]) -> Result<()> {
        let mut guard = self.live.lock().await;
        let live = self.ensure(&mut guard).await?;
        let mut confirms = Vec::with_capacity(msgs.len());
        for m in msgs {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(ms) = m.expiration_ms {
                props = props.with_expiration(ms.to_string().into());
            }
            let c = live
                .publish
                .basic_publish(
                    ShortString::from(m.exchange.as_str()),
                    ShortString::from(m.routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &m.payload,
                    props,
                )
                .await?;
            confirms.push(c);
        }
        drop(guard);
        for c in join_all(confirms).await {
            let c = c?;
            if !c.is_ack() {
                return Err(BusError::NotConfirmed("nacked".into()));
            }
            if let Some(returned) = c.take_message() {
                return Err(BusError::NotConfirmed(format!(
                    "unroutable: {}",
                    returned.reply_text
                )));
            }
        }
        Ok(())
    }

    /// Starts consuming `queue` on a channel of its own with the given prefetch. Closing the
    /// returned channel hands unacknowledged messages back to the queue.
    pub async fn consume(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<(Channel, Consumer)> {
        let ch = self.channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// Deletes every object of this prefix that kite declares (tests and `kite` teardown).
    pub async fn teardown(&self, peer_ids: &[String], tiers: u32) -> Result<()> {
        let ch = self.channel().await?;
        let mut queues = vec![self.names.events_queue()];
        queues.extend(peer_ids.iter().map(|p| self.names.peer_queue(p)));
        queues.extend((1..=tiers).map(|n| self.names.retry_tier(n)));
        for q in queues {
            ch.queue_delete(q.into(), QueueDeleteOptions::default())
                .await?;
        }
        let mut exchanges = vec![self.names.deliver_exchange()];
        exchanges.extend((1..=tiers).map(|n| self.names.retry_tier(n)));
        for x in exchanges {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(live) = self.live.lock().await.take() {
            let _ = live.conn.close(200, "bye".into()).await;
        }
    }
}

pub use lapin::message::Delivery;

/// Hands a message back to its queue (nack with requeue), for work that failed and must be
/// tried again. The broker being gone needs no answer: the message comes back anyway.
pub async fn requeue(d: &Delivery) {
    let _ = d
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await;
}
pub use lapin::options::{BasicAckOptions, BasicNackOptions};
pub use lapin::Channel as AmqpChannel;
pub use lapin::Consumer as AmqpConsumer;
