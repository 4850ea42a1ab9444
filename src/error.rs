//! Errors of the relay's boundaries and their one mapping to the edges: HTTP status +
//! JSON `{error, detail}`, WebSocket error frames, and WebSocket close codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::blobs::BlobError;
use crate::protocol::{ErrorCode, ProtocolError, ServerFrame};
use crate::store::StoreError;

/// Why the write or read path refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(
        "rate limit exceeded for this {}; retry in {retry_after_ms} ms",
        scope_name(scope)
    )]
    RateLimited {
        scope: &'static str,
        retry_after_ms: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// An ephemeral envelope for a session on another node could not be handed to
    /// Redis pub/sub. Nothing was stored (ephemeral envelopes never are), so the sender
    /// may simply retry; the message store itself may be fine.
    #[error("the ephemeral envelope could not be passed to the other nodes: {0}")]
    EphemeralUnpublished(String),
    /// The verifier stage holds `verify_queue_depth` envelopes: refused before any work.
    #[error("the relay is busy: {queue_depth} signatures are waiting to be verified (verify_queue_depth); retry shortly")]
    VerifierFull { queue_depth: usize },
}

/// The words for a rate-limit scope label in error details.
fn scope_name(scope: &str) -> &'static str {
    match scope {
        "ip" => "client IP",
        crate::relay::BAD_SIGNATURES => "client IP's bad signatures",
        _ => "sender key",
    }
}

impl RelayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RelayError::Protocol(e) => e.code(),
            RelayError::RateLimited { .. } => ErrorCode::RateLimited,
            RelayError::Store(StoreError::InboxFull { .. }) => ErrorCode::InboxFull,
            RelayError::Store(StoreError::StoreFull { .. } | StoreError::RedisFull) => {
                ErrorCode::StoreFull
            }
            RelayError::Store(StoreError::Unavailable(_) | StoreError::Misconfigured(_))
            | RelayError::ShuttingDown
            | RelayError::EphemeralUnpublished(_)
            | RelayError::VerifierFull { .. } => ErrorCode::Unavailable,
            RelayError::Store(StoreError::Snapshot(_)) => ErrorCode::Internal,
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            RelayError::RateLimited { retry_after_ms, .. } => Some(*retry_after_ms),
            RelayError::VerifierFull { .. } => Some(crate::relay::VERIFY_BUSY_RETRY_MS),
            _ => None,
        }
    }

    /// The error frame answering a WebSocket `send` (or other frame).
    pub fn to_frame(&self, reference: Option<u64>) -> ServerFrame {
        ServerFrame::Error {
            code: self.code(),
            detail: self.to_string(),
            reference,
            retry_after_ms: self.retry_after_ms(),
        }
    }
}

/// The error code of an attachment store refusal.
pub fn blob_code(e: &BlobError) -> ErrorCode {
    match e {
        BlobError::TooLarge { .. } => ErrorCode::TooLarge,
        BlobError::StoreFull { .. } | BlobError::RedisFull | BlobError::SenderFull { .. } => {
            ErrorCode::StoreFull
        }
        BlobError::Taken => ErrorCode::Forbidden,
        BlobError::Unavailable(_) | BlobError::Busy { .. } => ErrorCode::Unavailable,
    }
}

/// How long to wait before retrying an attachment request the relay was too busy for.
pub const BLOB_BUSY_RETRY_MS: u64 = 1000;

/// The HTTP status for each error code; the one table for the HTTP edge.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Malformed | ErrorCode::UnknownFrame => StatusCode::BAD_REQUEST,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidKey | ErrorCode::BadSignature | ErrorCode::StaleTimestamp => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized | ErrorCode::AuthRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::AlreadyAuthenticated => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::CursorAhead => StatusCode::CONFLICT,
        ErrorCode::RateLimited | ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::InboxFull | ErrorCode::StoreFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
    }
}

/// WebSocket close codes the relay uses (documented in `proto/PROTOCOL.md`).
pub mod close_code {
    /// Relay shutting down; reconnect to another node or later.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke WebSocket framing (RFC 6455): an unmasked frame, RSV bits,
    /// a reserved opcode, an orphan continuation, a control frame over 125 bytes.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame or message was larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The relay hit a bug while serving the session.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Another session authenticated with the same key.
    pub const REPLACED: u16 = 4001;
    /// The client did not read fast enough; its messages stay queued.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// Authentication failed or a frame came before authentication.
    pub const AUTH_FAILED: u16 = 4003;
    /// No authentication within the allowed time.
    pub const AUTH_TIMEOUT: u16 = 4004;
    /// No frame or pong within the ping deadline.
    pub const PING_TIMEOUT: u16 = 4005;
    /// The message store is unavailable; retry with backoff.
    pub const UNAVAILABLE: u16 = 4006;
    /// The inbox moved to a new epoch during the session; reconnect at once with the
    /// cursor, and the relay reports the gap.
    pub const RESYNC: u16 = 4007;
    /// The session sent `max_bad_signatures_per_session` envelopes whose signature
    /// failed (preceded by the last `bad_signature` error frame).
    pub const BAD_SIGNATURES: u16 = 4008;
}

/// An HTTP error answer: status from the code, JSON `{error, detail}`, and
/// `Retry-After` (seconds, rounded up) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorCode,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            retry_after_ms: None,
        }
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        ApiError {
            code: e.code(),
            detail: e.to_string(),
            retry_after_ms: e.retry_after_ms(),
        }
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        RelayError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        RelayError::from(e).into()
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let retry_after_ms = matches!(e, BlobError::Busy { .. }).then_some(BLOB_BUSY_RETRY_MS);
        ApiError {
            retry_after_ms,
            ..ApiError::new(blob_code(&e), e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            detail: &self.detail,
            retry_after_ms: self.retry_after_ms,
        };
        let mut resp = (http_status(self.code), axum::Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_ephemeral_publish_is_its_own_error_answered_503() {
        let e = RelayError::EphemeralUnpublished("redis: connection refused".into());
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(http_status(e.code()), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !e.to_string().contains("message store"),
            "the store is not what failed: {e}"
        );
        assert!(matches!(
            e.to_frame(Some(3)),
            ServerFrame::Error {
                code: ErrorCode::Unavailable,
                reference: Some(3),
                ..
            }
        ));
    }
}
