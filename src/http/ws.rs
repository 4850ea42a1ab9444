//! `GET /v1/ws`: negotiates the codec by subprotocol and hands the socket to a session.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::time::Duration;

use super::AppState;
use crate::error::ApiError;
use crate::protocol::{Codec, ErrorCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use crate::session::{self, SessionSettings};

pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if app.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay is shutting down",
        ));
    }
    let codec = negotiate(&ws)?;
    let origin = app.origin(&headers)?;
    let c = &app.config;
    let settings = SessionSettings {
        window: c.ws_max_inflight,
        ephemeral_queue: c.ws_outbound_queue,
        max_frame_bytes: c.max_frame_bytes(),
        ping_interval: Duration::from_secs(c.ws_ping_interval_seconds),
        pong_timeout: Duration::from_secs(c.ws_pong_timeout_seconds),
        write_timeout: Duration::from_secs(c.ws_write_timeout_seconds),
        auth_timeout: Duration::from_secs(c.ws_auth_timeout_seconds),
    };
    let ws = ws
        .protocols([codec.subprotocol()])
        .read_buffer_size(c.ws_read_buffer_bytes)
        .write_buffer_size(c.ws_write_buffer_bytes)
        .max_message_size(c.max_frame_bytes())
        .max_frame_size(c.max_frame_bytes());
    let relay = app.relay.clone();
    let shutdown = app.shutdown.clone();
    let tracker = app.tracker.clone();
    let ip = peer.ip();
    Ok(ws
        .on_upgrade(move |socket| {
            tracker.track_future(session::run(
                socket, codec, origin, ip, relay, settings, shutdown,
            ))
        })
        .into_response())
}

/// The first requested subprotocol we speak; JSON when none is requested.
fn negotiate(ws: &WebSocketUpgrade) -> Result<Codec, ApiError> {
    let mut requested = ws
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .peekable();
    if requested.peek().is_none() {
        return Ok(Codec::Json);
    }
    let offered: Vec<&str> = requested.collect();
    offered
        .iter()
        .find_map(|p| Codec::from_subprotocol(p))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Malformed,
                format!("unsupported WebSocket subprotocol {offered:?}; this relay speaks {SUBPROTOCOL_JSON} and {SUBPROTOCOL_MSGPACK}"),
            )
        })
}
