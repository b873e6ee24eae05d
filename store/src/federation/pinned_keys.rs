//! The keys pinned for a peer, and the rules that keep them its own and bounded.

use kite_wire::ids::PeerId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kite_wire::peering::{PublishedKey, MAX_KEYS};

use crate::{Result, RowExt, Store};

/// Most rows pinned for one peer: [`MAX_KEYS`] live keys, and the ended ones remembered for
/// [`ENDED_KEPT`] so an ended key never comes back. New keys wait while [`MAX_KEYS`] ended
/// ones are remembered, so at most `MAX_KEYS - 1` of them and the `MAX_KEYS` ended by one
/// change: a bound that holds by construction, never by forgetting an ended key early.
pub const MAX_PINNED_ROWS: i64 = 3 * MAX_KEYS as i64;
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
/// - a new key is pinned while fewer than [`MAX_KEYS`] are live and fewer than [`MAX_KEYS`]
///   ended ones are remembered (a peer that rotates faster than that waits for them to age
///   out, [`ENDED_KEPT`]);
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
    let remembered = known.iter().filter(|k| ended(k)).count();
    for k in listed {
        match known.iter().find(|p| p.key_id == k.key_id) {
            Some(p) if p.public_key != k.public_key || ended(p) => {}
            Some(p) => {
                let until = earlier(p.valid_until, k.valid_until);
                if until != p.valid_until {
                    plan.push(Pin::Until(p.key_id.clone(), until));
                }
            }
            None if !ended(k) && live < MAX_KEYS && remembered < MAX_KEYS => {
                live += 1;
                plan.push(Pin::Add(k.clone()));
            }
            None => {}
        }
    }
    plan
}

impl Store {
    /// The keys pinned for a peer, newest first.
    pub async fn peer_keys(&self, peer_id: PeerId) -> Result<Vec<PublishedKey>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT key_id, public_key, valid_from, valid_until FROM peer_keys
                 WHERE peer_id = $1 ORDER BY valid_from DESC",
                &[&peer_id],
            )
            .await?;
        rows.iter().map(published_key).collect()
    }

    /// Pins what a peer publishes now, by the rules that keep a peer's keys its own and
    /// bounded ([`plan_pins`]): a key's validity only ever shortens, an ended key never comes
    /// back, at most [`MAX_KEYS`] live keys and [`MAX_PINNED_ROWS`] rows, and a message signed
    /// with an older key cannot end a newer one. Answers whether anything changed.
    pub async fn pin_keys(
        &self,
        peer_id: PeerId,
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
        let known = rows.iter().map(published_key).collect::<Result<Vec<_>>>()?;
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
        // Ended keys are remembered a while (their ids refused), then pruned; the plan keeps
        // a peer within MAX_PINNED_ROWS rows.
        let kept_since = now - chrono::Duration::from_std(ENDED_KEPT).unwrap_or_default();
        tx.execute(
            "DELETE FROM peer_keys WHERE peer_id = $1 AND valid_until < $2",
            &[&peer_id, &kept_since],
        )
        .await?;
        tx.commit().await?;
        Ok(!plan.is_empty())
    }
}

/// A `peer_keys` row read as `key_id, public_key, valid_from, valid_until`.
fn published_key(r: &tokio_postgres::Row) -> Result<PublishedKey> {
    Ok(PublishedKey {
        key_id: r.col(0)?,
        public_key: r.col(1)?,
        valid_from: r.col(2)?,
        valid_until: r.col(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
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
    fn a_peer_rotating_faster_than_ended_keys_are_remembered_waits() {
        let now = at(1000);
        // Eight keys ended within the hour, one live.
        let mut known: Vec<PublishedKey> = (0..MAX_KEYS)
            .map(|i| key(&format!("old{i}"), i as i64, Some(900)))
            .collect();
        known.push(key("live", 950, None));
        let listed = vec![key("live", 950, None), key("next", 990, None)];
        // The next key waits: pinning it would mean forgetting an ended one early.
        assert_eq!(
            plan_pins(&known, &listed, KeySource::Descriptor, now),
            vec![]
        );
        // Once one has aged out (pruned), it is pinned.
        known.remove(0);
        assert_eq!(
            plan_pins(&known, &listed, KeySource::Descriptor, now),
            vec![Pin::Add(key("next", 990, None))]
        );
        // An ended key listed again never comes back, however many were remembered.
        let again = vec![key("live", 950, None), key("old3", 3, None)];
        assert_eq!(
            plan_pins(&known, &again, KeySource::Descriptor, now),
            vec![]
        );
    }
}
