//! The session's side of one WebSocket: encoding frames in the session's codec and
//! decoding what the client sends. Deadlines, pings and the close handshake are the
//! socket layer's ([`crate::ws::Socket`]); no session logic lives here.

use tokio_tungstenite::tungstenite::Message;

use super::state::{decode_frame, ref_of_bad_send, Frame};
use crate::protocol::{Codec, Encoded, ProtocolError, ServerFrame};
use crate::ws::{CloseReason, End, Inbound, Socket, Transport};

pub(super) struct Conn<T> {
    pub(super) socket: Socket<T>,
    pub(super) codec: Codec,
    pub(super) max_frame_bytes: usize,
}

/// A data message from the client, decoded.
pub(super) enum Incoming {
    Frame(Frame),
    /// Not a frame; `reference` is the `ref` of a `send` whose envelope was the problem.
    Bad(ProtocolError, Option<u64>),
}

impl<T: Transport> Conn<T> {
    /// Writes `frame` and waits until the connection took it.
    pub(super) async fn send(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let msg = self.encode(frame)?;
        self.socket.send(msg).await
    }

    /// Queues `frame`; it leaves with the frames ready beside it, at the latest when
    /// the session waits for input again ([`Socket::feed`]).
    pub(super) async fn feed(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let msg = self.encode(frame)?;
        self.socket.feed(msg).await
    }

    fn encode(&self, frame: &ServerFrame) -> Result<Message, End> {
        match self.codec.encode(frame) {
            Ok(Encoded::Text(t)) => Ok(Message::text(t)),
            Ok(Encoded::Binary(b)) => Ok(Message::binary(b)),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a frame");
                Err(CloseReason::Internal.into())
            }
        }
    }

    /// The next client frame, or how the session ends. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<Incoming, End> {
        let msg = self.socket.recv().await?;
        Ok(self.decode(msg))
    }

    fn decode(&self, msg: Inbound) -> Incoming {
        let bytes: &[u8] = match (self.codec, &msg) {
            (Codec::Json, Inbound::Text(t)) => t.as_str().as_bytes(),
            (Codec::MsgPack, Inbound::Binary(b)) => b,
            (Codec::Json, Inbound::Binary(_)) => {
                return Incoming::Bad(
                    ProtocolError::Malformed(
                        "this session speaks whispr.v1.json: send text frames".into(),
                    ),
                    None,
                )
            }
            (Codec::MsgPack, Inbound::Text(_)) => {
                return Incoming::Bad(
                    ProtocolError::Malformed(
                        "this session speaks whispr.v1.msgpack: send binary frames".into(),
                    ),
                    None,
                )
            }
        };
        match decode_frame(self.codec, bytes, self.max_frame_bytes) {
            Ok(frame) => Incoming::Frame(frame),
            // An oversized frame is not parsed at all, so it has no `ref` to echo.
            Err(e @ ProtocolError::TooLarge { .. }) => Incoming::Bad(e, None),
            Err(e) => Incoming::Bad(e, ref_of_bad_send(self.codec, bytes)),
        }
    }
}

pub(super) fn error_frame(e: &ProtocolError, reference: Option<u64>) -> ServerFrame {
    ServerFrame::Error {
        code: e.code(),
        detail: e.to_string(),
        reference,
        retry_after_ms: None,
    }
}
