//! Liveness, readiness and the limits document (`GET /v1/info`, like Nostr's NIP-11).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;
use crate::protocol::{ErrorCode, PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};

/// How long each store may take to answer a readiness check.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// Liveness: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store answers (while the relay drains, the draining layer answers
/// 503 before this runs).
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A load balancer's health check must get an answer, not a timeout, when Redis
    // hangs: each check is bounded well below the usual 2-5 s probe timeouts.
    let bounded = |what: &str| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the {what} did not answer within {} ms",
                READY_TIMEOUT.as_millis()
            ),
        )
    };
    tokio::time::timeout(READY_TIMEOUT, app.relay.store().check())
        .await
        .map_err(|_| bounded("message store"))??;
    tokio::time::timeout(READY_TIMEOUT, app.blobs.store().check())
        .await
        .map_err(|_| bounded("attachment store"))??;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus text exposition. The queue depth is sampled here, at scrape time.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let relay = &app.relay;
    match relay.store().depth().await {
        Ok(depth) => relay.metrics().queue_depth.set(depth as i64),
        Err(_) => relay.metrics().store_errors.inc(),
    }
    relay.metrics().sync_store(relay.store().events());
    if let Some(bytes) = app.blobs.store().stored_bytes() {
        relay.metrics().blob_bytes.set(bytes as i64);
    }
    let (served, reserve) = app.http_gate.open();
    for (pool, n) in [("served", served), ("reserve", reserve)] {
        relay
            .metrics()
            .http_connections
            .with_label_values(&[pool])
            .set(n as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        relay.metrics().render(),
    )
        .into_response()
}

/// What a client needs to know before it sends: versions, encodings, limits.
pub async fn info(State(app): State<AppState>) -> Json<Value> {
    let c = &app.config;
    let budget = crate::ws::Budget::new(c);
    Json(json!({
        "software": "whispr",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_versions": [PROTOCOL_VERSION],
        "subprotocols": [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK],
        "content_types": ["application/json", "application/msgpack"],
        "origin": c.origin,
        "store": app.relay.store().kind(),
        "limits": {
            "max_message_bytes": c.max_message_bytes,
            "max_frame_bytes": c.max_frame_bytes(),
            "message_ttl_seconds": c.message_ttl_seconds,
            "max_messages_per_recipient": c.max_messages_per_recipient,
            "max_messages_per_second": c.max_messages_per_second,
            "burst_messages": c.burst_messages,
            "max_messages_per_second_per_ip": c.max_messages_per_second_per_ip,
            "burst_messages_per_ip": c.burst_messages_per_ip,
            "max_bad_signatures_per_second_per_ip": c.max_bad_signatures_per_second_per_ip,
            "burst_bad_signatures_per_ip": c.burst_bad_signatures_per_ip,
            "max_bad_signatures_per_session": c.max_bad_signatures_per_session,
            "max_clock_skew_seconds": c.max_clock_skew_seconds,
            "max_connections_per_ip": c.max_connections_per_ip,
            "ws_max_inflight": c.ws_max_inflight,
            "ws_max_pipelined_sends": c.ws_max_pipelined_sends,
            "ws_outbound_queue": c.ws_outbound_queue,
            "ws_ping_interval_seconds": c.ws_ping_interval_seconds,
            "ws_pong_timeout_seconds": c.ws_pong_timeout_seconds,
            "ws_auth_timeout_seconds": c.ws_auth_timeout_seconds,
            "ws_max_write_buffer_bytes": c.ws_max_write_buffer_bytes,
            "ws_close_timeout_seconds": c.ws_close_timeout_seconds,
            "ws_ephemeral_queue_bytes": c.ws_ephemeral_queue_bytes,
            "ws_max_bytes_per_connection": budget.max(),
            "ws_bytes_per_connection": budget,
            "poll_max_messages": c.poll_max_messages,
            "attachment_max_size_bytes": c.attachment_max_size_bytes,
            "attachment_ttl_seconds": c.attachment_ttl_seconds,
            "signal_max_peers_per_room": c.signal_max_peers_per_room,
            "signal_max_message_bytes": c.signal_max_message_bytes,
            "signal_max_rooms_per_connection": c.signal_max_rooms_per_connection,
            "signal_max_frames_per_second": c.signal_max_frames_per_second,
        }
    }))
}
