//! Reading a request body within the route's limits, for every route that reads one
//! (`POST /v1/send`, `POST /v1/blobs`, v1 `POST /send` and `POST /upload`): a declared
//! `Content-Length` over the limit is refused (413) before a byte of the body is read,
//! at most the limit is read of a body without one, and the whole body must arrive
//! within the route's deadline (408 `timeout`), so a sender that trickles or stops
//! cannot hold a connection and a growing buffer for as long as it likes.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use std::time::Duration;

use crate::error::ApiError;
use crate::protocol::ErrorCode;

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Declared or found to be over `limit` bytes.
    TooLarge { limit: usize },
    /// Not all there within the deadline, which the config key `key` sets.
    Timeout {
        deadline: Duration,
        key: &'static str,
    },
    /// The connection ended before the declared length.
    Cut,
}

impl BodyRefusal {
    pub fn code(self) -> ErrorCode {
        match self {
            BodyRefusal::TooLarge { .. } => ErrorCode::TooLarge,
            BodyRefusal::Timeout { .. } => ErrorCode::Timeout,
            BodyRefusal::Cut => ErrorCode::Malformed,
        }
    }

    /// The `reason` label of `whispr_http_bodies_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            BodyRefusal::TooLarge { .. } => "too_large",
            BodyRefusal::Timeout { .. } => "timeout",
            BodyRefusal::Cut => "cut",
        }
    }

    pub fn detail(self) -> String {
        match self {
            BodyRefusal::TooLarge { limit } => {
                format!("the body is over the limit of {limit} bytes")
            }
            BodyRefusal::Timeout { deadline, key } => format!(
                "the body did not arrive within {} s ({key})",
                deadline.as_secs()
            ),
            BodyRefusal::Cut => "the body ended before its Content-Length".to_string(),
        }
    }
}

impl From<BodyRefusal> for ApiError {
    fn from(r: BodyRefusal) -> Self {
        ApiError::new(r.code(), r.detail())
    }
}

/// The most bytes a body can bring: its declared length, or `limit` when it declares
/// none; `TooLarge` when it declares more than `limit`, before any of it is read.
pub fn declared_size(headers: &HeaderMap, limit: usize) -> Result<u64, BodyRefusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(BodyRefusal::TooLarge { limit }),
        Some(n) => Ok(n),
        None => Ok(limit as u64),
    }
}

/// The body, all of it, within `limit` bytes and `deadline` (named by the config key
/// `key` in a refusal).
/// A send body (native `POST /v1/send`, v1 `POST /send`): at most one frame
/// (`max_frame_bytes`), whole within `http_body_timeout_seconds`; a refusal counts as a
/// refused message and as a refused body of `route`.
pub async fn read_send(
    app: &super::App,
    headers: &HeaderMap,
    body: Body,
    route: &'static str,
) -> Result<Bytes, BodyRefusal> {
    read_limited(
        headers,
        body,
        app.config.max_frame_bytes(),
        Duration::from_secs(app.config.http_body_timeout_seconds),
        "http_body_timeout_seconds",
    )
    .await
    .inspect_err(|r| {
        app.relay.metrics().refused(r.code());
        app.relay.metrics().body_refused(route, r.label());
    })
}

pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
    key: &'static str,
) -> Result<Bytes, BodyRefusal> {
    declared_size(headers, limit)?;
    // With a declared length (already checked against `limit`, and enforced by the
    // HTTP layer) a failed read is a broken body (the client went away), not one over
    // the limit.
    let declared = headers.contains_key(header::CONTENT_LENGTH);
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) if declared => Err(BodyRefusal::Cut),
        Ok(Err(_)) => Err(BodyRefusal::TooLarge { limit }),
        Err(_) => Err(BodyRefusal::Timeout { deadline, key }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_length(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(n).unwrap());
        h
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_unread() {
        assert_eq!(declared_size(&with_length("10"), 10), Ok(10));
        assert_eq!(
            declared_size(&with_length("1000000000000"), 10),
            Err(BodyRefusal::TooLarge { limit: 10 })
        );
        assert_eq!(declared_size(&HeaderMap::new(), 10), Ok(10));
    }

    #[tokio::test]
    async fn an_undeclared_body_is_read_only_up_to_the_limit() {
        let r = read_limited(
            &HeaderMap::new(),
            Body::from(vec![0u8; 11]),
            10,
            Duration::from_secs(5),
            "k",
        )
        .await;
        assert_eq!(r, Err(BodyRefusal::TooLarge { limit: 10 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out_naming_the_key() {
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let r = read_limited(
            &with_length("5"),
            never,
            10,
            Duration::from_secs(3),
            "http_body_timeout_seconds",
        )
        .await;
        let refusal = r.unwrap_err();
        assert_eq!(refusal.code(), ErrorCode::Timeout);
        assert_eq!(
            refusal.detail(),
            "the body did not arrive within 3 s (http_body_timeout_seconds)"
        );
    }
}
