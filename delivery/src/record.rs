//! Delivery bookkeeping: a batch of outbox rows to send, the probe of an unreachable peer,
//! and writing what the attempts decided (rows, peer health, retry messages).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use kite_bus::local::Handoff;
use kite_bus::{Job, Message};
use kite_store::outbox::{DeliveryRow, DeliveryUpdate};
use kite_store::peers::PeerOutcome;
use kite_store::story::NewAttempt;
use kite_store::types::{AttemptOutcome, OutboxState, PeerHealth, PeerStatus};
use kite_wire::ids::{Delivery, OutboxId, PeerId};

use crate::attempt::{Attempt, AttemptError};
use crate::held::Held;
use crate::outcome::{settle, Outcome, PeerEffect, RowChange};
use crate::{Ctx, DeliverError, Handled};

/// The bookkeeping of a handoff the peer took whole, left to run after its slot is freed.
pub(crate) type Settling = futures::future::BoxFuture<'static, ()>;

/// What sending a batch's rows came to.
enum Sent {
    /// Nothing was sent: what to do with the message or handoff.
    Done(Handled),
    /// The attempts made, their results not yet written.
    Attempts(Vec<Attempt>),
}

impl Ctx {
    pub(crate) async fn handle(&self, peer_id: PeerId, job: Job) -> Handled {
        let Message::Deliver { ids, .. } = job.message else {
            tracing::warn!(peer = %peer_id, "delivery got a message that is not Deliver; dropped");
            return Handled::Done;
        };
        match self.deliver(peer_id, &ids).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "delivery bookkeeping failed; message requeued");
                tokio::time::sleep(self.cfg.retry_pause).await;
                Handled::Retry
            }
        }
    }

    /// Delivers a message's rows, but none another task of this process holds (`held`):
    /// that one is on its way already, and this message is a repeat the sweeper sent.
    async fn deliver(&self, peer_id: PeerId, ids: &[OutboxId]) -> Result<Handled, DeliverError> {
        let held = self.held.take(ids);
        if held.ids().is_empty() {
            return Ok(Handled::Done);
        }
        let rows = self.store.delivery_rows(held.ids()).await?;
        self.deliver_rows(peer_id, rows, held).await
    }

    /// Delivers rows the local lane handed over (leased to this process). What cannot be
    /// sent now (the peer paused or parked meanwhile, the lease nearly over, bookkeeping
    /// failed) goes through the broker, as if it had come that way.
    ///
    /// When the peer took every row, answers the bookkeeping still to do instead of doing
    /// it: nothing waits on it (no message to settle, the rows leased), so the caller frees
    /// the handoff's slot and runs it beside the next handoffs, and its results may wait
    /// to share a write ([`crate::results::LINGER`]). Failures are written at once, so the
    /// peer's health is up to date before its next handoff is sent.
    pub(crate) async fn handed(self: Arc<Self>, h: Handoff<DeliveryRow>) -> Option<Settling> {
        // No attempt starts that could outlast the lease.
        let margin = self.cfg.request_timeout.min(self.cfg.lease / 2);
        if Instant::now() + margin >= h.until {
            self.to_broker(h).await;
            return None;
        }
        let peer = h.peer;
        // Held until their results are written; a row a message brought here first is
        // that message's to send.
        let ids: Vec<OutboxId> = h.rows.iter().map(|r| r.id).collect();
        let held = self.held.take(&ids);
        let rows: Vec<DeliveryRow> = h.rows.into_iter().filter(|r| held.has(r.id)).collect();
        if rows.is_empty() {
            return None;
        }
        match self.send_rows(peer, rows).await {
            Ok(Sent::Done(Handled::Done | Handled::Parked)) => None,
            Ok(Sent::Done(Handled::PeerNotActive | Handled::Retry)) => {
                self.publish(peer, held.release()).await;
                None
            }
            Ok(Sent::Attempts(attempts))
                if attempts.iter().all(|a| a.outcome == Outcome::Delivered) =>
            {
                Some(Box::pin(self.settle_handed(held, peer, attempts, false)))
            }
            Ok(Sent::Attempts(attempts)) => {
                self.settle_handed(held, peer, attempts, true).await;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery bookkeeping failed; the rows go through the broker");
                self.publish(peer, held.release()).await;
                None
            }
        }
    }

    /// Writes what a handoff's attempts decided, then lets go of its rows; if that
    /// bookkeeping fails, they go through the broker (a peer drops a repeat by the event's
    /// identity).
    async fn settle_handed(
        self: Arc<Self>,
        held: Held,
        peer: PeerId,
        attempts: Vec<Attempt>,
        urgent: bool,
    ) {
        let ids = held.ids().to_vec();
        if let Err(e) = self.record(peer, attempts, false, urgent, held).await {
            tracing::warn!(error = %e, "delivery bookkeeping failed; the rows go through the broker");
            self.publish(peer, ids).await;
        }
    }

    /// Sends a handoff's rows through the broker instead (the consumer path).
    pub(crate) async fn to_broker(&self, h: Handoff<DeliveryRow>) {
        self.publish(h.peer, h.rows.iter().map(|r| r.id).collect())
            .await;
    }

    async fn publish(&self, peer: PeerId, ids: Vec<OutboxId>) {
        let rows = ids.into_iter().map(|id| Delivery { id, peer });
        if let Err(e) = self.bus.send_deliveries(rows).await {
            // The rows stay pending; once their lease is over the sweeper publishes them.
            tracing::warn!(peer = %peer, error = %e, "cannot hand rows to the broker; the sweeper will");
        }
    }

    /// Delivers rows (`held`: taken into hand) and writes what their attempts decided
    /// before it answers (a message or a claim waits on the write).
    pub(crate) async fn deliver_rows(
        &self,
        peer_id: PeerId,
        rows: Vec<DeliveryRow>,
        held: Held,
    ) -> Result<Handled, DeliverError> {
        let attempts = match self.send_rows(peer_id, rows).await? {
            Sent::Done(h) => return Ok(h),
            Sent::Attempts(a) => a,
        };
        Ok(
            match self.record(peer_id, attempts, false, true, held).await? {
                PeerState::Paused | PeerState::Health(PeerHealth::Unreachable) => Handled::Parked,
                PeerState::Health(_) | PeerState::Gone => Handled::Done,
            },
        )
    }

    /// Sends the rows the peer may take now (cancelling those of a deleted or revoked
    /// peer); answers their attempts, or what to do instead when none was sent.
    async fn send_rows(
        &self,
        peer_id: PeerId,
        rows: Vec<DeliveryRow>,
    ) -> Result<Sent, DeliverError> {
        let mut to_send = Vec::new();
        let mut cancel = Vec::new();
        for row in rows {
            if row.state != OutboxState::Pending {
                continue;
            }
            match row.peer.as_ref().map(|p| (p.status, p.health)) {
                Some((s, PeerHealth::Unreachable)) if s.delivers() => {
                    return Ok(Sent::Done(Handled::PeerNotActive))
                }
                Some((PeerStatus::Paused, _)) => return Ok(Sent::Done(Handled::PeerNotActive)),
                Some((s, _)) if s.delivers() => to_send.push(row),
                _ => cancel.push(row.id),
            }
        }
        if !cancel.is_empty() {
            self.store.cancel_rows(&cancel).await?;
        }
        if to_send.is_empty() {
            return Ok(Sent::Done(Handled::Done));
        }
        // Batches go only to a kite that offered them, unthrottled (a batch is one request
        // of many events) and sent structured events.
        let offer = to_send
            .first()
            .and_then(|r| r.peer.as_ref())
            .filter(|p| {
                !crate::gate::claimed(&p.delivery, p.ordered)
                    && p.content_mode == kite_api::types::ContentMode::Structured
            })
            .and_then(|p| self.batch_offer(peer_id, Some(p.hook_url.as_str())));
        let attempts: Vec<Attempt> = match offer {
            // The peer offered batches: what is waiting goes in as few requests as it can.
            Some(max) if to_send.len() > 1 => self.send_batched(to_send, max).await,
            _ => {
                futures::stream::iter(to_send)
                    .map(|row| self.attempt(row))
                    .buffer_unordered(self.cfg.attempts_in_flight.max(1))
                    .collect()
                    .await
            }
        };
        Ok(Sent::Attempts(attempts))
    }

    /// Tries the oldest pending delivery of an unreachable peer; answers whether the probe
    /// is over (the peer took it, or it is paused now). A row the peer refuses for good is
    /// settled as its own failure and the next one is tried.
    pub(crate) async fn probe(&self, peer_id: PeerId) -> Result<bool, DeliverError> {
        let mut after = 0;
        for _ in 0..self.cfg.probe_rows.max(1) {
            let Some(id) = self.store.oldest_pending_after(peer_id, after).await? else {
                self.store.mark_peer_reachable(peer_id).await?;
                return Ok(true);
            };
            after = id;
            // A row another task of this process is sending is left to it.
            let held = self.held.take(&[OutboxId(id)]);
            if held.ids().is_empty() {
                continue;
            }
            let Some(row) = self
                .store
                .delivery_rows(held.ids())
                .await?
                .into_iter()
                .next()
            else {
                continue;
            };
            let a = self.attempt(row).await;
            let outcome = a.outcome;
            let state = self.record(peer_id, vec![a], true, true, held).await?;
            match outcome {
                // That row's own failure: try the next one.
                Outcome::MessageFailure => {}
                Outcome::PeerFailure => return Ok(false),
                Outcome::Revoked => return Ok(true),
                Outcome::Delivered | Outcome::Gone => {
                    if state != PeerState::Paused {
                        self.store.mark_peer_reachable(peer_id).await?;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Probes an unreachable peer whose rows are claimed (`crate::claimed`): the rows it
    /// may take now (for an ordered peer, the first of each key, so one event the peer
    /// keeps refusing does not keep the whole peer parked), at most `probe_rows`, each
    /// tried once; answers whether one got through (the peer is then marked reachable) or
    /// none waits. A row the probe could not deliver waits for its lease to end.
    pub(crate) async fn probe_claimed(
        &self,
        peer_id: PeerId,
        how: crate::claimed::Claiming,
    ) -> Result<bool, DeliverError> {
        let limit = i64::try_from(how.probe_rows(self.cfg.probe_rows)).unwrap_or(1);
        let ids = self
            .store
            .claim_due(peer_id, how.ordered, limit, how.lease)
            .await?;
        if ids.is_empty() {
            if self.store.oldest_pending_after(peer_id, 0).await?.is_none() {
                self.store.mark_peer_reachable(peer_id).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        // Rows another task of this process is sending are left to it.
        let held = self.held.take(&ids);
        if held.ids().is_empty() {
            return Ok(false);
        }
        let rows = self.store.delivery_rows(held.ids()).await?;
        let attempts: Vec<Attempt> = futures::stream::iter(rows)
            .map(|row| self.attempt(row))
            .buffer_unordered(how.in_flight)
            .collect()
            .await;
        let through = attempts.iter().any(|a| {
            matches!(
                a.outcome,
                Outcome::Delivered | Outcome::Gone | Outcome::Revoked
            )
        });
        let state = self.record(peer_id, attempts, true, true, held).await?;
        if through && state != PeerState::Paused {
            self.store.mark_peer_reachable(peer_id).await?;
        }
        Ok(through)
    }

    /// Writes what the attempts decided ([`settle`]): their rows, the peer's health, and
    /// retry messages through the tier queues. A `probing` batch is parked: its rows keep
    /// their queued message (no retry message is added) and spend no attempt on the peer
    /// being down. A batch that is not `urgent` may wait a little to share its write with
    /// others ([`crate::results`]). The rows are let go (`held`) once they, the peer's
    /// verdict and its health are written, before any retry message is sent, so that none
    /// comes back while they are held.
    async fn record(
        &self,
        peer_id: PeerId,
        attempts: Vec<Attempt>,
        probing: bool,
        urgent: bool,
        held: Held,
    ) -> Result<PeerState, DeliverError> {
        let mut tally = Tally::for_batch(attempts.first());
        let mut s = Settled::new(peer_id, attempts.len());
        let was_active = attempts.iter().all(|a| a.peer_was_active);
        for a in attempts {
            let (change, effect) = settle(a.outcome, a.attempts, a.retry.max_attempts, probing);
            tally.observe(&a, change, s.now);
            s.log.push(NewAttempt {
                outbox_id: a.row_id,
                outcome: story_outcome(&a),
                status_code: a.status,
                error: a.error.as_ref().map(|e| e.to_string()),
                duration_ms: i32::try_from(a.took.as_millis()).unwrap_or(i32::MAX),
                peer_answer: (a.outcome == Outcome::Delivered)
                    .then_some(a.answer)
                    .flatten(),
            });
            s.note_peer(effect, &a);
            s.note_row(change, a, self.cfg.retry.tiers(), probing);
        }
        tally.record();
        // A batch whose write may wait notes the peer's health first, so that a failure
        // another batch writes meanwhile is not undone by this earlier success.
        let noted = if urgent {
            None
        } else {
            Some(self.peer_health(peer_id, &s.peer, was_active).await)
        };
        // The rows and their attempt log (an event's story) in one statement, with the
        // batches that finish meanwhile.
        self.results.apply(s.updates, s.log, urgent).await?;
        self.apply_verdicts(peer_id, s.gone.as_deref(), s.revoked)
            .await?;
        let health = match noted {
            Some(h) => h,
            None => self.peer_health(peer_id, &s.peer, was_active).await,
        };
        // Written, and the peer's pause or health with them: a repeat now finds all that.
        drop(held);
        self.bus.send(&s.retries).await?;
        Ok(match (s.gone, health) {
            _ if s.revoked => PeerState::Paused,
            (Some(_), _) => PeerState::Paused,
            (None, Some(h)) => PeerState::Health(h),
            (None, None) => PeerState::Gone,
        })
    }

    /// Pauses a peer that answered 410 Gone (`gone`: the error it came with) and revokes
    /// one that revoked this server.
    async fn apply_verdicts(
        &self,
        peer_id: PeerId,
        gone: Option<&str>,
        revoked: bool,
    ) -> Result<(), DeliverError> {
        if let Some(error) = gone {
            tracing::warn!(peer = %peer_id, "peer answered 410 Gone; pausing it");
            self.store
                .pause_gone_peer(
                    peer_id,
                    &format!("paused: the peer answered 410 Gone ({error}); resume it once it takes deliveries again"),
                )
                .await?;
        }
        if revoked {
            tracing::warn!(peer = %peer_id, "the peer revoked this server; revoking it here");
            self.store
                .mark_revoked_by_peer(peer_id, kite_wire::Code::PeerRevoked.as_str())
                .await?;
        }
        Ok(())
    }

    /// Writes what a batch showed of the peer's health (skipped for a plain success
    /// written less than a second ago, or 100 ms for a peer that was not `active` when its
    /// rows were loaded, so that failures another process writes meanwhile, one failing
    /// event's retries say, do not add up to parking a peer that takes events); answers its
    /// health now (None: it was deleted).
    async fn peer_health(
        &self,
        peer_id: PeerId,
        peer: &PeerOutcome,
        was_active: bool,
    ) -> Option<PeerHealth> {
        let within = if was_active {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(100)
        };
        if *peer == PeerOutcome::default() || self.success_recorded_lately(peer_id, peer, within) {
            return Some(PeerHealth::Active);
        }
        match self
            .store
            .record_peer_outcome(peer_id, peer, self.cfg.failure_threshold)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(peer = %peer_id, error = %e, "cannot record peer health");
                Some(PeerHealth::Active)
            }
        }
    }
}

/// What a batch of attempts decided, gathered before it is written.
struct Settled {
    peer_id: PeerId,
    now: chrono::DateTime<Utc>,
    updates: Vec<DeliveryUpdate>,
    retries: Vec<Message>,
    log: Vec<NewAttempt>,
    peer: PeerOutcome,
    /// The error of a 410 Gone answer.
    gone: Option<String>,
    revoked: bool,
}

impl Settled {
    /// Nothing decided yet, for a batch of `n` attempts to `peer_id`.
    fn new(peer_id: PeerId, n: usize) -> Self {
        Self {
            peer_id,
            now: Utc::now(),
            updates: Vec::with_capacity(n),
            retries: Vec::new(),
            log: Vec::with_capacity(n),
            peer: PeerOutcome::default(),
            gone: None,
            revoked: false,
        }
    }

    /// Notes what one attempt says about its peer.
    fn note_peer(&mut self, effect: PeerEffect, a: &Attempt) {
        let peer = &mut self.peer;
        match effect {
            PeerEffect::Reached => {
                peer.success = true;
                peer.failures = 0;
                peer.instance_id = a.instance_id.clone().or(peer.instance_id.take());
            }
            PeerEffect::Failed => {
                peer.failures += 1;
                peer.last_error = a.error.as_ref().map(|e| e.to_string());
            }
            PeerEffect::Paused => {
                self.gone = Some(
                    a.error
                        .as_ref()
                        .map_or_else(|| "HTTP 410".into(), |e| e.to_string()),
                );
            }
            PeerEffect::Revoked => self.revoked = true,
            PeerEffect::Untouched => {
                // The peer refused this message with a code of its own: say so.
                if let Some(e @ AttemptError::Refused { .. }) = &a.error {
                    peer.last_error = Some(e.to_string());
                }
            }
        }
        if effect != PeerEffect::Untouched {
            peer.last_status_code = a.status.or(peer.last_status_code);
        }
    }

    /// Notes the new state of one attempt's row, and its retry message (none while
    /// `probing`: the row keeps the message it has) through one of the instance's `tiers`
    /// retry queues.
    fn note_row(&mut self, change: RowChange, a: Attempt, tiers: u32, probing: bool) {
        let (state, attempts, delay) = match change {
            RowChange::Unchanged => return,
            RowChange::Delivered => (
                OutboxState::Delivered,
                u32::try_from(a.attempts.max(0)).unwrap_or(0),
                Duration::ZERO,
            ),
            RowChange::Dead { attempts } => (OutboxState::Dead, attempts, Duration::ZERO),
            RowChange::Retry { attempts } => {
                let delay = a.retry.jittered(attempts);
                if !probing && !a.claimed {
                    // One message a row: each carries its own jittered delay.
                    self.retries.push(Message::Retry {
                        peer: self.peer_id,
                        id: a.row_id,
                        attempt: attempts.min(tiers),
                        delay,
                    });
                }
                (OutboxState::Pending, attempts, delay)
            }
        };
        self.updates.push(DeliveryUpdate {
            id: a.row_id,
            state,
            attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
            next_attempt_at: self.now + chrono::Duration::from_std(delay).unwrap_or_default(),
            last_error: (state != OutboxState::Delivered)
                .then(|| a.error.map(|e| e.to_string()))
                .flatten(),
            last_status_code: a.status,
            peer_answer: (state == OutboxState::Delivered)
                .then_some(a.answer)
                .flatten(),
        });
    }
}

impl Ctx {
    /// True when `peer` is a plain success (nothing failed, nothing to report) and one
    /// was written to the peer's record less than `within` ago: the write is skipped, so
    /// concurrent batches do not queue on the peer's row. Otherwise notes the write.
    fn success_recorded_lately(
        &self,
        peer_id: PeerId,
        peer: &PeerOutcome,
        within: Duration,
    ) -> bool {
        let Ok(mut marks) = self.recorded_success.lock() else {
            return false;
        };
        let plain = peer.success && peer.failures == 0 && peer.last_error.is_none();
        if !plain {
            marks.remove(&peer_id);
            return false;
        }
        let now = Instant::now();
        match marks.get(&peer_id) {
            Some(at) if now.duration_since(*at) < within => true,
            _ => {
                marks.insert(peer_id, now);
                false
            }
        }
    }
}

/// How an attempt reads in an event's story: `delivered`, `failed` (the peer is failing),
/// `refused` (the peer answered no to this event), `error` (it could not be sent), `gone`,
/// `revoked`.
fn story_outcome(a: &Attempt) -> AttemptOutcome {
    match a.outcome {
        Outcome::Delivered => AttemptOutcome::Delivered,
        Outcome::PeerFailure => AttemptOutcome::Failed,
        Outcome::MessageFailure if a.status.is_some() => AttemptOutcome::Refused,
        Outcome::MessageFailure => AttemptOutcome::Error,
        Outcome::Gone => AttemptOutcome::Gone,
        Outcome::Revoked => AttemptOutcome::Revoked,
    }
}

/// A batch's metrics (one peer, so one set of labels): counted while its attempts are
/// settled, recorded once.
struct Tally {
    labels: Option<(String, String)>,
    outcomes: [u64; 5],
    dead: u64,
    took: Vec<f64>,
    e2e: Vec<f64>,
}

impl Tally {
    fn for_batch(first: Option<&Attempt>) -> Self {
        Self {
            labels: first.map(|a| (a.team.clone(), a.peer.clone())),
            outcomes: [0; 5],
            dead: 0,
            took: Vec::new(),
            e2e: Vec::new(),
        }
    }

    fn observe(&mut self, a: &Attempt, change: RowChange, now: chrono::DateTime<Utc>) {
        let i = match a.outcome {
            Outcome::Delivered => 0,
            Outcome::PeerFailure => 1,
            Outcome::MessageFailure => 2,
            Outcome::Gone => 3,
            Outcome::Revoked => 4,
        };
        self.outcomes[i] += 1;
        if !a.took.is_zero() {
            self.took.push(a.took.as_secs_f64());
        }
        match change {
            RowChange::Delivered => {
                if let Some(received) = a.received_at {
                    self.e2e
                        .push((now - received).to_std().unwrap_or_default().as_secs_f64());
                }
            }
            RowChange::Dead { .. } => self.dead += 1,
            RowChange::Retry { .. } | RowChange::Unchanged => {}
        }
    }

    /// Attempts by outcome and their duration, end-to-end latency of delivered rows, rows
    /// that gave up.
    fn record(self) {
        use kite_wire::metrics as m;
        const OUTCOMES: [&str; 5] = [
            "delivered",
            "peer_failure",
            "message_failure",
            "gone",
            "revoked",
        ];
        let Some((team, peer)) = self.labels else {
            return;
        };
        for (n, outcome) in self.outcomes.iter().zip(OUTCOMES) {
            if *n > 0 {
                metrics::counter!(m::ATTEMPTS, "team" => team.clone(), "peer" => peer.clone(), "outcome" => outcome)
                    .increment(*n);
            }
        }
        let took =
            metrics::histogram!(m::ATTEMPT_SECONDS, "team" => team.clone(), "peer" => peer.clone());
        for t in self.took {
            took.record(t);
        }
        if !self.e2e.is_empty() {
            let e2e = metrics::histogram!(m::END_TO_END_SECONDS, "team" => team.clone(), "peer" => peer.clone());
            for t in self.e2e {
                e2e.record(t);
            }
        }
        if self.dead > 0 {
            metrics::counter!(m::DEAD, "team" => team, "peer" => peer).increment(self.dead);
        }
    }
}

/// Where a peer stands after a batch was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// Its health now.
    Health(PeerHealth),
    /// A 410 paused it.
    Paused,
    /// It was deleted meanwhile.
    Gone,
}
