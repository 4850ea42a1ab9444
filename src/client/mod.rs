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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `crate::` module named in the `.rs` files under `dir`, with the file.
    fn imports(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                imports(&path, found);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            let needle = concat!("crate", "::");
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices(needle) {
                    let rest = &line[at + needle.len()..];
                    // `crate::{a::X, b}` names several modules (on one line, as
                    // rustfmt writes the short ones; a longer group starts a line each).
                    let group = rest
                        .strip_prefix('{')
                        .map(|g| &g[..g.find('}').unwrap_or(g.len())]);
                    for path_text in group.map_or(vec![rest], |g| g.split(',').collect()) {
                        let name: String = path_text
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.push((name, path.display().to_string()));
                    }
                }
            }
        }
    }

    /// The client side (client, command line, benchmark) stands on the protocol and the
    /// clock only, never on the server's modules: that is what lets it become a crate of
    /// its own the day something outside this repository needs it (ARCHITECTURE.md).
    #[test]
    fn the_client_side_imports_only_the_protocol_and_the_clock() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let allowed = ["protocol", "clock", "client", "cli", "bench"];
        let mut found = Vec::new();
        for dir in ["client", "cli", "bench"] {
            imports(&src.join(dir), &mut found);
        }
        assert!(
            found.iter().any(|(m, _)| m == "protocol"),
            "the scan sees imports"
        );
        for (module, file) in found {
            assert!(
                allowed.contains(&module.as_str()),
                "{file} imports the server's `{module}`: the client side may use only {allowed:?}"
            );
        }
    }
}
