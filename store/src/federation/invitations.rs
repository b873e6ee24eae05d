//! Invitations: made with a token whose digest only is kept, listed, revoked, and used once
//! (recording the accepting server as a peer).

use std::time::Duration;

use chrono::Utc;
use kite_wire::token::{digest, secret_eq};
use tokio_postgres::Row;
use uuid::Uuid;

use super::handshake_peers::{insert_handshake_peer, send_grant, NewHandshakePeer};
use crate::grants::insert_grant;
use crate::peers::{Peer, COLS};
use crate::types::PeerStatus;
use crate::{Result, RowExt, Store, StoreError};

pub use kite_api::invitations::InvitationInfo;

fn invitation(r: &Row) -> Result<InvitationInfo> {
    let conduct = crate::peers::handshake_conduct_of(r, 8)?;
    Ok(InvitationInfo {
        id: r.col(0)?,
        scopes: r.col(1)?,
        max_hops: r.col(2)?,
        expires_at: r.col(3)?,
        used_at: r.col(4)?,
        used_by: r.col(5)?,
        created_at: r.col(6)?,
        filters: crate::peers::filters_of(r, 7)?,
        ordering_key: conduct.ordering_key,
        on_dead: conduct.on_dead,
        delivery: conduct.delivery,
    })
}

const INVITATION_COLS: &str =
    "id, scopes, max_hops, expires_at, used_at, used_by, created_at, filters::text, conduct::text";

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

impl Store {
    /// Records an invitation with its terms (`new`): only the token's SHA-256 digest is kept.
    pub async fn create_invitation(
        &self,
        team_id: &str,
        token: &str,
        new: &kite_api::invitations::NewInvitation,
    ) -> Result<InvitationInfo> {
        let ttl = Duration::from_secs(new.ttl.unsigned_abs());
        let conduct = kite_api::peers::Conduct {
            ordering_key: new.ordering_key.clone(),
            on_dead: new.on_dead,
            delivery: new.delivery.clone(),
        };
        let c = self.conn().await?;
        let expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO invitations (id, team_id, token_hash, scopes, max_hops, expires_at, filters,
                                             conduct)
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb)
                     RETURNING {INVITATION_COLS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &team_id,
                    &digest(token),
                    &new.scopes,
                    &new.max_hops,
                    &expires_at,
                    &crate::peers::filters_text(&new.filters)?,
                    &crate::peers::handshake_conduct_text(&conduct)?,
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
            filters: inv.filters.clone(),
            conduct: kite_api::peers::Conduct {
                ordering_key: inv.ordering_key.clone(),
                on_dead: inv.on_dead,
                delivery: inv.delivery.clone(),
            },
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
    let stored: String = row.col(9)?;
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
