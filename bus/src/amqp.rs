//! The broker behind the contract: RabbitMQ over one connection that is re-established
//! after a failure, confirmed publishing, and the consumer loop.
//!
//! Topology (all durable; queues are quorum queues):
//! - `{prefix}.events`: batches of event sequence numbers for the router;
//! - exchange `{prefix}.deliver` (direct) and one queue `{prefix}.deliver.{peer_id}` a peer,
//!   bound with the peer id: batches of outbox ids for delivery;
//! - per retry tier n, fanout exchange and queue `{prefix}.retry.{n}`, which dead-letters
//!   expired messages back to `{prefix}.deliver` with their routing key (the peer id).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures::future::join_all;
use futures::StreamExt;
use kite_wire::ids::{EventSeq, OutboxId};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{BusError, ConsumeOptions, Flow, Job, Message, Queue, Result, Settle, MAX_BATCH};

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Unavailable(e.to_string())
    }
}

/// The body of every kite message: a batch of ids (event seqs or outbox ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch {
    /// The ids.
    pub ids: Vec<i64>,
}

impl Batch {
    /// JSON bytes of the batch.
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a message body; None for a malformed one.
    fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
struct Outgoing {
    /// Exchange ("" for the default exchange).
    exchange: String,
    /// Routing key.
    routing_key: String,
    /// Body.
    payload: Vec<u8>,
    /// Per-message TTL in milliseconds (retry tiers).
    expiration_ms: Option<u64>,
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
    /// Which connection this is (from 1): a caller that saw a connection fail drops it
    /// only if it is still the live one, not a newer one another caller made meanwhile.
    gen: u64,
}

/// A connection to the broker for one kite process.
pub(crate) struct AmqpBus {
    /// The nodes of the broker (a cluster's, or one), tried in turn.
    urls: Vec<String>,
    /// The node tried first at the next connection: the one after the node last lost.
    next: std::sync::atomic::AtomicUsize,
    names: Names,
    live: Mutex<Option<Live>>,
    /// Connections made so far (each [`Live`]'s `gen`).
    made: std::sync::atomic::AtomicU64,
    pub(crate) publish_timeout: Duration,
    tiers: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("names", &self.names).finish()
    }
}

/// The nodes a broker URL names: one URL, or several separated by commas or spaces (the
/// nodes of a cluster, `amqp://u:p@node1:5672/%2f,amqp://u:p@node2:5672/%2f`).
pub(crate) fn node_urls(url: &str) -> Vec<String> {
    url.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// The largest AMQP frame kite asks for unless the URL names one (`?frame_max=`). lapin
/// keeps a send and a receive buffer of 32 frames for a connection, zero-filled at once:
/// at the broker's usual 128 KiB that is 8 MiB resident, for messages of at most
/// [`MAX_BATCH`] ids (a few KB; a longer one is split into frames).
const FRAME_MAX: u32 = 8192;

/// A node's URL, parsed, with [`FRAME_MAX`] unless it names a frame size of its own.
fn with_frame_max(url: &str) -> Result<lapin::uri::AMQPUri> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        // Not the parser's message: it may quote the URL, password and all.
        .map_err(|_| BusError::Unavailable("a broker URL is not a valid AMQP URL".into()))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// Longest wait for the broker to answer one operation (connecting to a node, opening a
/// channel, declaring, starting a consumer, settling a message, closing): lapin itself waits
/// without bound, and a node that stopped (SIGSTOP), a link that partitioned or a
/// connection lapin lost track of must not hold a consumer, or the whole process' bus,
/// forever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, or an `Unavailable` error naming `what` once [`ANSWER_TIMEOUT`] has passed.
async fn answered<T, E: Into<BusError>>(
    what: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(ANSWER_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => {
            tracing::warn!(what, "no answer from the broker in time");
            Err(BusError::NoAnswer(format!(
                "{what}: none in {ANSWER_TIMEOUT:?}"
            )))
        }
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

impl AmqpBus {
    /// Connects, retrying with backoff for up to about `patience`.
    pub(crate) async fn connect(url: &str, prefix: &str, patience: Duration) -> Result<Self> {
        let urls = node_urls(url);
        if urls.is_empty() {
            return Err(BusError::Unavailable("no broker URL".into()));
        }
        let bus = Self {
            urls,
            next: std::sync::atomic::AtomicUsize::new(0),
            names: Names::new(prefix),
            live: Mutex::new(None),
            made: std::sync::atomic::AtomicU64::new(0),
            publish_timeout: crate::PUBLISH_TIMEOUT,
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
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    async fn ensure<'a>(&self, guard: &'a mut Option<Live>) -> Result<&'a Live> {
        let healthy = guard
            .as_ref()
            .is_some_and(|l| l.conn.status().connected() && l.publish.status().connected());
        if !healthy {
            *guard = None;
            let conn = self.connect_any().await?;
            let publish = answered("open a channel", conn.create_channel()).await?;
            answered(
                "select confirms",
                publish.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            tracing::info!("connected to broker");
            let gen = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            *guard = Some(Live { conn, publish, gen });
        }
        guard
            .as_ref()
            .ok_or_else(|| BusError::Unavailable("no connection".into()))
    }

    /// Connects to the first node that answers, starting after the node last used (a node
    /// that went away is tried last); answers the last node's error when none does.
    async fn connect_any(&self) -> Result<Connection> {
        use std::sync::atomic::Ordering;
        let n = self.urls.len();
        let start = self.next.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            // Named after the prefix, so an operator (or a fault test) can find kite's
            // connections.
            let props = ConnectionProperties::default()
                .with_connection_name(self.names.prefix.clone().into());
            let connected = match with_frame_max(&self.urls[at]) {
                Ok(uri) => answered("connect", Connection::connect_uri(uri, props)).await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(conn) => {
                    // The next connection (after this one is lost) starts at the next node.
                    self.next.store(at + 1, Ordering::Relaxed);
                    if n > 1 {
                        tracing::info!(node = at + 1, of = n, "connected to a broker node");
                    }
                    return Ok(conn);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(node = at + 1, of = n, error = %e, "broker node not reachable");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| BusError::Unavailable("no broker URL".into())))
    }

    /// A new channel on the live connection, and which connection that is.
    async fn channel(&self) -> Result<(Channel, u64)> {
        let mut guard = self.live.lock().await;
        let live = self.ensure(&mut guard).await?;
        let gen = live.gen;
        match answered("open a channel", live.conn.create_channel()).await {
            Ok(c) => Ok((c, gen)),
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    /// Drops connection `gen` if it is still the live one: the next call connects afresh
    /// (to the next node).
    async fn forget(&self, gen: u64) {
        let mut guard = self.live.lock().await;
        if guard.as_ref().is_some_and(|l| l.gen == gen) {
            *guard = None;
        }
    }

    /// Runs `op` on a channel of its own (each of its calls bounded by [`answered`]) and
    /// closes the channel; when the broker did not answer in time, the connection is
    /// dropped.
    async fn on_channel<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (ch, gen) = self.channel().await?;
        let r = op(ch.clone()).await;
        let _ = answered("close a channel", ch.close(200, "OK".into())).await;
        if matches!(r, Err(BusError::NoAnswer(_))) {
            self.forget(gen).await;
        }
        r
    }

    /// True when the connection is up (reconnecting if it was down).
    pub(crate) async fn healthy(&self) -> bool {
        let mut guard = self.live.lock().await;
        self.ensure(&mut guard).await.is_ok()
    }

    /// Declares the router queue, the delivery exchange and `tiers` retry tiers.
    pub(crate) async fn declare_base(&self, tiers: u32) -> Result<()> {
        self.tiers
            .store(tiers, std::sync::atomic::Ordering::Relaxed);
        self.redeclare().await
    }

    /// Declares the base topology again (after a reconnect: the broker may have lost it).
    pub(crate) async fn redeclare(&self) -> Result<()> {
        let tiers = self.tiers.load(std::sync::atomic::Ordering::Relaxed);
        self.on_channel(|ch| self.declare_on(ch, tiers)).await
    }

    async fn declare_on(&self, ch: Channel, tiers: u32) -> Result<()> {
        answered(
            "queue declare",
            ch.queue_declare(
                self.names.events_queue().into(),
                durable_queue(),
                quorum_args(),
            ),
        )
        .await?;
        answered(
            "exchange declare",
            ch.exchange_declare(
                self.names.deliver_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            ),
        )
        .await?;
        for n in 1..=tiers {
            let name = self.names.retry_tier(n);
            answered(
                "exchange declare",
                ch.exchange_declare(
                    name.clone().into(),
                    ExchangeKind::Fanout,
                    durable_exchange(),
                    FieldTable::default(),
                ),
            )
            .await?;
            let mut args = quorum_args();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.names.deliver_exchange().into()),
            );
            answered(
                "queue declare",
                ch.queue_declare(name.clone().into(), durable_queue(), args),
            )
            .await?;
            answered(
                "queue bind",
                ch.queue_bind(
                    name.clone().into(),
                    name.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Declares a peer's delivery queue and binds it.
    pub(crate) async fn declare_peer(&self, peer_id: &str) -> Result<()> {
        let q = self.names.peer_queue(peer_id);
        self.on_channel(|ch| async move {
            answered(
                "queue declare",
                ch.queue_declare(q.clone().into(), durable_queue(), quorum_args()),
            )
            .await?;
            answered(
                "queue bind",
                ch.queue_bind(
                    q.into(),
                    self.names.deliver_exchange().into(),
                    peer_id.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Deletes a queue (a removed peer's).
    pub(crate) async fn delete_queue(&self, name: &str) -> Result<()> {
        self.on_channel(|ch| async move {
            answered(
                "queue delete",
                ch.queue_delete(name.into(), QueueDeleteOptions::default()),
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Publishes persistent messages and waits for all their confirms together. Unroutable
    /// messages count as failures.
    async fn publish(&self, msgs: &[Outgoing]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let used = std::sync::atomic::AtomicU64::new(0);
        let res = tokio::time::timeout(self.publish_timeout, self.publish_inner(msgs, &used)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(BusError::NotConfirmed("timed out".into())),
        };
        if res.is_err() {
            // Start afresh on the next call: the channel may be in an unknown state.
            self.forget(used.load(std::sync::atomic::Ordering::Relaxed))
                .await;
        }
        res
    }

    /// Publishes on the live connection, telling `used` which one.
    async fn publish_inner(
        &self,
        msgs: &[Outgoing],
        used: &std::sync::atomic::AtomicU64,
    ) -> Result<()> {
        let mut guard = self.live.lock().await;
        let live = self.ensure(&mut guard).await?;
        used.store(live.gen, std::sync::atomic::Ordering::Relaxed);
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
    async fn consume_raw(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<(Channel, Consumer)> {
        let (ch, gen) = self.channel().await?;
        let started = async {
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            ch.basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        };
        match answered("start a consumer", started).await {
            Ok(consumer) => Ok((ch, consumer)),
            Err(e) => {
                let _ = answered("close a channel", ch.close(200, "OK".into())).await;
                if matches!(e, BusError::NoAnswer(_)) {
                    self.forget(gen).await;
                }
                Err(e)
            }
        }
    }

    /// Deletes every object of this prefix that kite declares (tests and `kite` teardown).
    pub(crate) async fn teardown(&self, peer_ids: &[String], tiers: u32) -> Result<()> {
        self.on_channel(|ch| async move { self.teardown_on(ch, peer_ids, tiers).await })
            .await
    }

    async fn teardown_on(&self, ch: Channel, peer_ids: &[String], tiers: u32) -> Result<()> {
        let mut queues = vec![self.names.events_queue()];
        queues.extend(peer_ids.iter().map(|p| self.names.peer_queue(p)));
        queues.extend((1..=tiers).map(|n| self.names.retry_tier(n)));
        for q in queues {
            answered(
                "queue delete",
                ch.queue_delete(q.into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        let mut exchanges = vec![self.names.deliver_exchange()];
        exchanges.extend((1..=tiers).map(|n| self.names.retry_tier(n)));
        for x in exchanges {
            answered(
                "exchange delete",
                ch.exchange_delete(x.into(), ExchangeDeleteOptions::default()),
            )
            .await?;
        }
        Ok(())
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        if let Some(live) = self.live.lock().await.take() {
            let _ = answered("close", live.conn.close(200, "bye".into())).await;
        }
    }

    /// The AMQP messages that carry `msgs`: batches split at [`MAX_BATCH`] ids.
    fn outgoing(&self, msgs: &[Message]) -> Vec<Outgoing> {
        let tiers = self.tiers.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let mut out = Vec::new();
        for m in msgs {
            match m {
                Message::Route { seqs } => out.extend(seqs.chunks(MAX_BATCH).map(|c| {
                    Outgoing {
                        exchange: String::new(),
                        routing_key: self.names.events_queue(),
                        payload: Batch {
                            ids: c.iter().map(|s| s.0).collect(),
                        }
                        .to_bytes(),
                        expiration_ms: None,
                    }
                })),
                Message::Deliver { peer, ids } => out.extend(ids.chunks(MAX_BATCH).map(|c| {
                    Outgoing {
                        exchange: self.names.deliver_exchange(),
                        routing_key: peer.to_string(),
                        payload: Batch {
                            ids: c.iter().map(|i| i.0).collect(),
                        }
                        .to_bytes(),
                        expiration_ms: None,
                    }
                })),
                Message::Retry {
                    peer,
                    id,
                    attempt,
                    delay,
                } => out.push(Outgoing {
                    exchange: self.names.retry_tier((*attempt).clamp(1, tiers)),
                    routing_key: peer.to_string(),
                    payload: Batch { ids: vec![id.0] }.to_bytes(),
                    expiration_ms: Some((delay.as_millis() as u64).max(1)),
                }),
            }
        }
        out
    }

    /// Publishes `msgs` persistently and waits for every confirm.
    pub(crate) async fn send(&self, msgs: &[Message]) -> Result<()> {
        self.publish(&self.outgoing(msgs)).await
    }

    /// The consumer loop (see [`crate::Bus::consume`]): declares what it reads, consumes with
    /// the prefetch, hands each message to `handler` with at most `concurrency` at once,
    /// settles it as the handler says, and reconnects with backoff until `stop` is cancelled
    /// or the handler answers [`Flow::Stop`]. Unsettled messages go back to the queue.
    pub(crate) async fn consume<F, Fut>(
        &self,
        queue: Queue,
        opts: &ConsumeOptions,
        stop: CancellationToken,
        handler: F,
    ) where
        F: Fn(Job) -> Fut + Sync,
        Fut: std::future::Future<Output = (Settle, Flow)> + Send,
    {
        let name = match queue {
            Queue::Router => self.names.events_queue(),
            Queue::Peer(p) => self.names.peer_queue(&p.to_string()),
        };
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(opts.reconnect_min)
                .with_max_delay(opts.reconnect_max)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        // Cancelled by `stop` or by a handler answering `Flow::Stop`.
        let flow = stop.child_token();
        while !flow.is_cancelled() {
            let started = async {
                self.redeclare().await?;
                if let Queue::Peer(p) = queue {
                    self.declare_peer(&p.to_string()).await?;
                }
                self.consume_raw(&name, &opts.tag, opts.prefetch).await
            };
            match started.await {
                Ok((channel, consumer)) => {
                    delays = backoff();
                    tracing::info!(queue = %name, "consuming");
                    consumer
                        .take_until(flow.clone().cancelled_owned())
                        .for_each_concurrent(opts.concurrency.max(1), |d| {
                            handle_delivery(queue, &name, d, &handler, &flow)
                        })
                        .await;
                    let _ = answered("close a channel", channel.close(200, "bye".into())).await;
                }
                Err(e) => tracing::warn!(queue = %name, error = %e, "cannot consume; retrying"),
            }
            if flow.is_cancelled() {
                break;
            }
            let wait = delays.next().unwrap_or(opts.reconnect_max);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = flow.cancelled() => {}
            }
        }
    }
}

/// Hands one consumed message to `handler` and settles it as the handler says; a
/// malformed message is dropped (acked), and a handler answering [`Flow::Stop`] cancels
/// `flow`.
async fn handle_delivery<F, Fut>(
    queue: Queue,
    name: &str,
    d: std::result::Result<lapin::message::Delivery, lapin::Error>,
    handler: &F,
    flow: &CancellationToken,
) where
    F: Fn(Job) -> Fut + Sync,
    Fut: std::future::Future<Output = (Settle, Flow)> + Send,
{
    let d = match d {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(queue = %name, error = %e, "consumer error");
            return;
        }
    };
    let message = Batch::parse(&d.data).map(|b| match queue {
        Queue::Router => Message::Route {
            seqs: b.ids.into_iter().map(EventSeq).collect(),
        },
        Queue::Peer(peer) => Message::Deliver {
            peer,
            ids: b.ids.into_iter().map(OutboxId).collect(),
        },
    });
    let Some(message) = message else {
        tracing::warn!(queue = %name, "dropping a malformed message");
        let _ = answered("ack", d.ack(BasicAckOptions::default())).await;
        return;
    };
    let (settle, answer) = handler(Job { message }).await;
    match settle {
        // Bounded: lapin may never answer a settle sent on a connection it just lost.
        Settle::Ack => {
            let _ = answered("ack", d.ack(BasicAckOptions::default())).await;
        }
        // The broker being gone needs no answer: the message comes back anyway.
        Settle::Requeue => {
            let nack = d.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            });
            let _ = answered("nack", nack).await;
        }
    }
    if answer == Flow::Stop {
        flow.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_names_each_node() {
        assert_eq!(node_urls("amqp://a:5672/%2f"), ["amqp://a:5672/%2f"]);
        assert_eq!(
            node_urls(" amqp://a:1/%2f, amqp://b:2/%2f ,amqp://c:3/%2f"),
            ["amqp://a:1/%2f", "amqp://b:2/%2f", "amqp://c:3/%2f"]
        );
        assert!(node_urls(" , ").is_empty());
    }

    #[test]
    fn frame_max_is_small_unless_the_url_names_one() {
        let ours = with_frame_max("amqp://u:p@a:5672/%2f").expect("parses");
        assert_eq!(ours.query.frame_max, Some(FRAME_MAX));
        assert_eq!(ours.authority.userinfo.username, "u");
        let theirs = with_frame_max("amqp://a:5672/%2f?frame_max=65536").expect("parses");
        assert_eq!(theirs.query.frame_max, Some(65536));
        assert!(matches!(
            with_frame_max("amqp://a:notaport/%2f"),
            Err(BusError::Unavailable(_))
        ));
    }
}
