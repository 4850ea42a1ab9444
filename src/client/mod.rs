//! The Rust client of protocol v1: a WebSocket session (`ws`) and the HTTP fallback
//! (`http`). Used by the command line, the load generator and the integration tests.

mod backoff;
mod http;
pub mod keyfile;
mod listener;
pub mod seal;
pub mod state;
mod tls;
mod ws;

pub use backoff::Backoff;
pub use http::{HttpClient, InboxPage, PolledMessage, SendResult};
pub use listener::{Delivery, ListenError, ListenEvent, Listener, ListenerConfig, Transport};
pub use state::{InboxState, RecentIds, StateFile};
pub use tls::Tls;
pub use ws::{Ready, WsClient};

use crate::protocol::{ErrorCode, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid relay URL {url}: {detail}")]
    Url { url: String, detail: String },
    #[error("cannot connect to the relay: {0}")]
    Connect(String),
    #[error("the relay closed the connection (code {code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("the relay refused: {code:?}: {detail}")]
    Refused {
        code: ErrorCode,
        detail: String,
        status: Option<u16>,
    },
    #[error("unexpected answer from the relay: {0}")]
    Unexpected(String),
    /// An HTTP error whose body is not the relay's JSON: a reverse proxy answered for a
    /// relay it could not reach.
    #[error("the proxy at {url} answered {status}: is the relay running behind it?")]
    NotTheRelay { url: String, status: String },
    #[error("the relay answered the WebSocket upgrade with HTTP {status}: {detail}")]
    UpgradeRefused { status: u16, detail: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// `host[:port]` of a URL, as the relay binds it into signatures.
pub fn origin_of(url: &url::Url) -> Result<String, ClientError> {
    let host = url.host_str().ok_or_else(|| ClientError::Url {
        url: url.to_string(),
        detail: "no host".into(),
    })?;
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// Parses a relay URL given as http(s):// or ws(s)://.
pub fn parse_base(url: &str) -> Result<url::Url, ClientError> {
    let parsed = url::Url::parse(url).map_err(|e| ClientError::Url {
        url: url.into(),
        detail: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" | "https" | "ws" | "wss" => Ok(parsed),
        other => Err(ClientError::Url {
            url: url.into(),
            detail: format!("scheme {other} is not http, https, ws or wss"),
        }),
    }
}
