//! What an attempt's result means: classified once, and what it does to its row and its
//! peer decided by one pure function ([`settle`]).

use kite_wire::Code;

/// How one delivery attempt ended. Every attempt is classified here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered 2xx.
    Delivered,
    /// The peer is failing (transport error, timeout, 408, 429, 5xx, a refused
    /// destination): counts toward `unreachable`, parking and probing.
    PeerFailure,
    /// This message fails (any other 4xx, or a local failure such as an event that cannot
    /// be sent): attempts + 1 and backoff, `dead` after the last attempt; the peer is not
    /// parked for it.
    MessageFailure,
    /// 410 Gone: the peer no longer takes deliveries; it is paused.
    Gone,
    /// The peer revoked this server (403 `peer_revoked`): it is revoked here too.
    Revoked,
}

/// The codes a kite receiver refuses a sender with (not one message): every delivery would
/// be refused alike until the settings on one side change.
pub const SENDER_REFUSED: &[Code] = &[
    Code::UnknownSender,
    Code::InvalidSignature,
    Code::StaleTimestamp,
    Code::Unauthorized,
    Code::WrongDestination,
    Code::PeerNotAllowed,
    Code::IdentitySignaturesRequired,
];

/// Classifies a refusal by the error code the peer answered with, where the code says
/// more than the status: `peer_revoked` ends the peering; `federation_closed` and
/// `replayed_request` are the peer's (retried, signed anew); a 401 or 403 refusing the
/// sender ([`SENDER_REFUSED`]) is the peer's too, so the peer's health and `last_error` say
/// so and its rows wait instead of dying one by one; anything else as its status says (a
/// 401 or 403 without such a code stays the message's, so one payload a receiver refuses
/// never holds up the rest).
/// The peer's code is its own text: one kite does not know reads as none.
pub fn classify_refusal(status: u16, code: Option<&str>) -> Outcome {
    match code.and_then(Code::parse) {
        Some(Code::PeerRevoked) => Outcome::Revoked,
        // Its policy may open again; and a request it took already (its answer was lost, and
        // the retry went out in the same second): the next attempt is signed anew.
        Some(Code::FederationClosed | Code::ReplayedRequest) => Outcome::PeerFailure,
        Some(c) if matches!(status, 401 | 403) && SENDER_REFUSED.contains(&c) => {
            Outcome::PeerFailure
        }
        _ => classify_status(status),
    }
}

/// Classifies an HTTP status the peer answered.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        408 | 429 => Outcome::PeerFailure,
        400..=499 => Outcome::MessageFailure,
        // 1xx and 3xx (redirects are never followed) and 5xx: the peer is not working.
        _ => Outcome::PeerFailure,
    }
}

/// Classifies a request that got no answer: building it locally (an unencodable header)
/// is the message's failure; anything on the way to the peer is the peer's.
pub fn classify_error(e: &reqwest::Error) -> Outcome {
    if e.is_builder() {
        Outcome::MessageFailure
    } else {
        Outcome::PeerFailure
    }
}

/// What one attempt does to its outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange {
    /// The peer took it.
    Delivered,
    /// Another attempt later; `attempts` failures so far (its retry tier).
    Retry {
        /// Failed attempts after this one.
        attempts: u32,
    },
    /// No attempts left.
    Dead {
        /// Failed attempts after this one.
        attempts: u32,
    },
    /// Left as it is: the row waits, unspent (its peer is down while it is parked, or paused
    /// by a 410).
    Unchanged,
}

/// What one attempt does to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEffect {
    /// The peer answered 2xx: its failures in a row end.
    Reached,
    /// One more failure in a row (toward `unreachable`).
    Failed,
    /// The peer is paused (410 Gone).
    Paused,
    /// The peer revoked this server.
    Revoked,
    /// Nothing: the message failed, not the peer.
    Untouched,
}

/// Decides what an attempt with `outcome` does to a row that had failed `attempts_before`
/// times, with `max_attempts` allowed, and to its peer. A `parked` row (tried by the probe
/// of an unreachable peer) spends no attempt on the peer being down.
pub fn settle(
    outcome: Outcome,
    attempts_before: i32,
    max_attempts: u32,
    parked: bool,
) -> (RowChange, PeerEffect) {
    let spend = || {
        let attempts = u32::try_from(attempts_before.max(0)).unwrap_or(0) + 1;
        if attempts >= max_attempts {
            RowChange::Dead { attempts }
        } else {
            RowChange::Retry { attempts }
        }
    };
    match outcome {
        Outcome::Delivered => (RowChange::Delivered, PeerEffect::Reached),
        Outcome::Gone => (RowChange::Unchanged, PeerEffect::Paused),
        Outcome::Revoked => (RowChange::Unchanged, PeerEffect::Revoked),
        Outcome::PeerFailure if parked => (RowChange::Unchanged, PeerEffect::Failed),
        Outcome::PeerFailure => (spend(), PeerEffect::Failed),
        Outcome::MessageFailure => (spend(), PeerEffect::Untouched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified_once() {
        for (status, want) in [
            (200, Outcome::Delivered),
            (204, Outcome::Delivered),
            (400, Outcome::MessageFailure),
            (401, Outcome::MessageFailure),
            (413, Outcome::MessageFailure),
            (422, Outcome::MessageFailure),
            (408, Outcome::PeerFailure),
            (429, Outcome::PeerFailure),
            (410, Outcome::Gone),
            (500, Outcome::PeerFailure),
            (503, Outcome::PeerFailure),
            (302, Outcome::PeerFailure),
        ] {
            assert_eq!(classify_status(status), want, "{status}");
        }
        assert_eq!(
            classify_refusal(403, Some("peer_revoked")),
            Outcome::Revoked
        );
        assert_eq!(
            classify_refusal(403, Some("federation_closed")),
            Outcome::PeerFailure
        );
        assert_eq!(
            classify_refusal(401, Some("replayed_request")),
            Outcome::PeerFailure
        );
        assert_eq!(
            classify_refusal(403, Some("not_granted")),
            Outcome::MessageFailure
        );
        for sender_refused in ["unknown_sender", "invalid_signature"] {
            assert_eq!(
                classify_refusal(401, Some(sender_refused)),
                Outcome::PeerFailure,
                "{sender_refused}"
            );
        }
        // One message refused, or a 401/403 that does not say it refuses the sender.
        for (status, code) in [
            (401, Some("invalid_origin_signature")),
            (403, None),
            (403, Some("waf_blocked")),
        ] {
            assert_eq!(
                classify_refusal(status, code),
                Outcome::MessageFailure,
                "{status} {code:?}"
            );
        }
        assert_eq!(classify_refusal(503, None), Outcome::PeerFailure);
    }

    #[test]
    fn settle_decides_row_and_peer() {
        use Outcome::*;
        assert_eq!(
            settle(Delivered, 2, 3, false),
            (RowChange::Delivered, PeerEffect::Reached)
        );
        assert_eq!(
            settle(MessageFailure, 0, 3, false),
            (RowChange::Retry { attempts: 1 }, PeerEffect::Untouched)
        );
        assert_eq!(
            settle(MessageFailure, 2, 3, true),
            (RowChange::Dead { attempts: 3 }, PeerEffect::Untouched),
            "a message failure spends an attempt even while parked"
        );
        assert_eq!(
            settle(PeerFailure, 1, 3, false),
            (RowChange::Retry { attempts: 2 }, PeerEffect::Failed)
        );
        assert_eq!(
            settle(PeerFailure, 2, 3, true),
            (RowChange::Unchanged, PeerEffect::Failed),
            "a parked row spends nothing on the peer being down"
        );
        assert_eq!(
            settle(Gone, 0, 3, false),
            (RowChange::Unchanged, PeerEffect::Paused)
        );
        assert_eq!(
            settle(Revoked, 0, 3, false),
            (RowChange::Unchanged, PeerEffect::Revoked)
        );
        assert_eq!(
            settle(PeerFailure, -5, 1, false),
            (RowChange::Dead { attempts: 1 }, PeerEffect::Failed)
        );
    }
}
