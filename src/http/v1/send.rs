//! `POST /send`: a v1 message through the relay's write path. The v1 signature is
//! checked by `protocol::whispr_v1` (the only door for v1 messages into the store), then
//! `Relay::submit_verified` rate-limits, stores and wakes the recipient's v1 sockets;
//! `{"status":"ok"}` comes only after the store has the message. The sender's own v1
//! sockets then get a live copy, as v1 clients expect.

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

use super::error::V1Error;
use super::V1State;
use crate::protocol::whispr_v1::SendV1;

pub async fn send(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, V1Error> {
    let app = &v1.app;
    let relay = &app.relay;
    let bytes = crate::http::body::read_send(app, &headers, body, "v1_send").await?;
    let message: SendV1 = serde_json::from_slice(&bytes)
        .map_err(|e| V1Error::Unprocessable(format!("invalid request body: {e}")))?;
    let ip = crate::http::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let verified = Arc::new(relay.verify_v1(message, ip)?);
    let accepted = relay.submit_verified((*verified).clone(), ip).await?;
    if !accepted.duplicate {
        let sender = *verified.sender();
        relay.registry().push_v1_copy(&sender, verified);
    }
    Ok(Json(json!({ "status": "ok" })))
}
