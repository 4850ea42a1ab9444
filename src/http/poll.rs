//! The HTTP fallback: `POST /v1/send` (the same write path as a WebSocket `send`) and
//! `GET /v1/inbox` (a signed read after a cursor; `since` acknowledges through it).

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

use super::{accept_codec, encoded, AppState};
use crate::error::{ApiError, RelayError};
use crate::metrics::DeliveryTransport;
use crate::protocol::{
    Codec, Cursor, ErrorCode, GapReason, HttpAuth, MessageId, ProtocolError, PublicKey,
    WireEnvelope,
};

#[derive(Serialize)]
struct SendAnswer {
    id: MessageId,
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
}

/// Reads a body up to the frame limit and within `http_body_timeout_seconds`, in the
/// codec its Content-Type names. A refused body counts as a refused message.
async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Codec, axum::body::Bytes), ApiError> {
    let codec = match headers.get(header::CONTENT_TYPE) {
        None => Codec::Json,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(Codec::from_content_type)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "Content-Type must be application/json or application/msgpack",
                )
            })?,
    };
    let bytes = super::body::read_send(app, headers, body, "send").await?;
    Ok((codec, bytes))
}

pub async fn send(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (codec, bytes) = read_body(&app, &headers, body).await?;
    let wire: WireEnvelope = codec.decode(&bytes)?;
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let accepted = app.relay.submit(wire, ip).await?;
    let answer = SendAnswer {
        id: accepted.id,
        duplicate: accepted.duplicate,
        online: accepted.online,
    };
    encoded(codec, StatusCode::OK, &answer)
}

#[derive(Serialize)]
struct PolledMessage<'a> {
    seq: u64,
    id: MessageId,
    envelope: &'a crate::protocol::Envelope,
}

#[derive(Serialize)]
struct InboxAnswer<'a> {
    epoch: u64,
    gap: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap_reason: Option<GapReason>,
    messages: Vec<PolledMessage<'a>>,
    /// The cursor to send as `epoch` and `since` next time.
    next: Cursor,
    /// More messages are queued after `next`.
    more: bool,
}

/// Query parameters of `GET /v1/inbox`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InboxQuery {
    pub since: u64,
    pub epoch: Option<u64>,
    pub limit: Option<usize>,
}

/// Parses the query of `GET /v1/inbox` (PROTOCOL.md 8.4); pure, so it is fuzzed.
pub fn parse_inbox_query(query: Option<&str>) -> Result<InboxQuery, ApiError> {
    let mut q = InboxQuery::default();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let number = |what: &str| {
            value.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::Malformed,
                    format!("{what} must be a non-negative integer"),
                )
            })
        };
        match name.as_ref() {
            "since" => q.since = number("since")?,
            "epoch" => q.epoch = Some(number("epoch")?),
            "limit" => q.limit = Some(number("limit")? as usize),
            _ => {}
        }
    }
    if q.since > 0 && q.epoch.is_none() {
        return Err(ApiError::new(
            ErrorCode::Malformed,
            "since needs the epoch it belongs to: pass both from the previous answer's `next`",
        ));
    }
    Ok(q)
}

/// Verifies the `Authorization` header for this request from `client_ip`, within the
/// IP's budget of bad signatures; returns the signer's key.
pub(super) fn authenticate(
    app: &AppState,
    client_ip: IpAddr,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
) -> Result<PublicKey, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing Authorization header: `Whispr key=<hex>, ts=<ms>, sig=<base64>`",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "Authorization header is not ASCII"))?;
    let auth = HttpAuth::parse(value).map_err(unauthorized)?;
    let origin = app.origin(headers, uri)?;
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let now = app.relay.clock().now_ms();
    let checked = app.relay.check_signature(client_ip, || {
        auth.verify(
            &origin,
            method.as_str(),
            path_and_query,
            now,
            app.relay.max_skew_ms(),
        )
    });
    match checked {
        Ok(()) => Ok(auth.key),
        Err(RelayError::Protocol(e)) => Err(unauthorized(e)),
        Err(budget_spent) => Err(budget_spent.into()),
    }
}

/// Every failure to prove key ownership is a 401, whatever its cause.
fn unauthorized(e: ProtocolError) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, e.to_string())
}

pub async fn inbox(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let key = authenticate(&app, ip, &headers, &method, &uri)?;
    let q = parse_inbox_query(uri.query())?;
    let limit = q
        .limit
        .unwrap_or(app.config.poll_max_messages)
        .clamp(1, app.config.poll_max_messages);
    let cursor = q.epoch.map(|epoch| Cursor {
        epoch,
        seq: q.since,
    });
    let store = &app.relay.store();
    if let Some(c) = cursor.filter(|c| c.seq > 0) {
        store.ack(&key.into(), c).await?;
    }
    let batch = store
        .fetch(&key.into(), cursor, limit, app.relay.clock().now_ms())
        .await?;
    let last = batch.messages.last().map_or(batch.floor, |m| m.seq);
    app.relay
        .metrics()
        .delivered_over(DeliveryTransport::HttpPoll, batch.messages.len());
    let answer = InboxAnswer {
        epoch: batch.epoch,
        gap: batch.gap.is_some(),
        gap_reason: batch.gap,
        messages: batch
            .messages
            .iter()
            .map(|m| PolledMessage {
                seq: m.seq,
                id: m.id,
                envelope: &m.envelope,
            })
            .collect(),
        next: Cursor {
            epoch: batch.epoch,
            seq: last,
        },
        more: batch.messages.len() == limit && last < batch.head,
    };
    encoded(accept_codec(&headers), StatusCode::OK, &answer)
}
