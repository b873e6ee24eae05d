//! Federation trust: each team's policy, invitations, handshake peers with their pinned keys,
//! heartbeats and the per-peer traffic counts.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kite_wire::peering::{PublishedKey, MAX_KEYS};
use kite_wire::token::{digest, secret_eq};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::grants::{insert_grant, NewGrant};
use crate::keys::found;
use crate::peers::{Peer, COLS};
use crate::types::{FederationMode, GrantPermission, PeerStatus, SignatureProtocol};
use crate::{Result, RowExt, Store, StoreError};

/// A team's federation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Policy {
    /// Who may federate.
    pub default_mode: FederationMode,
    /// Server names that may accept invitations under `invite_only`.
    pub allowed_peers: Vec<String>,
    /// The most events one backfill request is answered with.
    pub max_backfill_events_per_request: i32,
    /// The least federation traffic must be signed with: `token` (shared tokens or identity
    /// keys) or `identity` (identity keys only: shared-token peers and senders refused).
    pub min_signature_protocol: SignatureProtocol,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_mode: FederationMode::Open,
            allowed_peers: Vec::new(),
            max_backfill_events_per_request: 1000,
            min_signature_protocol: SignatureProtocol::Token,
        }
    }
}

impl Policy {
    /// Whether `server_name` may accept an invitation of this team.
    pub fn admits(&self, server_name: &str) -> std::result::Result<(), FederationMode> {
        match self.default_mode {
            FederationMode::Open => Ok(()),
            FederationMode::InviteOnly if self.allowed_peers.iter().any(|p| p == server_name) => {
                Ok(())
            }
            mode => Err(mode),
        }
    }
}

/// An invitation as listed (its token is never kept, only its digest).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitationInfo {
    /// Its id.
    pub id: Uuid,
    /// Event types the inviter sends to whoever accepts.
    pub scopes: Vec<String>,
    /// Hop limit for what the inviter sends.
    pub max_hops: i32,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// The server that used it.
    pub used_by: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

fn invitation(r: &Row) -> Result<InvitationInfo> {
    Ok(InvitationInfo {
        id: r.col(0)?,
        scopes: r.col(1)?,
        max_hops: r.col(2)?,
        expires_at: r.col(3)?,
        used_at: r.col(4)?,
        used_by: r.col(5)?,
        created_at: r.col(6)?,
    })
}

const INVITATION_COLS: &str = "id, scopes, max_hops, expires_at, used_at, used_by, created_at";

/// Why an invitation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationRefusal {
    /// No invitation has this token.
    Unknown,
    /// It was used already.
    Used,
    /// It expired.
    Expired,
}

/// A handshake peer to record: the other server, where it is, what goes to it, its keys.
#[derive(Debug, Clone)]
pub struct NewHandshakePeer {
    /// Its server name (also the peer's name).
    pub server_name: String,
    /// Its base URL.
    pub base_url: String,
    /// Its team.
    pub team: String,
    /// Event types sent to it.
    pub scopes: Vec<String>,
    /// Hop limit of what is sent to it.
    pub max_hops: i32,
    /// Its keys, pinned.
    pub keys: Vec<PublishedKey>,
    /// `proposed` (asking) or `accepted` (answered).
    pub status: PeerStatus,
    /// The federation protocol version agreed with it.
    pub protocol_version: String,
}

/// Most rows pinned for one peer: [`MAX_KEYS`] live keys and as many ended ones, remembered
/// so that an ended key never comes back.
pub const MAX_PINNED_ROWS: i64 = 2 * MAX_KEYS as i64;
/// How long an ended key is remembered before it is pruned: far longer than a signed
/// request's five-minute window, so no request signed while it was current revives it.
pub const ENDED_KEPT: Duration = Duration::from_secs(3600);

/// Where a list of a peer's keys comes from.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// Its descriptor, fetched from its base URL: it may end any key it no longer lists.
    Descriptor,
    /// A message it signed with this (pinned) key: it may end only keys no newer than it.
    SignedBy(&'a PublishedKey),
}

/// One change to a peer's pinned keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A key pinned anew.
    Add(PublishedKey),
    /// A pinned key's validity set (only ever shortened).
    Until(String, Option<DateTime<Utc>>),
}

/// What pinning `listed` over `known` changes, by the rules of [`Store::pin_keys`]:
/// - a listed key already pinned with another public key, or ended, is ignored (an ended key
///   never comes back);
/// - a listed key already pinned keeps the earlier of its two ends (validity only shortens);
/// - a new key is pinned while fewer than [`MAX_KEYS`] are live (ended ones beyond
///   [`MAX_PINNED_ROWS`] are pruned after);
/// - a live key not listed ends now, if the list comes from the descriptor or was signed by
///   a key at least as new as it.
pub fn plan_pins(
    known: &[PublishedKey],
    listed: &[PublishedKey],
    source: KeySource<'_>,
    now: DateTime<Utc>,
) -> Vec<Pin> {
    let ended = |k: &PublishedKey| k.valid_until.is_some_and(|t| t <= now);
    let earlier = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut plan = Vec::new();
    // Ends first, so a peer that replaces every key at once has room for the new ones.
    for p in known.iter().filter(|p| !ended(p)) {
        let listed_too = listed.iter().any(|k| k.key_id == p.key_id);
        let may_end = match source {
            KeySource::Descriptor => true,
            KeySource::SignedBy(signer) => p.valid_from <= signer.valid_from,
        };
        if !listed_too && may_end {
            plan.push(Pin::Until(p.key_id.clone(), Some(now)));
        }
    }
    let mut live = known.iter().filter(|k| !ended(k)).count() - plan.len();
    for k in listed {
        match known.iter().find(|p| p.key_id == k.key_id) {
            Some(p) if p.public_key != k.public_key || ended(p) => {}
            Some(p) => {
                let until = earlier(p.valid_until, k.valid_until);
                if until != p.valid_until {
                    plan.push(Pin::Until(p.key_id.clone(), until));
                }
            }
            None if !ended(k) && live < MAX_KEYS => {
                live += 1;
                plan.push(Pin::Add(k.clone()));
            }
            None => {}
        }
    }
    plan
}

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

/// Events a team's peers took and sent in the last 24 hours, by peer id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Delivered to the peer.
    pub sent: i64,
    /// Received from the peer (it was the last forwarder).
    pub received: i64,
}

impl Store {
    /// A team's policy (the default one if it never set one).
    pub async fn policy(&self, team_id: &str) -> Result<Policy> {
        Ok(self
            .policies(Some(team_id))
            .await?
            .remove(team_id)
            .unwrap_or_default())
    }

    /// Every team's policy that differs from the default.
    pub async fn all_policies(&self) -> Result<HashMap<String, Policy>> {
        self.policies(None).await
    }

    async fn policies(&self, team_id: Option<&str>) -> Result<HashMap<String, Policy>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT team_id, default_mode, allowed_peers, max_backfill_events_per_request,
                        min_signature_protocol
                 FROM federation_policies WHERE $1::text IS NULL OR team_id = $1",
                &[&team_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.col(0)?,
                    Policy {
                        default_mode: r.col(1)?,
                        allowed_peers: r.col(2)?,
                        max_backfill_events_per_request: r.col(3)?,
                        min_signature_protocol: r.col(4)?,
                    },
                ))
            })
            .collect()
    }

    /// Sets a team's policy.
    pub async fn set_policy(&self, team_id: &str, p: &Policy) -> Result<Policy> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO federation_policies (team_id, default_mode, allowed_peers,
                 max_backfill_events_per_request, min_signature_protocol)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (team_id) DO UPDATE SET default_mode = $2, allowed_peers = $3,
                 max_backfill_events_per_request = $4, min_signature_protocol = $5,
                 updated_at = now()",
            &[
                &team_id,
                &p.default_mode,
                &p.allowed_peers,
                &p.max_backfill_events_per_request,
                &p.min_signature_protocol,
            ],
        )
        .await?;
        Ok(p.clone())
    }

    /// Records an invitation: only the token's SHA-256 digest is kept.
    pub async fn create_invitation(
        &self,
        team_id: &str,
        token: &str,
        scopes: &[String],
        max_hops: i32,
        ttl: Duration,
    ) -> Result<InvitationInfo> {
        let c = self.conn().await?;
        let expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO invitations (id, team_id, token_hash, scopes, max_hops, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {INVITATION_COLS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &digest(token),
                    &scopes,
                    &max_hops,
                    &expires_at,
                ],
            )
            .await?;
        invitation(&row)
    }

    /// A team's invitations, newest first.
    pub async fn list_invitations(&self, team_id: &str) -> Result<Vec<InvitationInfo>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {INVITATION_COLS} FROM invitations WHERE team_id = $1
                     ORDER BY created_at DESC"
                ),
                &[&team_id],
            )
            .await?;
        rows.iter().map(invitation).collect()
    }

    /// Revokes (deletes) an invitation.
    pub async fn delete_invitation(&self, team_id: &str, id: Uuid) -> Result<()> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM invitations WHERE team_id = $1 AND id = $2",
                &[&team_id, &id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Checks an invitation's token without using it (what the accept endpoint does before
    /// anything else); [`Store::accept_invitation`] checks it again as it uses it.
    pub async fn check_invitation(
        &self,
        team_id: &str,
        token: &str,
    ) -> Result<std::result::Result<InvitationInfo, InvitationRefusal>> {
        let c = self.conn().await?;
        find_invitation(&c, team_id, token, "").await
    }

    /// Uses an invitation: checks the token (by digest, compared in constant time), marks it
    /// used and records the accepting server as a peer with the invitation's scopes, all in
    /// one transaction, so a token works once. Answers the invitation and the new peer, or
    /// why it was refused.
    pub async fn accept_invitation(
        &self,
        team_id: &str,
        token: &str,
        accepter: &NewHandshakePeer,
        accepter_sends: Option<&[String]>,
    ) -> Result<std::result::Result<(InvitationInfo, Peer), InvitationRefusal>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let inv = match find_invitation(&tx, team_id, token, "FOR UPDATE").await? {
            Ok(inv) => inv,
            Err(refusal) => return Ok(Err(refusal)),
        };
        tx.execute(
            "UPDATE invitations SET used_at = now(), used_by = $2 WHERE id = $1",
            &[&inv.id, &accepter.server_name],
        )
        .await?;
        let peer = NewHandshakePeer {
            scopes: inv.scopes.clone(),
            max_hops: inv.max_hops,
            status: PeerStatus::Accepted,
            ..accepter.clone()
        };
        let id = insert_handshake_peer(self, &tx, team_id, &peer).await?;
        // The accepting server may send what it said it sends (default: what it is sent).
        let sends = accepter_sends.map_or_else(|| inv.scopes.clone(), <[String]>::to_vec);
        insert_grant(&tx, team_id, id, &send_grant(sends)).await?;
        let row = tx
            .query_one(&format!("SELECT {COLS} FROM peers WHERE id = $1"), &[&id])
            .await?;
        tx.commit().await?;
        let peer = self.peer_row(&row)?;
        Ok(Ok((
            InvitationInfo {
                used_by: Some(accepter.server_name.clone()),
                ..inv
            },
            peer,
        )))
    }

    /// Records a handshake peer with its pinned keys (the accepting side, before it asks).
    pub async fn create_handshake_peer(&self, team_id: &str, p: &NewHandshakePeer) -> Result<Peer> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = insert_handshake_peer(self, &tx, team_id, p).await?;
        let row = tx
            .query_one(&format!("SELECT {COLS} FROM peers WHERE id = $1"), &[&id])
            .await?;
        tx.commit().await?;
        self.peer_row(&row)
    }

    /// Moves a peer from `proposed` to `accepted` once the other side answered, with the
    /// scopes and hop limit agreed, and grants it `send` for what it said it sends.
    pub async fn confirm_handshake_peer(
        &self,
        id: Uuid,
        scopes: &[String],
        max_hops: i32,
        it_sends: &[String],
    ) -> Result<Peer> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE peers SET status = 'accepted', scopes = $2, max_hops = $3, updated_at = now()
                     WHERE id = $1 AND status = 'proposed' RETURNING {COLS}"
                ),
                &[&id, &scopes, &max_hops],
            )
            .await?;
        let peer = found(row.as_ref().map(|r| self.peer_row(r)).transpose()?)?;
        insert_grant(&tx, &peer.team_id, id, &send_grant(it_sends.to_vec())).await?;
        tx.commit().await?;
        Ok(peer)
    }

    /// Removes a peer that never got past `proposed` (the other side refused).
    pub async fn drop_proposed_peer(&self, id: Uuid) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "DELETE FROM peers WHERE id = $1 AND status = 'proposed'",
            &[&id],
        )
        .await?;
        Ok(())
    }

    /// Whether this team sent `peer` one of the latest 1,000 events it holds signed with
    /// `sigkey` (`{server_name} {key_id}`), or, when `or_held`, holds any (the peer may pull
    /// them): the keys a key query of that peer is answered about, so it learns nothing it
    /// did not see.
    pub async fn sent_signed_by(
        &self,
        team_id: &str,
        peer_id: Uuid,
        sigkey: &str,
        or_held: bool,
    ) -> Result<bool> {
        let c = self.conn().await?;
        c.query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM (SELECT seq FROM events WHERE team_id = $1 AND fed_sigkey = $2
                                ORDER BY seq DESC LIMIT 1000) e
                 WHERE $4 OR EXISTS (SELECT 1 FROM outbox o
                                     WHERE o.event_seq = e.seq AND o.peer_id = $3))",
            &[&team_id, &sigkey, &peer_id, &or_held],
        )
        .await?
        .col(0)
    }

    /// The keys pinned for a peer, newest first.
    pub async fn peer_keys(&self, peer_id: Uuid) -> Result<Vec<PublishedKey>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT key_id, public_key, valid_from, valid_until FROM peer_keys
                 WHERE peer_id = $1 ORDER BY valid_from DESC",
                &[&peer_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PublishedKey {
                    key_id: r.col(0)?,
                    public_key: r.col(1)?,
                    valid_from: r.col(2)?,
                    valid_until: r.col(3)?,
                })
            })
            .collect()
    }

    /// Pins what a peer publishes now, by the rules that keep a peer's keys its own and
    /// bounded ([`plan_pins`]): a key's validity only ever shortens, an ended key never comes
    /// back, at most [`MAX_KEYS`] live keys and [`MAX_PINNED_ROWS`] rows, and a message signed
    /// with an older key cannot end a newer one. Answers whether anything changed.
    pub async fn pin_keys(
        &self,
        peer_id: Uuid,
        keys: &[PublishedKey],
        source: KeySource<'_>,
    ) -> Result<bool> {
        if plan_pins(&self.peer_keys(peer_id).await?, keys, source, Utc::now()).is_empty() {
            return Ok(false);
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // One pin at a time a peer: each plans from what the one before left.
        if tx
            .query_opt("SELECT 1 FROM peers WHERE id = $1 FOR UPDATE", &[&peer_id])
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let rows = tx
            .query(
                "SELECT key_id, public_key, valid_from, valid_until FROM peer_keys
                 WHERE peer_id = $1",
                &[&peer_id],
            )
            .await?;
        let known = rows
            .iter()
            .map(|r| {
                Ok(PublishedKey {
                    key_id: r.col(0)?,
                    public_key: r.col(1)?,
                    valid_from: r.col(2)?,
                    valid_until: r.col(3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let now = Utc::now();
        let plan = plan_pins(&known, keys, source, now);
        for change in &plan {
            match change {
                Pin::Add(k) => {
                    tx.execute(
                        "INSERT INTO peer_keys (peer_id, key_id, public_key, valid_from, valid_until)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[&peer_id, &k.key_id, &k.public_key, &k.valid_from, &k.valid_until],
                    )
                    .await?;
                }
                Pin::Until(id, until) => {
                    tx.execute(
                        "UPDATE peer_keys SET valid_until = $3 WHERE peer_id = $1 AND key_id = $2",
                        &[&peer_id, id, until],
                    )
                    .await?;
                }
            }
        }
        // Ended keys are remembered a while (their ids refused), then pruned; never more
        // than MAX_PINNED_ROWS rows a peer.
        let kept_since = now - chrono::Duration::from_std(ENDED_KEPT).unwrap_or_default();
        tx.execute(
            "DELETE FROM peer_keys WHERE peer_id = $1 AND valid_until < $2",
            &[&peer_id, &kept_since],
        )
        .await?;
        tx.execute(
            "DELETE FROM peer_keys WHERE peer_id = $1 AND key_id IN (
                 SELECT key_id FROM peer_keys WHERE peer_id = $1 AND valid_until <= now()
                 ORDER BY valid_until DESC OFFSET $2)",
            &[&peer_id, &(MAX_PINNED_ROWS - MAX_KEYS as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(!plan.is_empty())
    }

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
        peer_id: Uuid,
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
    pub async fn record_protocol_version(&self, peer_id: Uuid, version: &str) -> Result<()> {
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
        peer_id: Uuid,
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
        peer_id: Uuid,
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
    pub async fn mark_revoked_by_peer(&self, peer_id: Uuid, code: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE peers SET status = 'revoked', last_error = $2, last_error_at = now(), updated_at = now()
             WHERE id = $1 AND status <> 'revoked'",
            &[&peer_id, &code],
        )
        .await?;
        Ok(())
    }

    /// Events each of a team's peers took from here and sent here in the last 24 hours.
    pub async fn peer_traffic(&self, team_id: &str) -> Result<HashMap<Uuid, Traffic>> {
        let c = self.conn().await?;
        let mut out: HashMap<Uuid, Traffic> = HashMap::new();
        for r in c
            .query(
                "SELECT peer_id, count(*) FROM outbox
                 WHERE team_id = $1 AND state = 'delivered' AND delivered_at > now() - interval '24 hours'
                 GROUP BY peer_id",
                &[&team_id],
            )
            .await?
        {
            out.entry(r.col(0)?).or_default().sent = r.col(1)?;
        }
        for r in c
            .query(
                "SELECT p.id, count(*) FROM events e
                 JOIN peers p ON p.team_id = e.team_id
                      AND e.fed_chain[cardinality(e.fed_chain)] = COALESCE(p.server_name, p.peer_instance_id)
                 WHERE e.team_id = $1 AND e.hook_source = 'kite'
                   AND e.received_at > now() - interval '24 hours'
                 GROUP BY p.id",
                &[&team_id],
            )
            .await?
        {
            out.entry(r.col(0)?).or_default().received = r.col(1)?;
        }
        Ok(out)
    }
}

/// The invitation of `team_id` with this token (by digest, compared in constant time), if it
/// is still good; `lock` is `FOR UPDATE` inside the transaction that uses it.
async fn find_invitation(
    c: &impl deadpool_postgres::GenericClient,
    team_id: &str,
    token: &str,
    lock: &str,
) -> Result<std::result::Result<InvitationInfo, InvitationRefusal>> {
    let wanted = digest(token);
    let row = c
        .query_opt(
            &format!(
                "SELECT {INVITATION_COLS}, token_hash FROM invitations
                 WHERE team_id = $1 AND token_hash = $2 {lock}"
            ),
            &[&team_id, &wanted],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(InvitationRefusal::Unknown));
    };
    let stored: String = row.col(7)?;
    if !secret_eq(&stored, &wanted) {
        return Ok(Err(InvitationRefusal::Unknown));
    }
    let inv = invitation(&row)?;
    Ok(if inv.used_at.is_some() {
        Err(InvitationRefusal::Used)
    } else if inv.expires_at <= Utc::now() {
        Err(InvitationRefusal::Expired)
    } else {
        Ok(inv)
    })
}

/// The `send` grant a handshake makes: the scopes agreed, never expiring.
fn send_grant(scopes: Vec<String>) -> NewGrant {
    NewGrant {
        permissions: vec![GrantPermission::Send],
        scopes,
        expires_at: None,
    }
}

async fn insert_handshake_peer(
    store: &Store,
    tx: &tokio_postgres::Transaction<'_>,
    team_id: &str,
    p: &NewHandshakePeer,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    // Named after the server, unless a peer of the team has that name already.
    let taken = tx
        .query_opt(
            "SELECT 1 FROM peers WHERE team_id = $1 AND name = $2",
            &[&team_id, &p.server_name],
        )
        .await?
        .is_some();
    let name = if taken {
        format!("{}-{}", p.server_name, &id.simple().to_string()[24..])
    } else {
        p.server_name.clone()
    };
    tx.execute(
        "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status,
                            server_name, peer_base_url, peer_team, peer_instance_id, protocol_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9, $12)",
        &[
            &id,
            &team_id,
            &name,
            &kite_wire::peering::hook_url(&p.base_url, &p.team),
            &store.seal("")?,
            &p.scopes,
            &p.max_hops,
            &p.status,
            &p.server_name,
            &p.base_url,
            &p.team,
            &p.protocol_version,
        ],
    )
    .await?;
    for k in &p.keys {
        tx.execute(
            "INSERT INTO peer_keys (peer_id, key_id, public_key, valid_from, valid_until)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&id, &k.key_id, &k.public_key, &k.valid_from, &k.valid_until],
        )
        .await?;
    }
    Ok(id)
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

    fn key(id: &str, from: i64, until: Option<i64>) -> PublishedKey {
        PublishedKey {
            key_id: id.into(),
            public_key: format!("pk-{id}"),
            valid_from: at(from),
            valid_until: until.map(at),
        }
    }

    #[test]
    fn pinned_keys_only_shorten_and_an_ended_key_never_comes_back() {
        let now = at(100);
        let old = key("k1", 0, Some(200));
        let new = key("k2", 50, None);
        let known = vec![old.clone(), new.clone()];
        // Signed with the old key, listing only itself as current: it is not extended, and
        // the newer key is not ended.
        let replayed = vec![key("k1", 0, None)];
        assert_eq!(
            plan_pins(&known, &replayed, KeySource::SignedBy(&old), now),
            vec![]
        );
        // Signed with the new key, not listing the old one: the old one ends now.
        assert_eq!(
            plan_pins(
                &known,
                std::slice::from_ref(&new),
                KeySource::SignedBy(&new),
                now
            ),
            vec![Pin::Until("k1".into(), Some(now))]
        );
        // An ended key listed again stays ended; another public key under a known id is
        // ignored.
        let ended = vec![key("k1", 0, Some(90)), new.clone()];
        assert_eq!(
            plan_pins(
                &ended,
                &[key("k1", 0, None), new.clone()],
                KeySource::Descriptor,
                now
            ),
            vec![]
        );
        let swapped = PublishedKey {
            public_key: "other".into(),
            ..new.clone()
        };
        assert_eq!(
            plan_pins(&known, &[old.clone(), swapped], KeySource::Descriptor, now),
            vec![]
        );
        // An end only comes earlier.
        assert_eq!(
            plan_pins(
                &known,
                &[key("k1", 0, Some(150)), new.clone()],
                KeySource::Descriptor,
                now
            ),
            vec![Pin::Until("k1".into(), Some(at(150)))]
        );
    }

    #[test]
    fn a_peer_pins_a_bounded_number_of_keys() {
        let now = at(100);
        let many: Vec<_> = (0..40).map(|i| key(&format!("k{i}"), 0, None)).collect();
        let plan = plan_pins(&[], &many, KeySource::Descriptor, now);
        assert_eq!(plan.len(), MAX_KEYS);
        // A peer replacing every key at once: the old ones end, the new ones fit.
        let old: Vec<_> = (0..MAX_KEYS)
            .map(|i| key(&format!("o{i}"), 0, None))
            .collect();
        let plan = plan_pins(&old, &many[..MAX_KEYS], KeySource::Descriptor, now);
        let adds = plan.iter().filter(|p| matches!(p, Pin::Add(_))).count();
        assert_eq!((plan.len(), adds), (2 * MAX_KEYS, MAX_KEYS));
    }

    #[test]
    fn policies_admit_by_mode() {
        let mut p = Policy::default();
        assert_eq!(p.admits("b"), Ok(()));
        p.default_mode = FederationMode::InviteOnly;
        assert_eq!(p.admits("b"), Err(FederationMode::InviteOnly));
        p.allowed_peers = vec!["b".into()];
        assert_eq!(p.admits("b"), Ok(()));
        p.default_mode = FederationMode::Closed;
        assert_eq!(p.admits("b"), Err(FederationMode::Closed));
    }
}
