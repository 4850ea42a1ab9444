//! [`Socket`]: one WebSocket connection driven by a route's loop. It answers pings and
//! keeps the pong deadline (`recv`), puts a deadline on every write (`send`), and ends
//! with the one close handshake (`close`). Generic over [`Transport`], so every
//! deadline is tested with paused time and an in-memory connection.

use futures::SinkExt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

use super::{CloseReason, End, Transport};
use crate::config::Config;
use crate::metrics::Metrics;

/// The deadlines and the write-buffer cap of every socket, from the config.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// How long one write may take (`ws_write_timeout_seconds`).
    pub write_timeout: Duration,
    /// How long the close handshake may take (`ws_close_timeout_seconds`).
    pub close_timeout: Duration,
    pub ping_interval: Duration,
    /// How long after a ping any frame must arrive (`ws_pong_timeout_seconds`).
    pub pong_timeout: Duration,
    /// Bytes queued for the peer beyond which it is a slow consumer
    /// (`ws_max_write_buffer_bytes`).
    pub max_queued_bytes: usize,
}

impl SocketLimits {
    pub fn from_config(c: &Config) -> Self {
        SocketLimits {
            write_timeout: Duration::from_secs(c.ws_write_timeout_seconds),
            close_timeout: Duration::from_secs(c.ws_close_timeout_seconds),
            ping_interval: Duration::from_secs(c.ws_ping_interval_seconds),
            pong_timeout: Duration::from_secs(c.ws_pong_timeout_seconds),
            max_queued_bytes: c.ws_max_write_buffer_bytes,
        }
    }
}

/// A data message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// One connection. Dropping it without [`Socket::close`] drops the TCP connection.
pub struct Socket<T> {
    transport: T,
    limits: SocketLimits,
    metrics: Arc<Metrics>,
    /// `None` until [`Socket::start_pinging`].
    ping: Option<Interval>,
    /// Set by a ping, cleared by any frame from the peer.
    pong_deadline: Option<Instant>,
    /// The parser refused a frame: the stream yields nothing more, so the close
    /// handshake reads raw bytes.
    broken: bool,
    /// The peer sent its close frame; tungstenite queued the answer.
    peer_closed: bool,
    /// Frames were fed (`feed`) and not flushed yet: by this instant they must be
    /// (`write_timeout` after the last of them), or the peer is a slow consumer.
    flush_by: Option<Instant>,
}

/// Frames read and dropped per poll while closing, before yielding.
const DRAIN_FRAMES_PER_POLL: usize = 64;

impl<T: Transport> Socket<T> {
    pub fn new(transport: T, limits: SocketLimits, metrics: Arc<Metrics>) -> Self {
        Socket {
            transport,
            limits,
            metrics,
            ping: None,
            pong_deadline: None,
            broken: false,
            peer_closed: false,
            flush_by: None,
        }
    }

    /// Pings every `ping_interval` from now on; a peer silent for `pong_timeout` after
    /// a ping is closed with 4005. (The native session starts after authentication,
    /// which has its own deadline.)
    ///
    /// The first ping comes after a random time between half the interval and the
    /// whole of it, then one every interval: sessions that connected together (a relay
    /// restart sends every client back at once) would otherwise ping together, every
    /// interval, for as long as they stay.
    pub fn start_pinging(&mut self) {
        let every = self.limits.ping_interval;
        let first = first_ping(every);
        self.ping = Some(tokio::time::interval_at(Instant::now() + first, every));
    }

    /// The next data message. Pings, pongs and the pong deadline are handled here.
    /// Cancel-safe between frames: a route may `select!` it against its own events.
    ///
    /// Frames fed and not yet flushed leave here, when no input is waiting: a burst of
    /// input (a busy sender's `send` frames) is answered in one write, and a frame fed
    /// after idle leaves as soon as the session waits again, never waiting for company.
    pub async fn recv(&mut self) -> Result<Inbound, End> {
        loop {
            let pong_deadline = self.pong_deadline;
            let flush_by = self.flush_by;
            tokio::select! {
                biased;
                got = poll_fn(|cx| poll_input_or_flush(&mut self.transport, &mut self.flush_by, cx)) => {
                    match got? {
                        Polled::Input(msg) => {
                            if let Some(data) = self.on_message(msg)? {
                                return Ok(data);
                            }
                        }
                        // The flush deadline is gone with what it guarded.
                        Polled::Flushed => {}
                    }
                }
                _ = tick(&mut self.ping) => self.on_ping_tick().await?,
                _ = sleep_until_opt(pong_deadline) => return Err(CloseReason::PingTimeout.into()),
                _ = sleep_until_opt(flush_by) => return Err(CloseReason::SlowConsumer.into()),
            }
        }
    }

    fn on_message(
        &mut self,
        msg: Option<Result<Message, WsError>>,
    ) -> Result<Option<Inbound>, End> {
        let msg = match msg {
            None => return Err(End::Gone),
            Some(Err(e)) => {
                self.broken = true;
                return Err(CloseReason::of_error(&e).map_or(End::Gone, End::Close));
            }
            Some(Ok(msg)) => msg,
        };
        // Any frame proves the peer alive.
        self.pong_deadline = None;
        // tungstenite queues a pong for each ping as it reads, without asking; a peer
        // that does not read them fills the write buffer up to the cap.
        if self.transport.queued_bytes() > self.limits.max_queued_bytes {
            return Err(CloseReason::SlowConsumer.into());
        }
        Ok(match msg {
            Message::Text(t) => Some(Inbound::Text(t)),
            Message::Binary(b) => Some(Inbound::Binary(b)),
            Message::Close(_) => {
                self.peer_closed = true;
                return Err(End::Gone);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        })
    }

    async fn on_ping_tick(&mut self) -> Result<(), End> {
        if self.pong_deadline.is_none() {
            self.pong_deadline = Some(Instant::now() + self.limits.pong_timeout);
        }
        self.send(Message::Ping(Bytes::new())).await
    }

    /// Writes one message and waits until the connection took everything queued
    /// (anything fed before it too). A peer that does not take it within
    /// `write_timeout`, or whose write buffer is at its cap, is a slow consumer.
    pub async fn send(&mut self, msg: Message) -> Result<(), End> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// Queues one message without flushing; it leaves with the next [`Socket::send`]
    /// or [`Socket::flush`], when [`Socket::recv`] finds no input waiting, or as soon
    /// as the write buffer passes `ws_write_buffer_bytes` (tungstenite writes it out
    /// then). Each write gets `write_timeout`, as with `send`: queueing one message,
    /// and the flush of what was queued, counted from the last message queued. A full
    /// write buffer (`ws_max_write_buffer_bytes`) is a slow consumer at once.
    pub async fn feed(&mut self, msg: Message) -> Result<(), End> {
        let deadline = Instant::now() + self.limits.write_timeout;
        match tokio::time::timeout_at(deadline, self.transport.feed(msg)).await {
            Ok(Ok(())) => {
                self.flush_by = Some(Instant::now() + self.limits.write_timeout);
                Ok(())
            }
            Ok(Err(e)) => Err(write_failed(e)),
            Err(_) => Err(CloseReason::SlowConsumer.into()),
        }
    }

    /// Waits until the connection took everything queued, within `write_timeout`.
    pub async fn flush(&mut self) -> Result<(), End> {
        if self.flush_by.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + self.limits.write_timeout;
        match tokio::time::timeout_at(deadline, self.transport.flush()).await {
            Ok(Ok(())) => {
                self.flush_by = None;
                Ok(())
            }
            Ok(Err(e)) => Err(write_failed(e)),
            Err(_) => Err(CloseReason::SlowConsumer.into()),
        }
    }

    /// The one close handshake, bounded by `close_timeout`: stop writing anything but
    /// the close frame; keep reading and dropping input until the peer's close frame
    /// (or end of input), so the kernel never resets the connection under a close
    /// frame the peer has yet to read; then drop. After a frame the parser refused,
    /// input is read raw and the relay's direction is shut after the close frame.
    pub async fn close(mut self, end: End) {
        self.metrics
            .ws_closes
            .with_label_values(&[end.label()])
            .inc();
        let deadline = Instant::now() + self.limits.close_timeout;
        let mut closing = Closing {
            frame: match end {
                End::Close(reason) => Some(Message::Close(Some(CloseFrame {
                    code: reason.code().into(),
                    reason: reason.text().into(),
                }))),
                End::Gone => None,
            },
            flushed: false,
            input_done: matches!(end, End::Gone),
            shut: false,
        };
        if matches!(end, End::Gone) && !self.peer_closed {
            // Reset or end of input: there is nobody to answer.
            closing.flushed = true;
        }
        let handshake = poll_fn(|cx| self.poll_closing(&mut closing, cx));
        let _ = tokio::time::timeout_at(deadline, handshake).await;
        self.metrics
            .observe_write_buffer_peak(self.transport.peak_queued_bytes());
    }

    fn poll_closing(&mut self, st: &mut Closing, cx: &mut Context<'_>) -> Poll<()> {
        if !st.input_done {
            st.input_done = self.poll_drain_input(cx).is_ready();
        }
        if let Some(frame) = st.frame.take() {
            // The close frame is queued only where it fits (the cap leaves room for
            // it): while the peer has more than the cap unread, wait for it to read.
            if self.transport.queued_bytes() > self.limits.max_queued_bytes {
                match Pin::new(&mut self.transport).poll_flush(cx) {
                    // Flushed means the whole buffer went: room now.
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {
                        st.frame = Some(frame);
                        return Poll::Pending;
                    }
                }
            }
            let mut sink = Pin::new(&mut self.transport);
            match sink.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {
                    st.frame = Some(frame);
                    return Poll::Pending;
                }
            }
            if sink.start_send(frame).is_err() {
                return Poll::Ready(());
            }
        }
        if !st.flushed {
            match Pin::new(&mut self.transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => st.flushed = true,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.broken && !st.shut {
            match self.transport.poll_shutdown(cx) {
                Poll::Ready(()) => st.shut = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        if st.input_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Reads and drops input; Ready at the peer's close frame or the end of input.
    fn poll_drain_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.broken {
            return self.transport.poll_discard(cx);
        }
        for _ in 0..DRAIN_FRAMES_PER_POLL {
            match Pin::new(&mut self.transport).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(())
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) => {
                    self.broken = true;
                    return self.transport.poll_discard(cx);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What [`poll_input_or_flush`] found.
enum Polled {
    Input(Option<Result<Message, WsError>>),
    /// No input yet, and everything fed has left.
    Flushed,
}

/// When a session's first ping is due: a random time between half of `every` and all
/// of it (see [`Socket::start_pinging`]).
fn first_ping(every: Duration) -> Duration {
    use rand::Rng;
    every.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The next frame from the peer; while none is there, flushes what was fed (and
/// clears `flush_by` once it left).
fn poll_input_or_flush<T: Transport>(
    transport: &mut T,
    flush_by: &mut Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<Result<Polled, End>> {
    if let Poll::Ready(msg) = Pin::new(&mut *transport).poll_next(cx) {
        return Poll::Ready(Ok(Polled::Input(msg)));
    }
    if flush_by.is_none() {
        return Poll::Pending;
    }
    match Pin::new(transport).poll_flush(cx) {
        Poll::Ready(Ok(())) => {
            *flush_by = None;
            Poll::Ready(Ok(Polled::Flushed))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(write_failed(e))),
        Poll::Pending => Poll::Pending,
    }
}

/// A write that failed: a full write buffer is a slow consumer; anything else means
/// the connection is gone.
fn write_failed(e: WsError) -> End {
    match e {
        WsError::WriteBufferFull(_) => CloseReason::SlowConsumer.into(),
        _ => End::Gone,
    }
}

/// Where a close handshake is.
struct Closing {
    /// Our close frame, until it is queued.
    frame: Option<Message>,
    flushed: bool,
    /// The peer's close frame (or the end of its input) was read.
    input_done: bool,
    /// Our direction was shut (only after a broken stream).
    shut: bool,
}

async fn tick(ping: &mut Option<Interval>) {
    match ping {
        Some(p) => {
            p.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::mock::{pair, Peer};
    use futures::StreamExt;
    use std::sync::atomic::Ordering;
    use tokio_tungstenite::tungstenite::error::CapacityError;

    fn limits() -> SocketLimits {
        SocketLimits {
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(20),
            max_queued_bytes: 1000,
        }
    }

    fn send(peer: &Peer, msg: Message) {
        peer.to_relay.unbounded_send(Ok(msg)).unwrap();
    }

    /// The code of the first close frame the relay wrote, if any.
    async fn close_code(peer: &mut Peer) -> Option<u16> {
        while let Some(msg) = peer.from_relay.next().await {
            if let Message::Close(Some(f)) = msg {
                return Some(f.code.into());
            }
        }
        None
    }

    #[tokio::test(start_paused = true)]
    async fn control_frames_stay_inside_and_data_comes_out() {
        let (mock, peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        send(&peer, Message::Ping(Bytes::new()));
        send(&peer, Message::Pong(Bytes::new()));
        send(&peer, Message::text("hi"));
        send(&peer, Message::binary(vec![1, 2]));
        assert_eq!(socket.recv().await, Ok(Inbound::Text("hi".into())));
        assert_eq!(
            socket.recv().await,
            Ok(Inbound::Binary(Bytes::from_static(&[1, 2])))
        );
        send(&peer, Message::Close(None));
        assert_eq!(socket.recv().await, Err(End::Gone));
    }

    #[test]
    fn first_pings_are_spread_over_the_second_half_of_the_interval() {
        let every = Duration::from_secs(30);
        let firsts: Vec<Duration> = (0..64).map(|_| first_ping(every)).collect();
        assert!(firsts.iter().all(|f| *f >= every / 2 && *f <= every));
        let (lo, hi) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
        assert!(
            *hi - *lo > every / 4,
            "sessions that start together ping apart: {lo:?}..{hi:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_closed_at_the_pong_deadline() {
        let (mock, mut peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        socket.start_pinging();
        let start = Instant::now();
        assert_eq!(
            socket.recv().await,
            Err(End::Close(CloseReason::PingTimeout))
        );
        // The first ping comes 15 to 30 s in (spread: see `start_pinging`), the deadline
        // 20 s after it.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(15 + 20) && waited <= Duration::from_secs(30 + 20),
            "closed after {waited:?}"
        );
        assert!(matches!(
            peer.from_relay.next().await,
            Some(Message::Ping(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn any_frame_after_a_ping_keeps_the_peer() {
        let (mock, mut peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        socket.start_pinging();
        let answer = tokio::spawn(async move {
            assert!(matches!(
                peer.from_relay.next().await,
                Some(Message::Ping(_))
            ));
            send(&peer, Message::Pong(Bytes::new()));
            // Past the first ping's deadline (at most 20 s after it), before the
            // second's (50 s after it).
            tokio::time::sleep(Duration::from_secs(25)).await;
            send(&peer, Message::text("late"));
            peer
        });
        assert_eq!(socket.recv().await, Ok(Inbound::Text("late".into())));
        answer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_is_a_slow_consumer_at_the_write_deadline() {
        let (mock, _peer) = pair(1);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        let start = Instant::now();
        let mut result = Ok(());
        for _ in 0..4 {
            result = socket.send(Message::text("x")).await;
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(End::Close(CloseReason::SlowConsumer)));
        assert_eq!(start.elapsed(), limits().write_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_buffer_over_the_cap_is_a_slow_consumer() {
        let (mock, peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        peer.queued.store(1000, Ordering::Relaxed);
        send(&peer, Message::Ping(Bytes::new()));
        send(&peer, Message::text("at the cap"));
        assert_eq!(socket.recv().await, Ok(Inbound::Text("at the cap".into())));
        peer.queued.store(1001, Ordering::Relaxed);
        send(&peer, Message::Ping(Bytes::new()));
        assert_eq!(
            socket.recv().await,
            Err(End::Close(CloseReason::SlowConsumer))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fed_frames_wait_for_input_already_there_then_leave_in_one_flush() {
        let (mock, mut peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        send(&peer, Message::text("one"));
        send(&peer, Message::text("two"));
        assert_eq!(socket.recv().await, Ok(Inbound::Text("one".into())));
        socket.feed(Message::text("answer one")).await.unwrap();
        // The next input is there: it is read before anything is flushed.
        assert_eq!(socket.recv().await, Ok(Inbound::Text("two".into())));
        socket.feed(Message::text("answer two")).await.unwrap();
        assert_eq!(peer.flushes.load(Ordering::Relaxed), 0);
        // No input now: both answers leave in one flush, at once, before the wait.
        let start = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
        assert!(waited.is_err(), "no input came");
        assert_eq!(peer.flushes.load(Ordering::Relaxed), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        for text in ["answer one", "answer two"] {
            assert_eq!(peer.from_relay.next().await, Some(Message::text(text)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_fed_after_idle_leaves_without_waiting_for_company() {
        let (mock, peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        socket.feed(Message::text("alone")).await.unwrap();
        let start = Instant::now();
        let waiting = tokio::spawn(async move { socket.recv().await });
        // The socket flushes as it starts waiting: no time passes first.
        for _ in 0..100 {
            if peer.flushes.load(Ordering::Relaxed) > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(peer.flushes.load(Ordering::Relaxed), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        send(&peer, Message::text("later"));
        assert_eq!(waiting.await.unwrap(), Ok(Inbound::Text("later".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn fed_frames_not_taken_by_the_write_deadline_are_a_slow_consumer() {
        let (mock, _peer) = pair(1);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        let start = Instant::now();
        // The peer reads nothing: the mock takes two frames, then the flush waits.
        socket.feed(Message::text("a")).await.unwrap();
        socket.feed(Message::text("b")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ended = socket.feed(Message::text("c")).await;
        assert_eq!(ended, Err(End::Close(CloseReason::SlowConsumer)));
        // Each write has its own deadline, as with `send`.
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3) + limits().write_timeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_the_peer_does_not_take_ends_recv_at_the_write_deadline() {
        let (mock, _peer) = pair(1);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        let start = Instant::now();
        socket.feed(Message::text("a")).await.unwrap();
        socket.feed(Message::text("b")).await.unwrap();
        assert_eq!(
            socket.recv().await,
            Err(End::Close(CloseReason::SlowConsumer))
        );
        assert_eq!(start.elapsed(), limits().write_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn close_sends_the_code_reads_input_and_ends_at_the_peers_close() {
        let (mock, mut peer) = pair(8);
        let socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        send(&peer, Message::text("sent before it saw our close"));
        send(&peer, Message::Close(None));
        let start = Instant::now();
        socket.close(End::Close(CloseReason::TooBig)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait for the deadline");
        assert_eq!(close_code(&mut peer).await, Some(1009));
        assert!(!peer.shut.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_at_the_close_deadline() {
        let (mock, mut peer) = pair(8);
        let socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        let start = Instant::now();
        socket.close(End::Close(CloseReason::Shutdown)).await;
        assert_eq!(start.elapsed(), limits().close_timeout);
        assert_eq!(close_code(&mut peer).await, Some(1001));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_left_gets_no_close_frame() {
        let (mock, mut peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        peer.to_relay.close_channel();
        let end = socket.recv().await.unwrap_err();
        assert_eq!(end, End::Gone);
        socket.close(end).await;
        assert_eq!(close_code(&mut peer).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_refused_frame_input_is_read_raw_and_the_direction_shut() {
        let (mock, mut peer) = pair(8);
        let mut socket = Socket::new(mock, limits(), Arc::new(Metrics::new()));
        let too_long = CapacityError::MessageTooLong {
            size: 2048,
            max_size: 1024,
        };
        peer.to_relay
            .unbounded_send(Err(WsError::Capacity(too_long)))
            .unwrap();
        // The rest of the oversized frame, which no parser will read as frames.
        send(&peer, Message::binary(vec![0; 1024]));
        let end = socket.recv().await.unwrap_err();
        assert_eq!(end, End::Close(CloseReason::TooBig));
        let start = Instant::now();
        let closing = tokio::spawn(socket.close(end));
        assert_eq!(close_code(&mut peer).await, Some(1009));
        // The peer read our close and closes its side; the relay sees the end of input.
        peer.to_relay.close_channel();
        closing.await.unwrap();
        assert!(start.elapsed() < limits().close_timeout);
        assert!(peer.shut.load(Ordering::Relaxed));
    }
}
