//! kite's domain states as types: what an outbox row, a peer and an API key can be. Each is
//! stored as text (Postgres `CHECK` constraints name the same values) and converts with
//! `ToSql`/`FromSql`, serde and `Display`; no state is written as a string anywhere else.

use std::fmt;

#[cfg(feature = "postgres")]
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A state with one spelling a value: what a command line or a form offers and reads.
pub trait Spelled: Copy + Send + Sync + 'static {
    /// The stored and wire form.
    fn as_str(self) -> &'static str;
    /// Parses the stored and wire form.
    fn parse(s: &str) -> Option<Self>;
}

macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $var:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $var ),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The stored and wire form.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }

            /// Parses the stored and wire form.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$var),)+ _ => None }
            }
        }

        impl Spelled for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn parse(s: &str) -> Option<Self> {
                $name::parse(s)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "postgres")]
        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }

        #[cfg(feature = "postgres")]
        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let s = <&str as FromSql>::from_sql(ty, raw)?;
                Self::parse(s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)).into())
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

text_enum! {
    /// Where an outbox row (one event for one peer) stands.
    OutboxState {
        /// Waiting for (another) attempt.
        Pending => "pending",
        /// The peer took it.
        Delivered => "delivered",
        /// Every attempt failed; `replay-dead` puts it back.
        Dead => "dead",
        /// Its peer was deleted or revoked before it went out.
        Cancelled => "cancelled",
        /// Routing decided not to send it (see [`SkipReason`]).
        Skipped => "skipped",
    }
}

text_enum! {
    /// Where a peer stands: the handshake and heartbeat state machine (`proposed` →
    /// `accepted` → `active` ⇄ `degraded`) and what an operator set it to (`paused`,
    /// `revoked`). Peers made with the Kite token flow start `active`.
    PeerStatus {
        /// This side asked to peer and waits for the answer.
        Proposed => "proposed",
        /// The handshake is done; no heartbeat has gone both ways yet.
        Accepted => "accepted",
        /// Deliveries flow (and heartbeats do, for a handshake peer).
        Active => "active",
        /// Heartbeats stopped; deliveries still go out and retry.
        Degraded => "degraded",
        /// Deliveries wait (also set by a 410 Gone answer).
        Paused => "paused",
        /// Nothing is routed to it any more, and it is refused here.
        Revoked => "revoked",
    }
}

impl PeerStatus {
    /// Whether deliveries to a peer in this state go out.
    pub fn delivers(self) -> bool {
        matches!(
            self,
            PeerStatus::Accepted | PeerStatus::Active | PeerStatus::Degraded
        )
    }

    /// Whether events are routed to (recorded for) a peer in this state: all but `proposed`
    /// and `revoked`; a paused peer's rows wait.
    pub fn routes(self) -> bool {
        !matches!(self, PeerStatus::Proposed | PeerStatus::Revoked)
    }

    /// The states an operator may set with a PATCH.
    pub const SETTABLE: &'static [PeerStatus] =
        &[PeerStatus::Active, PeerStatus::Paused, PeerStatus::Revoked];
}

text_enum! {
    /// What an ordered peer's key does once its event went dead.
    #[derive(Default)]
    OnDead {
        /// The key moves on to its next event.
        #[default]
        Skip => "skip",
        /// The key waits until the dead event is resent or cancelled.
        Block => "block",
    }
}

text_enum! {
    /// How an event is sent to a peer: as a structured CloudEvent (the JSON event, what a
    /// kite takes), or in binary mode (`ce-*` headers, the body the provider's bytes, what
    /// an ordinary webhook endpoint takes).
    #[derive(Default)]
    ContentMode {
        /// `application/cloudevents+json`.
        #[default]
        Structured => "structured",
        /// `ce-*` headers and the original body.
        Binary => "binary",
    }
}

impl OnDead {
    /// Whether it is the default (a request need not send it).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl ContentMode {
    /// Whether it is the default (a request need not send it).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

text_enum! {
    /// What delivery has seen of a peer.
    PeerHealth {
        /// The last attempt got through.
        Active => "active",
        /// Recent attempts failed, below the threshold.
        Degraded => "degraded",
        /// Failed the threshold in a row: deliveries are parked and a probe runs.
        Unreachable => "unreachable",
    }
}

text_enum! {
    /// What an API key may do; each level includes the ones below it.
    Permission {
        /// Read events, outbox and peers; open `/ws`.
        Read => "read",
        /// Reserved for writes below admin.
        Write => "write",
        /// Everything.
        Admin => "admin",
    }
}

text_enum! {
    /// Who may federate with a team (`GET/PUT /api/federation/policy`).
    FederationMode {
        /// Any server holding a valid invitation may accept it.
        Open => "open",
        /// Only servers named in `allowed_peers`, with a valid invitation.
        InviteOnly => "invite_only",
        /// Every federation request is refused, existing peers' included.
        Closed => "closed",
    }
}

text_enum! {
    /// How one delivery attempt ended, as an event's story tells it.
    AttemptOutcome {
        /// The peer took it (2xx).
        Delivered => "delivered",
        /// The peer failed (no answer, a timeout, 408, 429, 5xx): tried again.
        Failed => "failed",
        /// The peer refused this message (another 4xx).
        Refused => "refused",
        /// It could not be sent (this side's failure for this message).
        Error => "error",
        /// The peer answered 410 Gone (it is paused).
        Gone => "gone",
        /// The peer revoked this server.
        Revoked => "revoked",
    }
}

text_enum! {
    /// What a peer did with an event it took (its 2xx answer's `status`).
    PeerAnswer {
        /// Stored as new (202).
        Accepted => "accepted",
        /// It held the event already (200): an earlier attempt or another route got there.
        DuplicateIgnored => "duplicate_ignored",
        /// The event came back to where it started (200): the peer is in its chain.
        LoopIgnored => "loop_ignored",
    }
}

text_enum! {
    /// What an operator did to one delivery, as its story records it.
    OutboxAction {
        /// Sent again now (`POST /api/federation/outbox/{id}/resend`).
        Resend => "resend",
        /// Cancelled while pending (`POST /api/federation/outbox/{id}/cancel`).
        Cancel => "cancel",
        /// Put back in line from `dead` (replay-dead, or replay by filter).
        Replay => "replay",
    }
}

text_enum! {
    /// The least a team's federation traffic must be signed with
    /// (`min_signature_protocol` of its policy).
    SignatureProtocol {
        /// A shared token (Kite peers and trusted senders) or an identity key.
        Token => "token",
        /// An identity key only: shared-token peers and senders are refused.
        Identity => "identity",
    }
}

text_enum! {
    /// What a grant lets a handshake peer do.
    GrantPermission {
        /// Send events of the grant's types here.
        Send => "send",
        /// Pull events of the grant's types from here (backfill).
        Backfill => "backfill",
    }
}

text_enum! {
    /// Why routing skipped a peer for an event.
    SkipReason {
        /// The event already made the peer's `max_hops` hops.
        MaxHops => "max_hops",
        /// The peer already forwarded the event (it is in the chain).
        Loop => "loop",
    }
}

impl Permission {
    /// True if a key with this permission may do what `needed` allows.
    pub fn allows(self, needed: Permission) -> bool {
        self >= needed
    }
}

impl Spelled for kite_wire::provider::Scheme {
    fn as_str(self) -> &'static str {
        self.name()
    }

    fn parse(s: &str) -> Option<Self> {
        kite_wire::provider::Scheme::parse(s)
    }
}
