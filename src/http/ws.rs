//! `GET /v1/ws`: negotiates the codec by subprotocol and hands the socket to a session.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use std::net::SocketAddr;

use super::AppState;
use crate::error::ApiError;
use crate::protocol::{Codec, ErrorCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use crate::session::{self, SessionContext, SessionSettings};
use crate::ws::{NotAnUpgrade, Upgrade};

pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, ApiError> {
    let ip = super::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let codec = negotiate(&headers)?;
    let admitted = super::admit_upgrade(&app, ws, ip, app.config.max_frame_bytes())?;
    let origin = app.origin(&headers, &uri)?;
    let settings = SessionSettings::from_config(&app.config);
    let admitted = admitted.protocol(codec.subprotocol());
    let ctx = SessionContext {
        codec,
        origin,
        client_ip: ip,
        relay: app.relay.clone(),
        settings,
        shutdown: app.shutdown.clone(),
    };
    Ok(super::run_upgraded(&app, admitted, move |socket| {
        session::run(socket, ctx)
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
