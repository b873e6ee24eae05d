//! The ids of the pipeline's spine, each its own type so that one is never passed for
//! another: a team, a peer, an outbox row (one delivery of one event to one peer), a stored event's
//! sequence number, and an event's place in a batch before it is stored (it has no sequence
//! number yet). With the `postgres` feature they are read and written as their column types.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A team's id: the `{team}` of its hook URLs and the owner of every row.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(value_type = String)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(transparent)
)]
#[serde(transparent)]
pub struct TeamId(pub String);

impl TeamId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TeamId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TeamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for TeamId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for TeamId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl PartialEq<str> for TeamId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TeamId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A peer's id.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(value_type = uuid::Uuid)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(transparent)
)]
#[serde(transparent)]
pub struct PeerId(pub Uuid);

/// An outbox row's id: one delivery of one event to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(transparent)
)]
#[serde(transparent)]
pub struct OutboxId(pub i64);

/// A stored event's sequence number (its team's stream cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(transparent)
)]
#[serde(transparent)]
pub struct EventSeq(pub i64);

/// An event's place in a batch before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchPos(pub usize);

impl From<Uuid> for PeerId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

/// Each id shows as the value it wraps.
macro_rules! display_as_inner {
    ($($id:ty),+) => {$(
        impl std::fmt::Display for $id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

display_as_inner!(TeamId, PeerId, OutboxId, EventSeq);

/// One delivery to hand on: the outbox row and the peer it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The row.
    pub id: OutboxId,
    /// Its peer.
    pub peer: PeerId,
}
