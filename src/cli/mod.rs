//! The chat commands behind `whispr keygen | send | listen | inbox`.
//!
//! `main.rs` parses flags into the option structs here and turns a [`CliError`] into
//! one line on stderr and an exit status; everything else happens in these modules,
//! so tests and other front ends can call them directly.
//!
//! Exit statuses (documented in the README):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done (for `send`: the relay stored the message) |
//! | 1 | usage or input error: bad flag, unreadable or corrupt key file, invalid recipient key, empty message |
//! | 2 | the relay refused (an HTTP or protocol error answer) |
//! | 3 | the relay could not be reached (connection refused, DNS, TLS, timeout) |
//! | 4 | `listen` stopped because another session with the same key took over |

mod keygen;
mod listen;
mod output;
mod send;

pub use keygen::{keygen, KeygenOptions};
pub use listen::{inbox, listen, ListenOptions};
pub use send::{send, SendOptions};

use std::path::PathBuf;

use crate::client::keyfile::KeyFileError;
use crate::client::seal::SealError;
use crate::client::state::StateError;
use crate::client::{ClientError, ListenError, Tls};
use crate::protocol::ErrorCode;

/// The default relay: the address `whispr serve` listens on.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// What kind of failure ended a command; each has its own exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Usage = 1,
    Refused = 2,
    Unreachable = 3,
    Replaced = 4,
}

/// A failed command: its kind and one readable line saying what failed and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub failure: Failure,
    pub message: String,
}

impl CliError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        CliError {
            failure,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Failure::Usage, message)
    }

    /// The process exit status.
    pub fn exit_code(&self) -> u8 {
        self.failure as u8
    }

    /// Why a listener stopped for good.
    fn from_listen(e: ListenError, server: &str) -> Self {
        match e {
            ListenError::Replaced => Self::new(
                Failure::Replaced,
                format!("{e}; stop the other reader or use another key"),
            ),
            // Whatever the form of the refusal (an error frame, close 4003, a 401 to a
            // poll), the relay answered: status 2, not "unreachable".
            ListenError::Refused(inner) => CliError {
                failure: Failure::Refused,
                ..Self::from_client(inner, "authenticating", server)
            },
            ListenError::Client(inner) => Self::from_client(inner, "connecting", server),
            ListenError::State(inner) => inner.into(),
        }
    }

    /// The relay could not be reached: status 3, with what to check.
    pub fn unreachable(doing: &str, server: &str, detail: &str) -> Self {
        let message = if is_certificate_error(detail) {
            format!("{doing}: the relay at {server} presented a certificate this computer does not trust ({detail}); if it is self-signed or from a private CA, pass that certificate with --ca FILE")
        } else if detail.starts_with("the proxy at ") {
            format!("{doing}: {detail}")
        } else {
            format!("{doing}: cannot reach the relay at {server} ({detail}); is it running, and is --server right?")
        };
        Self::new(Failure::Unreachable, message)
    }

    /// A relay client error, with `doing` ("sending", "reading the inbox") as context
    /// and `server` for the hint on unreachable relays.
    pub fn from_client(e: ClientError, doing: &str, server: &str) -> Self {
        match e {
            ClientError::Connect(detail) | ClientError::Closed { reason: detail, .. } => {
                Self::unreachable(doing, server, &detail)
            }
            ClientError::NotTheRelay { .. } => {
                Self::new(Failure::Unreachable, format!("{doing}: {e}"))
            }
            ClientError::Refused { code, detail, .. } => Self::new(
                Failure::Refused,
                format!(
                    "{doing}: the relay refused: {} ({detail}){}",
                    code.as_str(),
                    hint(code)
                ),
            ),
            ClientError::Url { .. } | ClientError::Tls(_) => Self::usage(format!("{doing}: {e}")),
            other => Self::new(Failure::Refused, format!("{doing}: {other}")),
        }
    }
}

/// Whether a connection failed on the relay's certificate (rustls names the reason:
/// `UnknownIssuer`, `NotValidForName`, `Expired`, …), which `--ca` may cure.
fn is_certificate_error(detail: &str) -> bool {
    detail.contains("certificate")
}

/// What the user can do about a refusal.
fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::StaleTimestamp => "; check this computer's clock",
        ErrorCode::RateLimited => "; wait a moment and send again",
        ErrorCode::InboxFull => "; the recipient has to read their messages first",
        ErrorCode::StoreFull | ErrorCode::Unavailable => "; try again later",
        ErrorCode::TooLarge => "; send a shorter message",
        ErrorCode::Unauthorized => {
            "; check this computer's clock and that --server is the name the relay is known by"
        }
        _ => "",
    }
}

impl From<KeyFileError> for CliError {
    fn from(e: KeyFileError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<SealError> for CliError {
    fn from(e: SealError) -> Self {
        Self::usage(e.to_string())
    }
}

/// Where the relay is and whom to trust on TLS.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// http(s):// or ws(s):// URL of the relay.
    pub server: String,
    /// PEM file of extra CA or pinned certificates (self-signed relays).
    pub ca: Option<PathBuf>,
}

impl RelayOptions {
    fn tls(&self) -> Result<Tls, CliError> {
        Tls::from_option(self.ca.as_deref())
            .map_err(|e| CliError::usage(format!("{e}; check --ca")))
    }
}

/// Writes a line to stdout and flushes it at once, so that a pipe reader sees each
/// message as it arrives. A closed stdout (the reader went away) ends the command.
fn print_line(line: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| CliError::usage(format!("cannot write to standard output: {e}")))
}
