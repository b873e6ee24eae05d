//! The error type handlers return, rendered as `{"error":{"code","message",...}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kite_store::StoreError;
use kite_wire::ApiError;

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
                ApiError::bad_request(
                    "invalid_value",
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
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
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
    let body = ApiError::new(status.as_u16(), code_for(status), message).body();
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
