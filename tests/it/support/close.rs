//! One way to read a WebSocket until the relay closes it, for every kind of socket the
//! tests hold: the Rust client, a tungstenite stream (v1 and `/signal`), a [`RawWs`].

use futures::StreamExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use whispr::client::{ClientError, WsClient};

use super::{RawEnd, RawWs, FIN, OP_CLOSE};

/// A hang guard, not a timing assertion: the relay's own deadlines (write, pong,
/// close handshake) are all shorter in the tests that wait here.
const GUARD: Duration = Duration::from_secs(30);

/// A socket read frame by frame until it ends.
pub trait Closing {
    /// The next frame: `None` when it is not the end, else how the connection ended.
    async fn next_end(&mut self) -> Option<RawEnd>;
}

/// Reads (and skips) frames until the relay's close frame or the end of the connection.
pub async fn close_code(ws: &mut impl Closing) -> RawEnd {
    let read = async {
        loop {
            if let Some(end) = ws.next_end().await {
                return end;
            }
        }
    };
    tokio::time::timeout(GUARD, read)
        .await
        .expect("the relay ends the connection")
}

impl Closing for WsClient {
    async fn next_end(&mut self) -> Option<RawEnd> {
        match self.next_frame().await {
            Ok(_) => None,
            Err(ClientError::Closed { code, .. }) => Some(RawEnd::Close(code)),
            Err(other) => Some(RawEnd::NoClose(other.to_string())),
        }
    }
}

impl<S> Closing for tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn next_end(&mut self) -> Option<RawEnd> {
        match self.next().await {
            Some(Ok(Message::Close(Some(frame)))) => Some(RawEnd::Close(frame.code.into())),
            // A close frame without a code: "no status received".
            Some(Ok(Message::Close(None))) => Some(RawEnd::Close(1005)),
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(RawEnd::NoClose(e.to_string())),
            None => Some(RawEnd::NoClose("end of stream".into())),
        }
    }
}

impl Closing for RawWs {
    /// Answers a close frame with one, as a client does.
    async fn next_end(&mut self) -> Option<RawEnd> {
        match self.read_frame().await {
            Ok((OP_CLOSE, payload)) => {
                let _ = self
                    .write(&Self::frame(
                        FIN | OP_CLOSE,
                        true,
                        &payload[..2.min(payload.len())],
                    ))
                    .await;
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                Some(RawEnd::Close(code))
            }
            Ok(_) => None,
            Err(e) => Some(RawEnd::NoClose(e)),
        }
    }
}
