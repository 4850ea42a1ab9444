//! The one WebSocket socket layer under every route (the native session, the v1 push
//! socket, `/signal`): the upgrade, bounded buffers, write deadlines, pings and pong
//! deadlines, the classification of what the peer did wrong, and the close handshake.
//! Routes see data messages and say what to send; what a frame *means* is theirs.
//!
//! - `upgrade`: the HTTP/1.1 upgrade (axum's `WebSocket` hides the connection, and the
//!   close handshake needs it), the tungstenite limits, and the byte meter under them.
//! - `transport`: [`Transport`], what the loop needs from a connection: a frame stream
//!   and sink, how many bytes are still queued in the relay, and raw reads for after a
//!   frame that cannot be parsed. Implemented by the real stream and by an in-memory
//!   one in the tests.
//! - `socket`: [`Socket`], generic over a [`Transport`]: `recv`, `send`, `close`.
//! - `budget`: the worst-case bytes one connection can hold, from the config.
//!
//! Memory per socket is bounded by construction, not by the peer's behaviour: reads are
//! capped by the message limits, writes by `ws_max_write_buffer_bytes` (tungstenite's
//! default is unlimited), and every write the relay makes waits until the kernel took
//! the whole buffer. The one thing a peer can make the relay write without the relay
//! asking is a pong; pongs are bounded by the same cap, not by a ping rate limit: a
//! peer that reads gets every pong (its pings cost it as much bandwidth as us), and a
//! peer that does not read fills the buffer to the cap and is closed with 4002. While
//! the buffer is full tungstenite keeps one pending pong, for the latest ping only.

mod budget;
pub(crate) mod limits;
mod socket;
mod transport;
mod upgrade;

#[cfg(test)]
pub(crate) mod mock;

pub use budget::Budget;
pub use socket::{Inbound, Socket, SocketLimits};
pub use transport::{Metered, Transport};
pub use upgrade::{NotAnUpgrade, Upgrade, UpgradeConfig, WsStream};

use crate::error::close_code;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

/// Why the relay closes a socket: the close code, the reason sent with it, and the
/// metric label, defined once for every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The relay is shutting down (1001).
    Shutdown,
    /// The peer broke RFC 6455 framing: unmasked frame, RSV bits, reserved opcode,
    /// orphan continuation, a control frame over 125 bytes (1002).
    Protocol,
    /// A text frame that is not UTF-8 (1007).
    InvalidUtf8,
    /// A data frame or message over the route's limit (1009).
    TooBig,
    /// A bug in the relay (1011).
    Internal,
    /// A newer session took the key over (4001).
    Replaced,
    /// The peer does not read: a write missed its deadline or the write buffer reached
    /// its cap (4002).
    SlowConsumer,
    /// Authentication failed (4003).
    AuthFailed,
    /// No authentication in time (4004).
    AuthTimeout,
    /// Nothing came back within the pong deadline of a ping (4005).
    PingTimeout,
    /// The message store is unavailable (4006).
    Unavailable,
    /// The inbox moved to a new epoch during the session (4007).
    EpochChanged,
    /// The session sent `max_bad_signatures_per_session` bad signatures (4008).
    BadSignatures,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => close_code::GOING_AWAY,
            CloseReason::Protocol => close_code::PROTOCOL_ERROR,
            CloseReason::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            CloseReason::TooBig => close_code::TOO_BIG,
            CloseReason::Internal => close_code::INTERNAL_ERROR,
            CloseReason::Replaced => close_code::REPLACED,
            CloseReason::SlowConsumer => close_code::SLOW_CONSUMER,
            CloseReason::AuthFailed => close_code::AUTH_FAILED,
            CloseReason::AuthTimeout => close_code::AUTH_TIMEOUT,
            CloseReason::PingTimeout => close_code::PING_TIMEOUT,
            CloseReason::Unavailable => close_code::UNAVAILABLE,
            CloseReason::EpochChanged => close_code::RESYNC,
            CloseReason::BadSignatures => close_code::BAD_SIGNATURES,
        }
    }

    /// The reason text of the close frame.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "relay shutting down",
            CloseReason::Protocol => "WebSocket protocol violation",
            CloseReason::InvalidUtf8 => "text frame is not UTF-8",
            CloseReason::TooBig => "message too big",
            CloseReason::Internal => "internal error",
            CloseReason::Replaced => "replaced by a newer session for this key",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::AuthFailed => "authentication failed",
            CloseReason::AuthTimeout => "authentication timed out",
            CloseReason::PingTimeout => "no pong within the deadline",
            CloseReason::Unavailable => "message store unavailable",
            CloseReason::BadSignatures => "too many bad signatures",
            CloseReason::EpochChanged => {
                "the inbox moved to a new epoch; reconnect with your cursor"
            }
        }
    }

    /// The `reason` label of `whispr_disconnects_total`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::Protocol => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_payload",
            CloseReason::TooBig => "too_big",
            CloseReason::Internal => "internal",
            CloseReason::Replaced => "takeover",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::Unavailable => "store_unavailable",
            CloseReason::EpochChanged => "epoch_changed",
            CloseReason::BadSignatures => "bad_signatures",
        }
    }

    /// How a transport error ends the socket, by the error's type (never its text):
    /// `None` when the connection is simply gone (closed, reset, I/O failure).
    pub fn of_error(e: &WsError) -> Option<CloseReason> {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(CloseReason::TooBig),
            WsError::Capacity(CapacityError::TooManyHeaders) => Some(CloseReason::Protocol),
            WsError::Utf8(_) => Some(CloseReason::InvalidUtf8),
            WsError::WriteBufferFull(_) => Some(CloseReason::SlowConsumer),
            WsError::AttackAttempt => Some(CloseReason::Protocol),
            WsError::Protocol(p) => match p {
                // The peer vanished, or wrote after its close: nothing left to tell it.
                ProtocolError::ResetWithoutClosingHandshake
                | ProtocolError::SendAfterClosing
                | ProtocolError::ReceivedAfterClosing => None,
                _ => Some(CloseReason::Protocol),
            },
            // Closed, reset, I/O and TLS failures (and the client-only variants).
            _ => None,
        }
    }
}

/// How a socket ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed or the connection broke: nothing more to say.
    Gone,
    /// The relay closes with this reason.
    Close(CloseReason),
}

impl End {
    /// The `reason` label of `whispr_disconnects_total`.
    pub fn label(self) -> &'static str {
        match self {
            End::Gone => "client",
            End::Close(r) => r.label(),
        }
    }
}

impl From<CloseReason> for End {
    fn from(r: CloseReason) -> Self {
        End::Close(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn errors_are_classified_by_variant() {
        let cases: Vec<(WsError, Option<CloseReason>)> = vec![
            (
                WsError::Capacity(CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1,
                }),
                Some(CloseReason::TooBig),
            ),
            (WsError::Utf8("bad".into()), Some(CloseReason::InvalidUtf8)),
            (
                WsError::WriteBufferFull(Box::new(Message::text("x"))),
                Some(CloseReason::SlowConsumer),
            ),
            (
                WsError::Protocol(ProtocolError::ControlFrameTooBig),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::UnmaskedFrameFromClient),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::NonZeroReservedBits),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::UnknownControlFrameType(11)),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::UnknownDataFrameType(3)),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::UnexpectedContinueFrame),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::ExpectedFragment(Data::Text)),
                Some(CloseReason::Protocol),
            ),
            (
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                None,
            ),
            (WsError::ConnectionClosed, None),
            (
                WsError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                None,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(CloseReason::of_error(&e), want, "{e:?}");
        }
    }

    #[test]
    fn codes_follow_rfc_6455_and_the_protocol() {
        assert_eq!(CloseReason::Protocol.code(), 1002);
        assert_eq!(CloseReason::InvalidUtf8.code(), 1007);
        assert_eq!(CloseReason::TooBig.code(), 1009);
        assert_eq!(CloseReason::SlowConsumer.code(), 4002);
        assert_eq!(End::Gone.label(), "client");
        assert_eq!(End::Close(CloseReason::Replaced).label(), "takeover");
    }
}
