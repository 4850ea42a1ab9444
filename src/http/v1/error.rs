//! The v1 error answers, mapped once: the Python server's FastAPI shapes
//! (`{"detail": "..."}`, and for a malformed body FastAPI's list of problems), so v1
//! clients that look at `detail` keep working. Native routes keep `{error, detail}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::blobs::BlobError;
use crate::error::{blob_code, http_status, ApiError, RelayError};
use crate::http::body::BodyRefusal;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::store::StoreError;

/// Why a v1 request was refused.
#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    /// Any failure of the v1 signature check: undecodable key, base64 or signature.
    #[error("Invalid signature")]
    InvalidSignature,
    #[error("Rate limit exceeded")]
    RateLimited { retry_after_ms: u64 },
    /// A body or parameter FastAPI's validation would have refused (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Everything else the relay refuses, with its native status.
    #[error("{detail}")]
    Relay { code: ErrorCode, detail: String },
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        V1Error::Relay {
            code: e.code,
            detail: e.detail,
        }
    }
}

impl From<RelayError> for V1Error {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::RateLimited { retry_after_ms, .. } => {
                V1Error::RateLimited { retry_after_ms }
            }
            RelayError::Protocol(ProtocolError::BadSignature { .. }) => V1Error::InvalidSignature,
            // A key FastAPI's model would refuse (`to`, `enc_pub`): 422 in its shape. A
            // message that parses but carries nothing (zero bytes) is a 400.
            RelayError::Protocol(ProtocolError::InvalidKey { .. }) => {
                V1Error::Unprocessable(e.to_string())
            }
            other => V1Error::Relay {
                code: other.code(),
                detail: other.to_string(),
            },
        }
    }
}

impl From<ProtocolError> for V1Error {
    fn from(e: ProtocolError) -> Self {
        RelayError::from(e).into()
    }
}

impl From<StoreError> for V1Error {
    fn from(e: StoreError) -> Self {
        RelayError::from(e).into()
    }
}

impl From<BlobError> for V1Error {
    fn from(e: BlobError) -> Self {
        V1Error::Relay {
            code: blob_code(&e),
            detail: e.to_string(),
        }
    }
}

impl From<BodyRefusal> for V1Error {
    fn from(r: BodyRefusal) -> Self {
        V1Error::status(r.code(), r.detail())
    }
}

impl V1Error {
    /// A refusal with a native code's status and `{"detail": ...}`.
    pub fn status(code: ErrorCode, detail: impl Into<String>) -> Self {
        V1Error::Relay {
            code,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            V1Error::InvalidSignature => (
                StatusCode::BAD_REQUEST,
                json!({ "detail": "Invalid signature" }),
            ),
            V1Error::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "detail": "Rate limit exceeded" }),
            ),
            V1Error::Unprocessable(msg) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "detail": [{ "loc": ["body"], "msg": msg, "type": "value_error" }] }),
            ),
            V1Error::Relay { code, detail } => (http_status(*code), json!({ "detail": detail })),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let V1Error::RateLimited { retry_after_ms } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).max(1).to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
