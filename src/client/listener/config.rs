//! How a listener reaches its relay and paces itself.

use std::time::Duration;

use crate::client::{Backoff, Tls};
use crate::protocol::Codec;

/// How a [`Listener`](super::Listener) reaches its relay and paces itself.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// The relay's URL: http(s):// or ws(s)://.
    pub server: String,
    /// Trust for `wss://` and `https://`.
    pub tls: Tls,
    /// The WebSocket encoding (the HTTP fallback always uses JSON).
    pub codec: Codec,
    /// `false`: never try the WebSocket, poll over HTTP only.
    pub websocket: bool,
    /// The wait between HTTP polls that found nothing new.
    pub poll_interval: Duration,
    /// A WebSocket silent for this long is taken as dead. The relay pings every
    /// `ws_ping_interval_seconds` (30 by default), so three intervals is generous.
    pub idle_timeout: Duration,
    /// While polling, how often to try the WebSocket again.
    pub websocket_retry: Duration,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
}

impl ListenerConfig {
    /// Defaults: JSON, 2 s polls, 90 s idle timeout, 1 s doubling to 30 s backoff.
    pub fn new(server: impl Into<String>, tls: Tls) -> Self {
        ListenerConfig {
            server: server.into(),
            tls,
            codec: Codec::Json,
            websocket: true,
            poll_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            websocket_retry: Duration::from_secs(300),
            backoff: Backoff::default(),
        }
    }
}
