//! What went between a team and its peers: the last day's counts each way, and whether a
//! peer was sent events signed with a given key.

use kite_wire::ids::PeerId;
use std::collections::HashMap;

use crate::{Result, RowExt, Store};

/// Events a team's peers took and sent in the last 24 hours, by peer id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Delivered to the peer.
    pub sent: i64,
    /// Received from the peer (it was the last forwarder).
    pub received: i64,
}

impl Store {
    /// Whether this team sent `peer` one of the latest 1,000 events it holds signed with
    /// `sigkey` (`{server_name} {key_id}`), or, when `or_held`, holds any (the peer may pull
    /// them): the keys a key query of that peer is answered about, so it learns nothing it
    /// did not see.
    pub async fn sent_signed_by(
        &self,
        team_id: &str,
        peer_id: PeerId,
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

    /// Events each of a team's peers took from here and sent here in the last 24 hours.
    pub async fn peer_traffic(&self, team_id: &str) -> Result<HashMap<PeerId, Traffic>> {
        let c = self.conn().await?;
        let mut out: HashMap<PeerId, Traffic> = HashMap::new();
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
