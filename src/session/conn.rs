//! The session's side of one WebSocket: encoding frames, write deadlines, the close
//! handshake, and decoding what the client sends. No session logic lives here.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use std::time::Duration;
use tokio::time::timeout;

use super::state::decode_frame;
use crate::error::close_code;
use crate::metrics::Disconnect;
use crate::protocol::{ClientFrame, Codec, Encoded, ProtocolError, ServerFrame};

/// Why a session ended; decides the close frame.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed or the connection broke: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

pub(super) struct Conn {
    pub(super) socket: WebSocket,
    pub(super) codec: Codec,
    pub(super) write_timeout: Duration,
    pub(super) max_frame_bytes: usize,
}

impl Conn {
    pub(super) async fn send(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let msg = match self.codec.encode(frame) {
            Ok(Encoded::Text(t)) => Message::text(t),
            Ok(Encoded::Binary(b)) => Message::binary(b),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a frame");
                return Err(End::Close(close_code::INTERNAL_ERROR, "internal error"));
            }
        };
        self.send_message(msg).await
    }

    /// Every write has a deadline: a client that does not read is a slow consumer.
    pub(super) async fn send_message(&mut self, msg: Message) -> Result<(), End> {
        match timeout(self.write_timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(
                close_code::SLOW_CONSUMER,
                "slow consumer: messages stay queued",
            )),
        }
    }

    pub(super) async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort and short: the peer may be the reason we are closing. Then wait
        // briefly for the peer's Close (the RFC 6455 handshake), so the connection is
        // not torn down under frames the peer has yet to read.
        let handshake = async {
            self.socket.send(Message::Close(Some(frame))).await.ok()?;
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
            Some(())
        };
        let _ = timeout(Duration::from_secs(2), handshake).await;
    }

    /// Turns a received message into a client frame, or a reason to end.
    pub(super) fn decode(&self, msg: Message) -> Incoming {
        let bytes = match (self.codec, msg) {
            (Codec::Json, Message::Text(t)) => t.as_str().as_bytes().to_vec(),
            (Codec::MsgPack, Message::Binary(b)) => b.to_vec(),
            (Codec::Json, Message::Binary(_)) => {
                return Incoming::Bad(ProtocolError::Malformed(
                    "this session speaks whispr.v1.json: send text frames".into(),
                ))
            }
            (Codec::MsgPack, Message::Text(_)) => {
                return Incoming::Bad(ProtocolError::Malformed(
                    "this session speaks whispr.v1.msgpack: send binary frames".into(),
                ))
            }
            (_, Message::Ping(_) | Message::Pong(_)) => return Incoming::Control,
            (_, Message::Close(_)) => return Incoming::Closed,
        };
        match decode_frame(self.codec, &bytes, self.max_frame_bytes) {
            Ok(frame) => Incoming::Frame(frame),
            Err(e) => Incoming::Bad(e),
        }
    }
}

pub(super) enum Incoming {
    Frame(ClientFrame),
    Bad(ProtocolError),
    Control,
    Closed,
}

pub(super) fn error_frame(e: &ProtocolError, reference: Option<u64>) -> ServerFrame {
    ServerFrame::Error {
        code: e.code(),
        detail: e.to_string(),
        reference,
        retry_after_ms: None,
    }
}

/// Maps a receive error to how the session ends (oversized messages get 1009).
pub(super) fn on_receive_error(e: axum::Error) -> End {
    let text = e.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        End::Close(close_code::TOO_BIG, "message too big")
    } else {
        End::Gone
    }
}

impl End {
    /// The metric label for how the session ended.
    pub(super) fn reason(&self) -> Disconnect {
        match self {
            End::Gone => Disconnect::Client,
            End::Close(code, _) => match *code {
                close_code::GOING_AWAY => Disconnect::Shutdown,
                close_code::TOO_BIG => Disconnect::TooBig,
                close_code::REPLACED => Disconnect::Replaced,
                close_code::SLOW_CONSUMER => Disconnect::SlowConsumer,
                close_code::AUTH_FAILED => Disconnect::AuthFailed,
                close_code::AUTH_TIMEOUT => Disconnect::AuthTimeout,
                close_code::PING_TIMEOUT => Disconnect::PingTimeout,
                close_code::UNAVAILABLE => Disconnect::Unavailable,
                close_code::BAD_SIGNATURES => Disconnect::BadSignatures,
                _ => Disconnect::Internal,
            },
        }
    }
}
