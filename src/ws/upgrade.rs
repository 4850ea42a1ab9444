//! The HTTP/1.1 WebSocket upgrade (RFC 6455 section 4.2), done here rather than with
//! axum's `WebSocketUpgrade` because axum's socket hides the connection: the close
//! handshake must read raw bytes after a frame the parser refused, and the write
//! buffer is metered at the connection. The checks and their messages follow axum's.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use super::Metered;
use crate::config::Config;

/// The connection every route's socket runs on.
pub type WsStream = WebSocketStream<Metered<TokioIo<hyper::upgrade::Upgraded>>>;

/// Room tungstenite keeps above `ws_max_write_buffer_bytes`: the close frame and one
/// pong (each at most 127 bytes) always fit after the relay stops at the cap.
pub(crate) const CLOSE_HEADROOM: usize = 256;

/// Why a request is not a WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnUpgrade(&'static str);

/// Only reached by a handler that does not take `Result<Upgrade, NotAnUpgrade>`.
impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        crate::error::ApiError::new(
            crate::protocol::ErrorCode::Malformed,
            format!("not a WebSocket upgrade: {self}"),
        )
        .into_response()
    }
}

/// An upgrade request that passed the RFC 6455 checks.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    offered: Vec<String>,
    protocol: Option<&'static str>,
}

/// The tungstenite limits of one socket.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeConfig(WebSocketConfig);

impl UpgradeConfig {
    /// Buffers and caps from the config; `max_message_bytes` is the route's largest
    /// message (and frame).
    pub fn new(c: &Config, max_message_bytes: usize) -> Self {
        UpgradeConfig(
            WebSocketConfig::default()
                .read_buffer_size(c.ws_read_buffer_bytes)
                .write_buffer_size(c.ws_write_buffer_bytes)
                .max_write_buffer_size(c.ws_max_write_buffer_bytes + CLOSE_HEADROOM)
                .max_message_size(Some(max_message_bytes))
                .max_frame_size(Some(max_message_bytes)),
        )
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.version > Version::HTTP_11 {
            return Err(NotAnUpgrade("WebSocket upgrades need HTTP/1.1"));
        }
        if parts.method != Method::GET {
            return Err(NotAnUpgrade("Request method must be `GET`"));
        }
        let h = &parts.headers;
        if !header_has_token(h, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade("Connection header did not include 'upgrade'"));
        }
        if !header_has_token(h, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade("`Upgrade` header did not include 'websocket'"));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(NotAnUpgrade(
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let key = h
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotAnUpgrade("`Sec-WebSocket-Key` header missing"))?;
        let offered = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(NotAnUpgrade(
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ))?;
        Ok(Upgrade {
            key,
            on_upgrade,
            offered,
            protocol: None,
        })
    }
}

impl Upgrade {
    /// Answers with `protocol` as the subprotocol if the client offered it.
    pub fn protocol(mut self, protocol: &'static str) -> Self {
        if self.offered.iter().any(|p| p == protocol) {
            self.protocol = Some(protocol);
        }
        self
    }

    /// The 101 answer; `socket` runs on the upgraded connection, tracked so shutdown
    /// waits for it.
    pub fn on_upgrade<F, Fut>(
        self,
        config: UpgradeConfig,
        tracker: &TaskTracker,
        socket: F,
    ) -> Response
    where
        F: FnOnce(WsStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                    return;
                }
            };
            let io = Metered::new(TokioIo::new(upgraded));
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config.0)).await;
            socket(ws).await;
        });
        let accept = derive_accept_key(self.key.as_bytes());
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&accept) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = self.protocol {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        response
    }
}
