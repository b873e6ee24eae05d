//! The bus in memory: the same contract as RabbitMQ, for tests of router and delivery
//! logic without a broker. Queues are FIFO; a requeued message goes to the back; a retry
//! arrives on its peer's queue after its delay.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{ConsumeOptions, Flow, Job, Message, Queue, Settle, MAX_BATCH};

/// Queues held in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryBus {
    queues: Arc<Mutex<HashMap<Queue, VecDeque<Message>>>>,
    wake: Arc<Notify>,
}

impl MemoryBus {
    fn push(&self, queue: Queue, m: Message) {
        if let Ok(mut q) = self.queues.lock() {
            q.entry(queue).or_default().push_back(m);
        }
        self.wake.notify_waiters();
    }

    fn pop(&self, queue: Queue) -> Option<Message> {
        self.queues.lock().ok()?.get_mut(&queue)?.pop_front()
    }

    pub(crate) fn send(&self, msgs: &[Message]) {
        for m in msgs {
            match m {
                Message::Route { seqs } => {
                    for c in seqs.chunks(MAX_BATCH) {
                        self.push(Queue::Router, Message::Route { seqs: c.to_vec() });
                    }
                }
                Message::Deliver { peer, ids } => {
                    for c in ids.chunks(MAX_BATCH) {
                        let m = Message::Deliver {
                            peer: *peer,
                            ids: c.to_vec(),
                        };
                        self.push(Queue::Peer(*peer), m);
                    }
                }
                Message::Retry {
                    peer, id, delay, ..
                } => {
                    let (bus, peer, id, delay) = (self.clone(), *peer, *id, *delay);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        bus.push(
                            Queue::Peer(peer),
                            Message::Deliver {
                                peer,
                                ids: vec![id],
                            },
                        );
                    });
                }
            }
        }
    }

    /// Takes every message waiting on `queue` (tests look at what a stage sent).
    pub fn take(&self, queue: Queue) -> Vec<Message> {
        self.queues
            .lock()
            .ok()
            .and_then(|mut q| q.remove(&queue))
            .map(Vec::from)
            .unwrap_or_default()
    }

    pub(crate) fn remove(&self, queue: Queue) {
        if let Ok(mut q) = self.queues.lock() {
            q.remove(&queue);
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut q) = self.queues.lock() {
            q.clear();
        }
    }

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
        let mut in_flight = FuturesUnordered::new();
        let mut stopping = false;
        loop {
            if stop.is_cancelled() {
                stopping = true;
            }
            while !stopping && in_flight.len() < opts.concurrency.max(1) {
                let Some(message) = self.pop(queue) else {
                    break;
                };
                let job = Job {
                    message: message.clone(),
                };
                let fut = handler(job);
                in_flight.push(async move { (message, fut.await) });
            }
            if stopping && in_flight.is_empty() {
                return;
            }
            let wake = self.wake.notified();
            tokio::select! {
                Some((message, (settle, flow))) = in_flight.next(), if !in_flight.is_empty() => {
                    if settle == Settle::Requeue {
                        self.push(queue, message);
                    }
                    if flow == Flow::Stop {
                        stopping = true;
                    }
                }
                _ = wake => {}
                _ = stop.cancelled(), if !stopping => stopping = true,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;
    use kite_wire::ids::{EventSeq, OutboxId, PeerId};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use uuid::Uuid;

    #[tokio::test]
    async fn the_contract_in_memory() {
        let bus = Bus::in_memory();
        let peer = PeerId(Uuid::now_v7());
        let seqs: Vec<EventSeq> = (0..1200).map(EventSeq).collect();
        bus.send(&[Message::Route { seqs }]).await.expect("send");
        // Batches are split at MAX_BATCH and come out in order.
        let stop = CancellationToken::new();
        let seen = Mutex::new(Vec::new());
        let opts = ConsumeOptions::new("t", 8, 2);
        let consume = bus.consume(Queue::Router, &opts, stop.clone(), |job| {
            let seen = &seen;
            async move {
                if let Message::Route { seqs } = job.message {
                    seen.lock().expect("lock").push(seqs.len());
                }
                (Settle::Ack, Flow::Continue)
            }
        });
        let stopper = async {
            while seen.lock().expect("lock").len() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
        };
        tokio::join!(consume, stopper);
        let mut sizes = seen.into_inner().expect("lock");
        sizes.sort_unstable();
        assert_eq!(sizes, vec![200, 500, 500]);

        // A requeued message comes back; Flow::Stop ends the consumer.
        bus.send(&[Message::Deliver {
            peer,
            ids: vec![OutboxId(7)],
        }])
        .await
        .expect("send");
        let calls = AtomicUsize::new(0);
        bus.consume(Queue::Peer(peer), &opts, CancellationToken::new(), |job| {
            let calls = &calls;
            async move {
                assert_eq!(
                    job.message,
                    Message::Deliver {
                        peer,
                        ids: vec![OutboxId(7)]
                    }
                );
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    (Settle::Requeue, Flow::Continue)
                } else {
                    (Settle::Ack, Flow::Stop)
                }
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A retry arrives on its peer's queue after its delay.
        bus.send(&[Message::Retry {
            peer,
            id: OutboxId(9),
            attempt: 1,
            delay: Duration::from_millis(50),
        }])
        .await
        .expect("send");
        let memory = bus.memory().expect("memory");
        assert!(memory.take(Queue::Peer(peer)).is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            memory.take(Queue::Peer(peer)),
            vec![Message::Deliver {
                peer,
                ids: vec![OutboxId(9)]
            }]
        );
    }
}
