//! API errors with stable machine-readable codes.

use serde_json::{json, Map, Value};

/// An error answered to an API or hook caller as `{"error":{"code","message",...}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status code (4xx or 5xx).
    pub status: u16,
    /// Stable snake_case code callers can match on.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Extra fields merged into the error object (for example `field` or `max_bytes`).
    pub extra: Map<String, Value>,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// 400 `validation_error` naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::new(400, "validation_error", message).with("field", json!(field))
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 413 `payload_too_large` with the limit.
    pub fn payload_too_large(max_bytes: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("body exceeds {max_bytes} bytes"),
        )
        .with("max_bytes", json!(max_bytes))
    }

    /// 503 `unavailable` with a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "unavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// 500 `internal` (the message must not carry internals such as SQL or secrets).
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal error")
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
        serde_json::to_value(body).unwrap_or_else(|_| json!({"error": {"code": self.code}}))
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
    fn body_has_code_message_and_extras() {
        let e = ApiError::validation("max_hops", "must be 1..=16");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.body(),
            json!({"error":{"code":"validation_error","message":"must be 1..=16","field":"max_hops"}})
        );
    }
}
