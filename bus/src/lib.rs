//! kite-bus: the pipeline's contract. The work that moves between stages is a typed
//! [`Message`]; a stage sends messages with [`Bus::send`] and takes them with
//! [`Bus::consume`], whose loop owns prefetch, reconnects, backoff and ack/requeue and hands
//! each message to the stage's handler as a [`Job`]. Two implementations keep the same
//! contract: RabbitMQ ([`Bus::connect`]) and memory ([`Bus::in_memory`], for tests of router
//! and delivery logic without a broker). lapin appears in this crate only.
//! Within one process, a [`LocalLane`] ([`local`]) carries the delivery stage's own rows from
//! the ingest writer straight to that process' delivery workers, with no broker message.
//! The bus knows no stage's types but the spine's ids ([`kite_wire::ids`]).
//!
//! RabbitMQ topology under a name prefix (all durable; queues are quorum queues):
//! - `{prefix}.events`: batches of event sequence numbers for the router ([`Message::Route`]);
//! - exchange `{prefix}.deliver` (direct) and one queue `{prefix}.deliver.{peer_id}` a peer,
//!   bound with the peer id: batches of outbox ids ([`Message::Deliver`]);
//! - per retry tier n, fanout exchange and queue `{prefix}.retry.{n}`, which dead-letters
//!   expired messages back to `{prefix}.deliver` with their routing key, the peer id
//!   ([`Message::Retry`]).

mod amqp;
pub mod local;
mod memory;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kite_wire::ids::{Delivery, EventSeq, OutboxId, PeerId};
use tokio_util::sync::CancellationToken;

pub use local::LocalLane;
pub use memory::MemoryBus;

/// Most ids one message carries; longer batches are split when sent.
pub const MAX_BATCH: usize = 500;

/// A bus failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or refused the operation.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker did not confirm a publish (nack, unroutable, or timeout).
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// The broker did not answer a call in time (a node stopped, a link partitioned); the
    /// connection is given up.
    #[error("no answer from the broker: {0}")]
    NoAnswer(String),
}

/// Result alias for bus calls.
pub type Result<T> = std::result::Result<T, BusError>;

/// The work that moves between stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Route these stored events (ingress → router).
    Route {
        /// The stored events.
        seqs: Vec<EventSeq>,
    },
    /// Deliver these outbox rows to this peer (router → delivery).
    Deliver {
        /// The peer.
        peer: PeerId,
        /// The rows.
        ids: Vec<OutboxId>,
    },
    /// Deliver this row again after `delay` (delivery → itself); it comes back as
    /// [`Message::Deliver`].
    Retry {
        /// The peer.
        peer: PeerId,
        /// The row.
        id: OutboxId,
        /// Failed attempts so far (its retry tier).
        attempt: u32,
        /// How long to wait.
        delay: Duration,
    },
}

/// A queue a stage consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// The router's input: [`Message::Route`].
    Router,
    /// One peer's deliveries: [`Message::Deliver`].
    Peer(PeerId),
}

/// A message taken from a queue, handed to a stage's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What to do.
    pub message: Message,
}

/// How a handled message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with it: it is removed.
    Ack,
    /// Not done: it goes back to its queue for later.
    Requeue,
}

/// Whether the consumer goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Take the next message.
    Continue,
    /// Stop consuming (messages not yet settled go back to the queue).
    Stop,
}

/// How a stage consumes.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Consumer tag (shows in the broker's management views).
    pub tag: String,
    /// Messages the broker hands over before they are settled.
    pub prefetch: u16,
    /// Messages handled at once.
    pub concurrency: usize,
    /// First and longest wait before consuming again after the broker went away.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
}

impl ConsumeOptions {
    /// Options with `prefetch` and `concurrency`, reconnecting after 200 ms doubling to 10 s.
    pub fn new(tag: &str, prefetch: u16, concurrency: usize) -> Self {
        Self {
            tag: tag.to_string(),
            prefetch,
            concurrency,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

enum Inner {
    Amqp(Box<amqp::AmqpBus>),
    Memory(MemoryBus),
}

/// The bus of one kite process.
pub struct Bus {
    inner: Inner,
    /// Peer queues this process declared (a queue outlives the process; it is declared
    /// once, before the first delivery sent to it).
    declared: Mutex<HashSet<PeerId>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Amqp(a) => a.fmt(f),
            Inner::Memory(_) => f.write_str("Bus(memory)"),
        }
    }
}

/// How long a publish waits for the broker's confirmation unless told otherwise.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

impl Bus {
    /// The same bus with publishes waiting at most `timeout` for the broker's confirmation
    /// (RabbitMQ; the memory bus confirms at once).
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        if let Inner::Amqp(a) = &mut self.inner {
            a.publish_timeout = timeout;
        }
        self
    }

    /// Connects to RabbitMQ at `url`, naming everything under `prefix`, retrying with
    /// backoff for up to about `patience`.
    pub async fn connect(url: &str, prefix: &str, patience: Duration) -> Result<Self> {
        Ok(Self {
            inner: Inner::Amqp(Box::new(
                amqp::AmqpBus::connect(url, prefix, patience).await?,
            )),
            declared: Mutex::default(),
        })
    }

    /// A bus in this process' memory with the same contract (tests).
    pub fn in_memory() -> Self {
        Self {
            inner: Inner::Memory(MemoryBus::default()),
            declared: Mutex::default(),
        }
    }

    /// The in-memory bus, to look into its queues (tests); None for RabbitMQ.
    pub fn memory(&self) -> Option<&MemoryBus> {
        match &self.inner {
            Inner::Memory(m) => Some(m),
            Inner::Amqp(_) => None,
        }
    }

    /// True when the broker can be reached (reconnecting if it was not).
    pub async fn healthy(&self) -> bool {
        match &self.inner {
            Inner::Amqp(a) => a.healthy().await,
            Inner::Memory(_) => true,
        }
    }

    /// Declares the router queue, the delivery exchange and `tiers` retry tiers.
    pub async fn declare_base(&self, tiers: u32) -> Result<()> {
        match &self.inner {
            Inner::Amqp(a) => a.declare_base(tiers).await,
            Inner::Memory(_) => Ok(()),
        }
    }

    /// Declares a peer's delivery queue.
    pub async fn declare_peer(&self, peer: PeerId) -> Result<()> {
        match &self.inner {
            Inner::Amqp(a) => a.declare_peer(&peer.to_string()).await?,
            Inner::Memory(_) => {}
        }
        if let Ok(mut d) = self.declared.lock() {
            d.insert(peer);
        }
        Ok(())
    }

    /// Sends deliveries to their peers' queues: one [`Message::Deliver`] a peer, its queue
    /// declared first unless this process did so already. Every stage that publishes
    /// deliveries goes through here.
    pub async fn send_deliveries(&self, rows: impl IntoIterator<Item = Delivery>) -> Result<()> {
        let mut by_peer: HashMap<PeerId, Vec<OutboxId>> = HashMap::new();
        for Delivery { id, peer } in rows {
            by_peer.entry(peer).or_default().push(id);
        }
        for peer in by_peer.keys() {
            let known = self.declared.lock().is_ok_and(|d| d.contains(peer));
            if !known {
                self.declare_peer(*peer).await?;
            }
        }
        let msgs: Vec<Message> = by_peer
            .into_iter()
            .map(|(peer, ids)| Message::Deliver { peer, ids })
            .collect();
        self.send(&msgs).await
    }

    /// Deletes a removed peer's delivery queue.
    pub async fn delete_peer_queue(&self, peer: PeerId) -> Result<()> {
        if let Ok(mut d) = self.declared.lock() {
            d.remove(&peer);
        }
        match &self.inner {
            Inner::Amqp(a) => {
                a.delete_queue(&a.names().peer_queue(&peer.to_string()))
                    .await
            }
            Inner::Memory(m) => {
                m.remove(Queue::Peer(peer));
                Ok(())
            }
        }
    }

    /// Sends messages durably: answers once every one is confirmed.
    pub async fn send(&self, msgs: &[Message]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        match &self.inner {
            Inner::Amqp(a) => a.send(msgs).await,
            Inner::Memory(m) => {
                m.send(msgs);
                Ok(())
            }
        }
    }

    /// Consumes `queue` until `stop` is cancelled or `handler` answers [`Flow::Stop`]: each
    /// message is handed over as a [`Job`] and settled as the handler answers. The loop
    /// owns prefetch, concurrency, reconnects with backoff, and dropping malformed messages.
    pub async fn consume<F, Fut>(
        &self,
        queue: Queue,
        opts: &ConsumeOptions,
        stop: CancellationToken,
        handler: F,
    ) where
        F: Fn(Job) -> Fut + Sync,
        Fut: std::future::Future<Output = (Settle, Flow)> + Send,
    {
        match &self.inner {
            Inner::Amqp(a) => a.consume(queue, opts, stop, handler).await,
            Inner::Memory(m) => m.consume(queue, opts, stop, handler).await,
        }
    }

    /// Deletes every object of this prefix that kite declares (tests and teardown).
    pub async fn teardown(&self, peer_ids: &[String], tiers: u32) -> Result<()> {
        match &self.inner {
            Inner::Amqp(a) => a.teardown(peer_ids, tiers).await,
            Inner::Memory(m) => {
                m.clear();
                Ok(())
            }
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Inner::Amqp(a) = &self.inner {
            a.close().await;
        }
    }
}
