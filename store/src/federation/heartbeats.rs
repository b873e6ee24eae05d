//! Heartbeats: the state machine that moves a peer between `accepted`, `active` and
//! `degraded`, the claims and records of heartbeats each way, and what else a peer's answers
//! say of it (the protocol version it speaks, that it revoked this side).

use kite_wire::ids::PeerId;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::peers::{Peer, COLS};
use crate::types::PeerStatus;
use crate::{Result, RowExt, Store};

/// Heartbeat bookkeeping of one peer, what [`heartbeat_status`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatState {
    /// The peer's status now.
    pub status: PeerStatus,
    /// When its last heartbeat arrived here.
    pub received: Option<DateTime<Utc>>,
    /// When it last took one of ours.
    pub sent_ok: Option<DateTime<Utc>>,
    /// Our heartbeats it failed to take in a row.
    pub failures: i32,
}

/// The heartbeat state machine: `accepted` until a heartbeat went each way, then `active`;
/// `degraded` once `misses` heartbeats in a row went missing in either direction; `active`
/// again when they flow. Other states (proposed, paused, revoked) are not heartbeats' to change.
pub fn heartbeat_status(
    s: HeartbeatState,
    now: DateTime<Utc>,
    interval: Duration,
    misses: u32,
) -> PeerStatus {
    if !matches!(
        s.status,
        PeerStatus::Accepted | PeerStatus::Active | PeerStatus::Degraded
    ) {
        return s.status;
    }
    let (Some(received), Some(_)) = (s.received, s.sent_ok) else {
        return s.status;
    };
    let window = interval * misses.max(1) + interval / 2;
    let silent = (now - received).to_std().unwrap_or_default() > window;
    if silent || s.failures >= misses.max(1) as i32 {
        PeerStatus::Degraded
    } else {
        PeerStatus::Active
    }
}

impl Store {
    /// Handshake peers due a heartbeat (none sent for `interval`), claimed so that one
    /// process of several sends each.
    pub async fn claim_heartbeats(&self, interval: Duration) -> Result<Vec<Peer>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "UPDATE peers SET heartbeat_claimed_at = now()
                     WHERE server_name IS NOT NULL AND status IN ('accepted', 'active', 'degraded')
                       AND (heartbeat_claimed_at IS NULL
                            OR heartbeat_claimed_at <= now() - make_interval(secs => $1))
                     RETURNING {COLS}"
                ),
                &[&(interval.as_secs_f64() * 0.8)],
            )
            .await?;
        rows.iter().map(|r| self.peer_row(r)).collect()
    }

    /// Records a heartbeat this side sent: `Ok` if the peer took it, else the error (the
    /// peer's error code when it answered with one). Applies [`heartbeat_status`].
    pub async fn record_heartbeat_sent(
        &self,
        peer_id: PeerId,
        outcome: std::result::Result<(), &str>,
        interval: Duration,
        misses: u32,
    ) -> Result<()> {
        self.heartbeat_update(
            peer_id,
            interval,
            misses,
            |s| match outcome {
                Ok(()) => {
                    s.sent_ok = Some(Utc::now());
                    s.failures = 0;
                }
                Err(_) => s.failures += 1,
            },
            outcome.err(),
        )
        .await
    }

    /// Records the protocol version agreed with a peer (a heartbeat says what it speaks now).
    pub async fn record_protocol_version(&self, peer_id: PeerId, version: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE peers SET protocol_version = $2
             WHERE id = $1 AND protocol_version IS DISTINCT FROM $2",
            &[&peer_id, &version],
        )
        .await?;
        Ok(())
    }

    /// Records a heartbeat received from a peer. Applies [`heartbeat_status`].
    pub async fn record_heartbeat_received(
        &self,
        peer_id: PeerId,
        interval: Duration,
        misses: u32,
    ) -> Result<()> {
        self.heartbeat_update(
            peer_id,
            interval,
            misses,
            |s| s.received = Some(Utc::now()),
            None,
        )
        .await
    }

    async fn heartbeat_update(
        &self,
        peer_id: PeerId,
        interval: Duration,
        misses: u32,
        change: impl FnOnce(&mut HeartbeatState),
        error: Option<&str>,
    ) -> Result<()> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT status, last_heartbeat_at, last_heartbeat_ok_at, heartbeat_failures
                 FROM peers WHERE id = $1 FOR UPDATE",
                &[&peer_id],
            )
            .await?
        else {
            return Ok(());
        };
        let mut s = HeartbeatState {
            status: row.col(0)?,
            received: row.col(1)?,
            sent_ok: row.col(2)?,
            failures: row.col(3)?,
        };
        change(&mut s);
        let status = heartbeat_status(s, Utc::now(), interval, misses);
        tx.execute(
            "UPDATE peers SET status = $2, last_heartbeat_at = $3, last_heartbeat_ok_at = $4,
                    heartbeat_failures = $5,
                    last_error = COALESCE($6, last_error),
                    last_error_at = CASE WHEN $6::text IS NULL THEN last_error_at ELSE now() END,
                    updated_at = CASE WHEN status = $2 THEN updated_at ELSE now() END
             WHERE id = $1",
            &[
                &peer_id,
                &status,
                &s.received,
                &s.sent_ok,
                &s.failures,
                &error,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that a peer refused a request because it revoked this side: the peer is
    /// revoked here too, with the code in `last_error`.
    pub async fn mark_revoked_by_peer(&self, peer_id: PeerId, code: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE peers SET status = 'revoked', last_error = $2, last_error_at = now(), updated_at = now()
             WHERE id = $1 AND status <> 'revoked'",
            &[&peer_id, &code],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn heartbeats_walk_the_state_machine() {
        let i = Duration::from_secs(1);
        let s = |status, received, sent_ok, failures| HeartbeatState {
            status,
            received,
            sent_ok,
            failures,
        };
        use PeerStatus::*;
        // One way is not enough.
        assert_eq!(
            heartbeat_status(s(Accepted, Some(at(0)), None, 0), at(0), i, 3),
            Accepted
        );
        // Each way: active.
        assert_eq!(
            heartbeat_status(s(Accepted, Some(at(0)), Some(at(0)), 0), at(0), i, 3),
            Active
        );
        // Silent past the misses: degraded; our sends failing: degraded.
        assert_eq!(
            heartbeat_status(s(Active, Some(at(0)), Some(at(5)), 0), at(5), i, 3),
            Degraded
        );
        assert_eq!(
            heartbeat_status(s(Active, Some(at(5)), Some(at(0)), 3), at(5), i, 3),
            Degraded
        );
        assert_eq!(
            heartbeat_status(s(Active, Some(at(5)), Some(at(0)), 2), at(5), i, 3),
            Active
        );
        // Back when they flow.
        assert_eq!(
            heartbeat_status(s(Degraded, Some(at(9)), Some(at(9)), 0), at(9), i, 3),
            Active
        );
        // Operators' states stay.
        for st in [Paused, Revoked, Proposed] {
            assert_eq!(
                heartbeat_status(s(st, Some(at(9)), Some(at(9)), 0), at(9), i, 3),
                st
            );
        }
    }
}
