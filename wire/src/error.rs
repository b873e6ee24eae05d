//! API errors with stable machine-readable codes: every code is a [`Code`], spelled once
//! (here), with the one HTTP status it is answered with.

use serde_json::{json, Map, Value};

/// Defines [`Code`]: each variant with its wire spelling and its HTTP status.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal, $status:literal;)*) => {
        /// Every stable error code kite answers with (`{"error":{"code":...}}`, the `/ws`
        /// calls' `code`), each with one spelling and one HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it is written on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The HTTP status an error with this code is answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// The code `text` spells, if it is one of kite's.
            pub fn parse(text: &str) -> Option<Code> {
                match text {
                    $($text => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// The caller's peer entry for this server exists already.
    AlreadyPeered = "already_peered", 409;
    /// A request the framework refused without a more specific code.
    BadRequest = "bad_request", 400;
    /// A batch with more events than a request may carry.
    BatchTooLarge = "batch_too_large", 413;
    /// A resource with that name exists already.
    Conflict = "conflict", 409;
    /// A server's descriptor does not match what was pinned for it.
    DescriptorMismatch = "descriptor_mismatch", 401;
    /// This team takes no new peers.
    FederationClosed = "federation_closed", 403;
    /// The key may not do this.
    Forbidden = "forbidden", 403;
    /// A destination URL kite will not send to (private address, bad scheme).
    ForbiddenDestination = "forbidden_destination", 400;
    /// The team's policy wants identity-signed requests.
    IdentitySignaturesRequired = "identity_signatures_required", 403;
    /// Something failed inside kite (no details are answered).
    Internal = "internal", 500;
    /// A CloudEvent attribute with a wrong type or value.
    InvalidAttribute = "invalid_attribute", 400;
    /// A batch body that is not a batch.
    InvalidBatch = "invalid_batch", 400;
    /// A body that cannot be read.
    InvalidBody = "invalid_body", 400;
    /// A `kitefedchain` that does not describe the event's way.
    InvalidChain = "invalid_chain", 400;
    /// A body that is not a CloudEvent.
    InvalidCloudevent = "invalid_cloudevent", 400;
    /// A `data_base64` or text that cannot be decoded.
    InvalidEncoding = "invalid_encoding", 400;
    /// A CloudEvent extension with a wrong name or value.
    InvalidExtension = "invalid_extension", 400;
    /// No invitation has this token.
    InvalidInvitation = "invalid_invitation", 401;
    /// A body that is not JSON.
    InvalidJson = "invalid_json", 400;
    /// A server's published keys cannot be used.
    InvalidKeys = "invalid_keys", 400;
    /// An origin signature that does not verify.
    InvalidOriginSignature = "invalid_origin_signature", 401;
    /// A `/ws` call's parameters are wrong.
    InvalidParams = "invalid_params", 400;
    /// A server name that is not a DNS-like name.
    InvalidServerName = "invalid_server_name", 400;
    /// A signature that is missing or does not verify.
    InvalidSignature = "invalid_signature", 401;
    /// A CloudEvent `source` that cannot be used.
    InvalidSource = "invalid_source", 400;
    /// Peering terms that cannot be read.
    InvalidTerms = "invalid_terms", 400;
    /// A value the database cannot store or search for.
    InvalidValue = "invalid_value", 400;
    /// The invitation expired.
    InvitationExpired = "invitation_expired", 401;
    /// The invitation was used already.
    InvitationUsed = "invitation_used", 401;
    /// The method is not served on this path.
    MethodNotAllowed = "method_not_allowed", 405;
    /// This server has no public URL to name in an invitation.
    NoPublicUrl = "no_public_url", 503;
    /// The peer was not made by a handshake (it has no keys or grants).
    NotAHandshakePeer = "not_a_handshake_peer", 400;
    /// No such resource.
    NotFound = "not_found", 404;
    /// The caller holds no grant for this.
    NotGranted = "not_granted", 403;
    /// The delivery is not pending, so it cannot be cancelled.
    NotPending = "not_pending", 409;
    /// The peer did not ask for this grant.
    NotRequested = "not_requested", 400;
    /// The delivery cannot be resent: it is pending (in line already), cancelled (its
    /// message may still be queued) or skipped by routing (never sent).
    NotResendable = "not_resendable", 409;
    /// A body over the limit.
    PayloadTooLarge = "payload_too_large", 413;
    /// The team's policy does not allow this server.
    PeerNotAllowed = "peer_not_allowed", 403;
    /// Another server refused with a code kite does not know.
    PeerRefused = "peer_refused", 502;
    /// The calling peer was revoked.
    PeerRevoked = "peer_revoked", 403;
    /// Another server could not be reached or answered nonsense.
    PeerUnreachable = "peer_unreachable", 502;
    /// Another server answered with terms this side does not accept.
    PeeringTermsRefused = "peering_terms_refused", 502;
    /// Too many requests: wait for `Retry-After`.
    RateLimited = "rate_limited", 429;
    /// A server-to-server request that was taken once already.
    ReplayedRequest = "replayed_request", 401;
    /// A CloudEvent extension only kite may set.
    ReservedExtension = "reserved_extension", 400;
    /// A server asked to peer with itself.
    SelfPeering = "self_peering", 400;
    /// Shared tokens are still in use by peers.
    SharedTokensInUse = "shared_tokens_in_use", 409;
    /// The source requires signed webhooks.
    SignatureRequired = "signature_required", 401;
    /// A signed timestamp too far from now.
    StaleTimestamp = "stale_timestamp", 401;
    /// No such team.
    TeamNotFound = "team_not_found", 404;
    /// The token is in use by a peer.
    TokenInUse = "token_in_use", 409;
    /// JSON nested too deep.
    TooDeep = "too_deep", 400;
    /// No valid credentials.
    Unauthorized = "unauthorized", 401;
    /// A dependency is down: retry later.
    Unavailable = "unavailable", 503;
    /// A request field this endpoint does not take.
    UnknownField = "unknown_field", 400;
    /// A filter this listing does not have.
    UnknownFilter = "unknown_filter", 400;
    /// A `/ws` call with no such method.
    UnknownMethod = "unknown_method", 404;
    /// No trusted sender matches the request.
    UnknownSender = "unknown_sender", 401;
    /// An event the database cannot store.
    UnstorableEvent = "unstorable_event", 400;
    /// A `/ws` call kite does not support.
    Unsupported = "unsupported", 501;
    /// A content type this endpoint does not take.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// No protocol version in common with the other server.
    UnsupportedProtocol = "unsupported_protocol", 422;
    /// A field with a wrong value (`field` names it).
    ValidationError = "validation_error", 400;
    /// A server-to-server request meant for another server.
    WrongDestination = "wrong_destination", 401;
    /// The server at that URL is not the one named.
    WrongServer = "wrong_server", 502;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code equals its wire spelling (what tests and callers holding text compare with).
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error answered to an API or hook caller as `{"error":{"code","message",...}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status code (4xx or 5xx): the code's own, unless another server's refusal is
    /// passed on with its status.
    pub status: u16,
    /// Stable snake_case code callers can match on.
    pub code: Code,
    /// Human-readable explanation.
    pub message: String,
    /// Extra fields merged into the error object (for example `field` or `max_bytes`).
    pub extra: Map<String, Value>,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` (and its status) and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// The same error answered with another status (another server's refusal passed on).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// 400 `validation_error` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::new(Code::ValidationError, message).with("field", json!(field))
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    /// 413 `payload_too_large` with the limit.
    pub fn payload_too_large(max_bytes: usize) -> Self {
        Self::new(
            Code::PayloadTooLarge,
            format!("body exceeds {max_bytes} bytes"),
        )
        .with("max_bytes", json!(max_bytes))
    }

    /// 503 `unavailable` with a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(Code::Unavailable, message);
        e.retry_after = Some(1);
        e
    }

    /// 500 `internal` (the message must not carry internals such as SQL or secrets).
    pub fn internal() -> Self {
        Self::new(Code::Internal, "internal error")
    }

    /// Adds an extra field to the error object.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The JSON body `{"error":{...}}`.
    pub fn body(&self) -> Value {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                extra: self.extra.clone(),
            },
        };
        serde_json::to_value(body)
            .unwrap_or_else(|_| json!({"error": {"code": self.code.as_str()}}))
    }
}

/// The body of every error answer: `{"error":{"code","message",...}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error object of an [`ErrorBody`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code callers can match on (`validation_error`, `not_found`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Extra fields some codes carry (`field`, `max_bytes`, `pattern`, ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_spelling_that_reads_back() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c:?} spelled twice");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()), "{c:?}");
            let snake = c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(snake, "{c:?}");
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn body_has_code_message_and_extras() {
        let e = ApiError::validation("max_hops", "must be 1..=16");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.body(),
            json!({"error":{"code":"validation_error","message":"must be 1..=16","field":"max_hops"}})
        );
    }
}
