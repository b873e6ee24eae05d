//! The error type handlers return, rendered as `{"error":{"code","message",...}}`, and
//! every conversion of another error into it: the one place a failure becomes an answer.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kite_federation::{FedError, FedRefusal};
use kite_ingest::IngestError;
use kite_store::federation::InvitationRefusal;
use kite_store::StoreError;
use kite_wire::provider::SigError;
use kite_wire::signature::FederationSigError;
use kite_wire::ApiError;
use kite_wire::Code;

/// An [`ApiError`] as an axum response.
#[derive(Debug)]
pub struct ApiErr(pub ApiError);

impl From<ApiError> for ApiErr {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        Self(match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError::unavailable("database unavailable, retry later")
            }
            StoreError::Conflict => ApiError::conflict("a resource with that name already exists"),
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Invalid(m) => {
                tracing::debug!(error = %m, "the database refused a value of a request");
                ApiError::new(
                    Code::InvalidValue,
                    "a value of this request cannot be stored or searched for (text with a NUL \
                     character, or a number or time out of range)",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        })
    }
}

impl From<IngestError> for ApiErr {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Unavailable(m) => StoreError::Unavailable(m).into(),
            IngestError::Unstorable => Self(ApiError::new(
                Code::UnstorableEvent,
                "the database refused this event",
            )),
            IngestError::Internal => Self(ApiError::internal()),
            e @ (IngestError::Full | IngestError::ShuttingDown | IngestError::Stopped) => {
                Self(ApiError::unavailable(e.to_string()))
            }
        }
    }
}

impl From<FedRefusal> for ApiErr {
    fn from(e: FedRefusal) -> Self {
        match e {
            FedRefusal::Api(e) => ApiErr(e),
            FedRefusal::Store(e) => e.into(),
        }
    }
}

/// A failure talking to another server, as this server's answer: the other side's own
/// refusal keeps its status and (when it is one of [`PASSED_ON`]) its code; not reaching
/// it is 502.
impl From<FedError> for ApiErr {
    fn from(e: FedError) -> Self {
        match e {
            FedError::Store(e) => e.into(),
            FedError::Refused {
                status,
                code,
                message,
                ..
            } => {
                let passed = Code::parse(&code)
                    .filter(|c| PASSED_ON.contains(c))
                    .unwrap_or(Code::PeerRefused);
                ApiErr(
                    ApiError::new(
                        passed,
                        format!("the other server refused ({code}): {message}"),
                    )
                    .with_status(status),
                )
            }
            FedError::NoPublicUrl => ApiErr(ApiError::new(Code::NoPublicUrl, e.to_string())),
            e @ (FedError::Unreachable { .. } | FedError::BadAnswer(_)) => {
                ApiErr(ApiError::new(Code::PeerUnreachable, e.to_string()))
            }
        }
    }
}

/// The codes another kite server's refusal keeps when this server passes it on; any other
/// is `peer_refused`.
const PASSED_ON: &[Code] = &[
    Code::InvalidInvitation,
    Code::InvitationUsed,
    Code::InvitationExpired,
    Code::FederationClosed,
    Code::PeerNotAllowed,
    Code::AlreadyPeered,
    Code::PeerRevoked,
    Code::InvalidSignature,
    Code::StaleTimestamp,
    Code::ForbiddenDestination,
    Code::TeamNotFound,
    Code::NotGranted,
    Code::InvalidOriginSignature,
    Code::InvalidChain,
    Code::UnknownSender,
    Code::WrongDestination,
    Code::ReplayedRequest,
    Code::DescriptorMismatch,
    Code::InvalidServerName,
    Code::InvalidKeys,
    Code::InvalidTerms,
    Code::RateLimited,
    Code::NotFound,
];

impl From<SigError> for ApiErr {
    fn from(e: SigError) -> Self {
        ApiErr(match e {
            SigError::Invalid => {
                ApiError::new(Code::InvalidSignature, "signature missing or invalid")
            }
            SigError::Stale => ApiError::new(
                Code::StaleTimestamp,
                "the signed timestamp is more than 5 minutes from now",
            ),
        })
    }
}

impl From<FederationSigError> for ApiErr {
    fn from(e: FederationSigError) -> Self {
        let code = match e {
            FederationSigError::Stale => Code::StaleTimestamp,
            FederationSigError::Invalid | FederationSigError::LegacyNotAllowed => {
                Code::InvalidSignature
            }
        };
        ApiErr(ApiError::new(code, e.to_string()))
    }
}

impl From<InvitationRefusal> for ApiErr {
    fn from(refusal: InvitationRefusal) -> Self {
        let (code, message) = match refusal {
            InvitationRefusal::Unknown => (Code::InvalidInvitation, "no invitation has this token"),
            InvitationRefusal::Used => (Code::InvitationUsed, "this invitation was used already"),
            InvitationRefusal::Expired => (Code::InvitationExpired, "this invitation expired"),
        };
        ApiErr(ApiError::new(code, message))
    }
}

/// Why a `/ws` call failed: answered as `{"ok": false, "payload": {"error": ..., "code":
/// ...}}`, with the same codes as the HTTP API.
#[derive(Debug)]
pub(crate) struct RpcError {
    code: Code,
    message: String,
}

impl RpcError {
    /// A failed call with `code`.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `payload` of the failed response.
    pub(crate) fn payload(&self) -> serde_json::Value {
        serde_json::json!({"error": self.message, "code": self.code})
    }
}

impl From<ApiErr> for RpcError {
    fn from(e: ApiErr) -> Self {
        Self::new(e.0.code, e.0.message)
    }
}

/// A store failure as a `/ws` RPC answers it: an unknown resource, else the database being
/// unavailable (what the public Kite CLI expects of a stream call).
impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => RpcError::new(Code::NotFound, "no such resource"),
            other => {
                tracing::warn!(error = %other, "stream call failed on the database");
                RpcError::new(Code::Unavailable, "the database is unavailable; try again")
            }
        }
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, Json(self.0.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kite\""),
            );
        }
        if let Some(s) = self.0.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}

/// The stable code of an error status that no handler chose (the framework's own answers).
fn code_for(status: StatusCode) -> Code {
    match status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        s if s.is_server_error() => Code::Internal,
        _ => Code::BadRequest,
    }
}

/// Every error answer in the documented form: an error the framework made itself (an
/// unknown route, a wrong method with its `Allow` header, a rejected path or query, a
/// failed WebSocket upgrade) gets `{"error":{"code","message"}}` and a JSON content type.
pub(crate) async fn as_json(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let body = ApiError::new(code_for(status), message)
        .with_status(status.as_u16())
        .body();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        parts.headers.insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kite\""),
        );
    }
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}
