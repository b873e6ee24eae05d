//! The error type handlers return, rendered as `{"error":{"code","message",...}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kite_protocol::ApiError;
use kite_store::StoreError;

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
        if let Some(s) = self.0.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}
