//! Peers recorded by a handshake: the other server, where it is, what goes to it, its pinned
//! keys, and the `send` grant agreed with it.

use kite_wire::ids::{PeerId, TeamId};
use kite_wire::peering::PublishedKey;
use uuid::Uuid;

use crate::grants::{insert_grant, NewGrant};
use crate::keys::found;
use crate::peers::{Peer, COLS};
use crate::types::{GrantPermission, PeerStatus};
use crate::{Result, Store};

/// A handshake peer to record: the other server, where it is, what goes to it, its keys.
#[derive(Debug, Clone)]
pub struct NewHandshakePeer {
    /// Its server name (also the peer's name).
    pub server_name: String,
    /// Its base URL.
    pub base_url: String,
    /// Its team.
    pub team: TeamId,
    /// Event types sent to it.
    pub scopes: Vec<String>,
    /// Hop limit of what is sent to it.
    pub max_hops: i32,
    /// Filters on what is sent to it.
    pub filters: Vec<kite_api::filters::Filter>,
    /// How deliveries to it go (order, its own delivery policy).
    pub conduct: kite_api::peers::Conduct,
    /// Its keys, pinned.
    pub keys: Vec<PublishedKey>,
    /// `proposed` (asking) or `accepted` (answered).
    pub status: PeerStatus,
    /// The federation protocol version agreed with it.
    pub protocol_version: String,
}

impl Store {
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
        id: PeerId,
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
    pub async fn drop_proposed_peer(&self, id: PeerId) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "DELETE FROM peers WHERE id = $1 AND status = 'proposed'",
            &[&id],
        )
        .await?;
        Ok(())
    }
}

/// The `send` grant a handshake makes: the scopes agreed, never expiring.
pub(super) fn send_grant(scopes: Vec<String>) -> NewGrant {
    NewGrant {
        permissions: vec![GrantPermission::Send],
        scopes,
        expires_at: None,
        ttl: None,
    }
}

/// Inserts a handshake peer and its pinned keys inside `tx`; answers its id.
pub(super) async fn insert_handshake_peer(
    store: &Store,
    tx: &tokio_postgres::Transaction<'_>,
    team_id: &str,
    p: &NewHandshakePeer,
) -> Result<PeerId> {
    let id = PeerId(Uuid::now_v7());
    // Named after the server, unless a peer of the team has that name already.
    let taken = tx
        .query_opt(
            "SELECT 1 FROM peers WHERE team_id = $1 AND name = $2",
            &[&team_id, &p.server_name],
        )
        .await?
        .is_some();
    let name = if taken {
        format!("{}-{}", p.server_name, &id.0.simple().to_string()[24..])
    } else {
        p.server_name.clone()
    };
    tx.execute(
        "INSERT INTO peers (id, team_id, name, peer_hook_url, outbound_token, scopes, max_hops, status,
                            server_name, peer_base_url, peer_team, peer_instance_id, protocol_version, filters, conduct)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9, $12, $13::text::jsonb,
                 $14::text::jsonb)",
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
            &crate::peers::filters_text(&p.filters)?,
            &crate::peers::handshake_conduct_text(&p.conduct)?,
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
