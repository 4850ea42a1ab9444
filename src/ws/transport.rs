//! What the socket loop needs from a connection, and the byte meter that tells it how
//! much the relay still holds for the peer.

use futures::{Sink, Stream};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket connection as the loop sees it: a stream of frames, a sink for frames,
/// the write-buffer accounting, and raw access for the close handshake.
pub trait Transport:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
    /// Bytes written by the relay that the connection has not taken yet (the write
    /// buffer as of its last write attempt).
    fn queued_bytes(&self) -> usize;

    /// The most bytes the write buffer has held.
    fn peak_queued_bytes(&self) -> usize;

    /// Reads and drops raw input. Ready once the peer has closed its side or the read
    /// failed. Used after a frame the parser refused, when no further frame can be
    /// parsed but unread input would make the kernel reset the connection (and drop the
    /// close frame the peer has not read yet).
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Ends the relay's direction (TCP FIN), so a peer that cannot send its close frame
    /// through a broken stream still sees the end right after ours.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Counts what tungstenite asks the connection to take. tungstenite hands its whole
/// write buffer to every write, so the size of the last write, less what the
/// connection took, is what the relay still holds for the peer; its largest value is
/// the peak.
#[derive(Debug)]
pub struct Metered<IO> {
    io: IO,
    queued: usize,
    peak: usize,
}

impl<IO> Metered<IO> {
    pub fn new(io: IO) -> Self {
        Metered {
            io,
            queued: 0,
            peak: 0,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.peak = self.peak.max(buf.len());
        self.queued = match &result {
            Poll::Ready(Ok(n)) => buf.len().saturating_sub(*n),
            _ => buf.len(),
        };
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Raw reads per poll before yielding, so a peer flooding the closing socket cannot
/// keep the task from its deadline.
const DISCARD_READS_PER_POLL: usize = 16;

impl<IO> Transport for WebSocketStream<Metered<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn queued_bytes(&self) -> usize {
        self.get_ref().queued
    }

    fn peak_queued_bytes(&self) -> usize {
        self.get_ref().peak
    }

    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let io = self.get_mut();
        let mut bytes = [0u8; 4096];
        for _ in 0..DISCARD_READS_PER_POLL {
            let mut buf = ReadBuf::new(&mut bytes);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(self.get_mut()).poll_shutdown(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_meter_sees_what_the_connection_did_not_take() {
        // A connection that takes 64 bytes until the other end reads.
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = Metered::new(near);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let buf = [1u8; 100];
        let taken = Pin::new(&mut io).poll_write(&mut cx, &buf);
        assert!(matches!(taken, Poll::Ready(Ok(64))));
        assert_eq!((io.queued, io.peak), (36, 100));
        let blocked = Pin::new(&mut io).poll_write(&mut cx, &buf[64..]);
        assert!(blocked.is_pending());
        assert_eq!((io.queued, io.peak), (36, 100));
        let mut read = [0u8; 64];
        far.read_exact(&mut read).await.unwrap();
        let taken = Pin::new(&mut io).poll_write(&mut cx, &buf[64..]);
        assert!(matches!(taken, Poll::Ready(Ok(36))));
        assert_eq!((io.queued, io.peak), (0, 100));
    }
}
