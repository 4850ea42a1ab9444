//! `GET /v1/ws`: negotiates the codec by subprotocol and hands the socket to a session.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use std::net::SocketAddr;
use std::time::Duration;

use super::AppState;
use crate::error::ApiError;
use crate::protocol::{Codec, ErrorCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use crate::session::{self, SessionSettings};

pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let codec = negotiate(&headers)?;
    let (ws, permit) = super::admit_upgrade(&app, ws, ip, app.config.max_frame_bytes())?;
    let origin = app.origin(&headers, &uri)?;
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
    let ws = ws.protocols([codec.subprotocol()]);
    let relay = app.relay.clone();
    let shutdown = app.shutdown.clone();
    Ok(super::run_upgraded(&app, ws, permit, move |socket| {
        session::run(socket, codec, origin, ip, relay, settings, shutdown)
    }))
}

/// The first subprotocol the client offered (in its order) that we speak; JSON when
/// none is offered.
fn negotiate(headers: &HeaderMap) -> Result<Codec, ApiError> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(Codec::Json);
    }
    offered.iter().find_map(|p| Codec::from_subprotocol(p)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("unsupported WebSocket subprotocol {offered:?}; this relay speaks {SUBPROTOCOL_JSON} and {SUBPROTOCOL_MSGPACK}"),
        )
    })
}
