//! An in-memory [`Transport`] for unit tests: frames in over an unbounded channel,
//! frames out over a bounded one (a peer that stops reading fills it), and the write
//! buffer size set by the test.

use futures::channel::mpsc;
use futures::{Sink, Stream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Transport;

pub struct Mock {
    inbound: mpsc::UnboundedReceiver<Result<Message, WsError>>,
    outbound: mpsc::Sender<Message>,
    queued: Arc<AtomicUsize>,
    shut: Arc<AtomicBool>,
    flushes: Arc<AtomicUsize>,
}

/// The test's end of a [`Mock`].
pub struct Peer {
    pub to_relay: mpsc::UnboundedSender<Result<Message, WsError>>,
    pub from_relay: mpsc::Receiver<Message>,
    /// What the mock reports as queued for the peer.
    pub queued: Arc<AtomicUsize>,
    /// Whether the relay shut its direction.
    pub shut: Arc<AtomicBool>,
    /// Flushes that completed: frames reach `from_relay` as they are queued, so this
    /// is how a test sees how many writes they took.
    pub flushes: Arc<AtomicUsize>,
}

/// A connected pair; the relay's writes block once `capacity` frames are unread.
pub fn pair(capacity: usize) -> (Mock, Peer) {
    let (to_relay, inbound) = mpsc::unbounded();
    let (outbound, from_relay) = mpsc::channel(capacity);
    let queued = Arc::new(AtomicUsize::new(0));
    let shut = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicUsize::new(0));
    let mock = Mock {
        inbound,
        outbound,
        queued: queued.clone(),
        shut: shut.clone(),
        flushes: flushes.clone(),
    };
    let peer = Peer {
        to_relay,
        from_relay,
        queued,
        shut,
        flushes,
    };
    (mock, peer)
}

fn gone<E>(_: E) -> WsError {
    WsError::Io(std::io::ErrorKind::BrokenPipe.into())
}

impl Stream for Mock {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inbound).poll_next(cx)
    }
}

impl Sink<Message> for Mock {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.outbound).poll_ready(cx).map_err(gone)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        Pin::new(&mut self.outbound).start_send(item).map_err(gone)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let flushed = Pin::new(&mut self.outbound).poll_flush(cx).map_err(gone);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.outbound).poll_close(cx).map_err(gone)
    }
}

impl Transport for Mock {
    fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn peak_queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match Pin::new(&mut self.inbound).poll_next(cx) {
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        self.shut.store(true, Ordering::Relaxed);
        Poll::Ready(())
    }
}
