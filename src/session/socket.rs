//! The socket loop of one session: challenge, authenticate, replay the backlog from the
//! store, then push live until the client leaves, is replaced, is too slow, or the
//! relay shuts down. Each event has its own handler; all state decisions are in
//! [`super::state`].

use rand::RngCore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::conn::{error_frame, Conn, Incoming};
use super::state::{
    AckAction, Authenticated, Delivery, EpochMoved, SignatureStrikes, Unauthenticated,
};
use crate::analytics::Event;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::protocol::{
    ClientFrame, Codec, Cursor, ErrorCode, ProtocolError, ServerFrame, VerifiedEnvelope, NONCE_LEN,
};
use crate::registry::{EphemeralLimits, EphemeralQueue, SessionHandle};
use crate::relay::Relay;
use crate::store::Batch;
use crate::telemetry::{client_failure, ClientFailure};
use crate::ws::{CloseReason, End, Socket, SocketLimits, Transport};

/// Session limits, from the config.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub window: u32,
    pub ephemeral: EphemeralLimits,
    pub max_frame_bytes: usize,
    pub socket: SocketLimits,
    pub auth_timeout: Duration,
}

/// Runs one session to its end, on any [`Transport`] (a real socket, or an in-memory
/// one in the tests).
///
/// Memory per idle session is mostly this future (a task is as large as its largest
/// state), so: the connection is boxed once here, not copied into every state that
/// moves it (an `async fn` keeps its arguments for its whole life), and every state
/// but the idle loop is boxed while it runs (here and in `Live::serve`).
pub fn run<T: Transport>(
    socket: T,
    codec: Codec,
    origin: String,
    client_ip: IpAddr,
    relay: Arc<Relay>,
    settings: SessionSettings,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let span = tracing::info_span!("session", ip = %client_ip, codec = codec.subprotocol(), key = tracing::field::Empty);
    let mut conn = Box::new(Conn {
        socket: Socket::new(socket, settings.socket.clone(), relay.metrics.clone()),
        codec,
        max_frame_bytes: settings.max_frame_bytes,
    });
    async move {
        let metrics = &relay.metrics;
        metrics.connections.inc();
        let authenticating = Box::pin(authenticate(
            &mut conn, origin, &relay, &settings, &shutdown,
        ));
        let (conn, end) = match authenticating.await {
            Ok(auth) => {
                tracing::Span::current().record("key", tracing::field::display(auth.key));
                let sessions = metrics
                    .sessions
                    .with_label_values(&[Metrics::codec_label(codec)]);
                sessions.inc();
                let started = Instant::now();
                let mut live =
                    Live::start(conn, auth, client_ip, relay.clone(), settings, shutdown);
                let end = live.serve().await;
                let conn = live.finish(end);
                sessions.dec();
                let event = Event::SessionClosed {
                    codec: Metrics::codec_label(codec),
                    seconds: started.elapsed().as_secs(),
                    reason: end.label(),
                };
                relay.analytics.record(relay.clock.now_ms(), event);
                (conn, end)
            }
            Err(end) => (conn, end),
        };
        Box::pin(conn.socket.close(end)).await;
        metrics.disconnects.with_label_values(&[end.label()]).inc();
        metrics.connections.dec();
    }
    .instrument(span)
}

/// Sends the challenge and waits for a valid `auth`.
async fn authenticate<T: Transport>(
    conn: &mut Conn<T>,
    origin: String,
    relay: &Relay,
    settings: &SessionSettings,
    shutdown: &CancellationToken,
) -> Result<Authenticated, End> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let state = Unauthenticated { nonce, origin };
    conn.send(&state.challenge(relay.clock.now_ms())).await?;
    let deadline = Instant::now() + settings.auth_timeout;
    let received = tokio::select! {
        _ = shutdown.cancelled() => return Err(CloseReason::Shutdown.into()),
        r = tokio::time::timeout_at(deadline, conn.recv()) => r,
    };
    let frame = match received {
        Err(_) => return Err(CloseReason::AuthTimeout.into()),
        Ok(incoming) => match incoming? {
            Incoming::Bad(e, _) => {
                conn.send(&error_frame(&e, None)).await?;
                return Err(CloseReason::AuthFailed.into());
            }
            Incoming::Frame(f) => f,
        },
    };
    match state.on_frame(frame, relay.clock.now_ms(), relay.max_skew_ms()) {
        Ok(auth) => Ok(auth),
        Err(e) => {
            // The session's span carries the client's IP.
            if let Some(suppressed) = client_failure(ClientFailure::SignIn) {
                tracing::info!(reason = %e, suppressed, "authentication refused");
            }
            let code = match e {
                ProtocolError::Unauthorized { .. } => ErrorCode::AuthRequired,
                _ => e.code(),
            };
            conn.send(&ServerFrame::Error {
                code,
                detail: e.to_string(),
                reference: None,
                retry_after_ms: None,
            })
            .await?;
            Err(CloseReason::AuthFailed.into())
        }
    }
}

/// An authenticated session.
struct Live<T> {
    conn: Box<Conn<T>>,
    relay: Arc<Relay>,
    settings: SessionSettings,
    shutdown: CancellationToken,
    client_ip: IpAddr,
    handle: Arc<SessionHandle>,
    ephemeral: EphemeralQueue,
    auth: Authenticated,
    delivery: Option<Delivery>,
    strikes: SignatureStrikes,
}

impl<T: Transport> Live<T> {
    fn start(
        mut conn: Box<Conn<T>>,
        auth: Authenticated,
        client_ip: IpAddr,
        relay: Arc<Relay>,
        settings: SessionSettings,
        shutdown: CancellationToken,
    ) -> Self {
        // Register before the first store read: anything stored after this point wakes
        // us, anything before it is in that read. That is the gap-free handoff.
        let reg = relay.registry.register(auth.key, settings.ephemeral);
        if reg.took_over {
            tracing::info!("took over an older session for this key");
        }
        conn.socket.start_pinging();
        Live {
            conn,
            strikes: relay.session_strikes(),
            relay,
            settings,
            shutdown,
            client_ip,
            handle: reg.handle,
            ephemeral: reg.ephemeral,
            auth,
            delivery: None,
        }
    }

    async fn serve(&mut self) -> End {
        if let Err(end) = Box::pin(self.begin()).await {
            return end;
        }
        loop {
            let room = self.delivery.as_ref().map_or(0, Delivery::room);
            let result = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Err(CloseReason::Shutdown.into()),
                _ = self.handle.replaced.cancelled() => Err(CloseReason::Replaced.into()),
                incoming = self.conn.recv() => Box::pin(self.on_incoming(incoming)).await,
                Some(env) = self.ephemeral.recv() => Box::pin(self.on_ephemeral(env)).await,
                _ = self.handle.wake.notified(), if room > 0 => Box::pin(self.pump()).await,
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Applies the auth cursor, then sends `ready`, any gap, and the first backlog batch.
    async fn begin(&mut self) -> Result<(), End> {
        let key = self.auth.key;
        let mut cursor = self.auth.cursor;
        let mut refused = None;
        if let Some(c) = cursor.filter(|c| c.seq > 0) {
            // The cursor says the client processed everything through it. A cursor the
            // inbox never reached is discarded: the client gets everything queued.
            if let Err(e) = self.relay.store.ack(&key.into(), c).await {
                refused = Some(RelayError::from(e).to_frame(None));
                cursor = None;
            }
        }
        let window = self.settings.window as usize;
        let now = self.relay.clock.now_ms();
        let batch = match self
            .relay
            .store
            .fetch(&key.into(), cursor, window, now)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable at session start");
                self.conn.send(&RelayError::from(e).to_frame(None)).await?;
                return Err(CloseReason::Unavailable.into());
            }
        };
        let mut delivery = Delivery::new(key, self.settings.window, batch.epoch, cursor);
        self.conn.send(&delivery.ready_frame()).await?;
        if let Some(frame) = refused {
            self.conn.send(&frame).await?;
        }
        let full = batch.messages.len() >= window;
        let stored_at = stored_at(&batch);
        let frames = delivery.on_batch(batch, window).map_err(resync)?;
        self.delivery = Some(delivery);
        self.send_deliveries(&frames, &stored_at).await?;
        if full {
            self.pump().await?;
        }
        Ok(())
    }

    /// Reads from the store after the session's cursor while the window has room.
    async fn pump(&mut self) -> Result<(), End> {
        self.pump_after(None).await
    }

    /// Applies `ack` (if any) and reads on while the window has room; the ack travels
    /// with the first read (one store round trip instead of two).
    async fn pump_after(&mut self, mut ack: Option<Cursor>) -> Result<(), End> {
        loop {
            let Some(delivery) = self.delivery.as_mut() else {
                return Ok(());
            };
            let room = delivery.room();
            let inbox = delivery.key.into();
            if room == 0 {
                if let Some(through) = ack.take() {
                    if let Err(e) = self.relay.store.ack(&inbox, through).await {
                        // Not deleted now means redelivered later: never lost.
                        tracing::warn!(error = %e, "ack not applied");
                        self.relay.metrics.store_errors.inc();
                    }
                }
                return Ok(());
            }
            let now = self.relay.clock.now_ms();
            let after = Some(delivery.cursor());
            let read = match ack.take() {
                Some(through) => {
                    self.relay
                        .store
                        .ack_and_fetch(&inbox, through, after, room, now)
                        .await
                }
                None => self.relay.store.fetch(&inbox, after, room, now).await,
            };
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    // The session stays up; the next wake-up or ack retries the read.
                    tracing::warn!(error = %e, "store read failed");
                    self.relay.metrics.store_errors.inc();
                    return Ok(());
                }
            };
            let got = batch.messages.len();
            let stored_at = stored_at(&batch);
            let frames = delivery.on_batch(batch, room).map_err(resync)?;
            self.send_deliveries(&frames, &stored_at).await?;
            if got < room {
                return Ok(());
            }
        }
    }

    /// Sends frames from `Delivery::on_batch`, recording each delivery's latencies.
    async fn send_deliveries(
        &mut self,
        frames: &[ServerFrame],
        stored_at: &[(u64, u64)],
    ) -> Result<(), End> {
        // Fed, not flushed one by one: the batch leaves in as few writes as the write
        // buffer allows, as soon as the session waits again.
        for frame in frames {
            self.conn.feed(frame).await?;
            if let ServerFrame::Deliver {
                seq: Some(seq),
                envelope,
                ..
            } = frame
            {
                if let Ok(i) = stored_at.binary_search_by_key(seq, |&(s, _)| s) {
                    let now = self.relay.clock.now_ms();
                    let stored = stored_at[i].1;
                    self.relay
                        .metrics
                        .observe_delivery(now, envelope.timestamp, stored);
                    let event = Event::MessageDelivered {
                        kind: "stored",
                        bytes: envelope.body.len(),
                        queue_ms: now.saturating_sub(stored),
                    };
                    self.relay.analytics.record(now, event);
                }
            }
        }
        Ok(())
    }

    async fn on_incoming(&mut self, incoming: Result<Incoming, End>) -> Result<(), End> {
        match incoming? {
            Incoming::Bad(e, reference) => self.conn.send(&error_frame(&e, reference)).await,
            Incoming::Frame(frame) => self.on_frame(frame).await,
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        match frame {
            ClientFrame::Send {
                reference,
                envelope,
            } => {
                let answer = match self.relay.submit(envelope, self.client_ip).await {
                    Ok(a) => ServerFrame::Accepted {
                        reference,
                        id: a.id,
                        duplicate: a.duplicate,
                        online: a.online,
                    },
                    Err(e) => e.to_frame(reference),
                };
                // Answers to a sender whose next frames are already read leave together.
                self.conn.feed(&answer).await?;
                match answer {
                    ServerFrame::Error { code, .. } if self.strikes.on_refusal(code) => {
                        Err(CloseReason::BadSignatures.into())
                    }
                    _ => Ok(()),
                }
            }
            ClientFrame::Ack { seq } => self.on_ack(seq).await,
            ClientFrame::Auth { .. } => {
                self.conn
                    .send(&ServerFrame::Error {
                        code: ErrorCode::AlreadyAuthenticated,
                        detail: "this session is already authenticated".into(),
                        reference: None,
                        retry_after_ms: None,
                    })
                    .await
            }
            ClientFrame::Unknown => {
                self.conn
                    .send(&error_frame(&ProtocolError::UnknownFrame, None))
                    .await
            }
        }
    }

    async fn on_ack(&mut self, seq: u64) -> Result<(), End> {
        let Some(delivery) = self.delivery.as_mut() else {
            return Ok(());
        };
        match delivery.on_ack(seq) {
            AckAction::Refuse(frame) => self.conn.send(&frame).await,
            AckAction::Delete(cursor) => self.pump_after(Some(cursor)).await,
        }
    }

    async fn on_ephemeral(&mut self, env: Arc<VerifiedEnvelope>) -> Result<(), End> {
        let metrics = &self.relay.metrics;
        metrics.delivered.with_label_values(&["ephemeral"]).inc();
        metrics.delivered_over(crate::metrics::DeliveryTransport::Ws, 1);
        let envelope = Arc::new(env.envelope().clone());
        self.conn
            .feed(&ServerFrame::Deliver {
                seq: None,
                id: env.id(),
                envelope,
            })
            .await
    }

    /// Leaves the registry; the caller closes the socket. Unacked messages stay in the
    /// store.
    fn finish(self, end: End) -> Box<Conn<T>> {
        self.relay
            .registry
            .unregister(&self.auth.key, self.handle.id);
        match end {
            End::Gone => tracing::info!("session ended by the client"),
            End::Close(reason) => {
                tracing::info!(
                    code = reason.code(),
                    reason = reason.text(),
                    "closing session"
                )
            }
        }
        self.conn
    }
}

/// (seq, stored-at) of a batch's messages, in seq order, for latency metrics.
fn stored_at(batch: &Batch) -> Vec<(u64, u64)> {
    batch
        .messages
        .iter()
        .map(|m| (m.seq, m.stored_at_ms))
        .collect()
}

/// The inbox moved to a new epoch under the session (see `Delivery::on_batch`).
fn resync(_: EpochMoved) -> End {
    End::Close(CloseReason::EpochChanged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::registry::Registry;
    use crate::store::MemoryStore;
    use crate::ws::mock::{pair, Peer};
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    fn relay(config: &Config) -> Arc<Relay> {
        let store = MemoryStore::new(config.store_limits());
        Arc::new(Relay::new(
            config,
            store,
            Arc::new(Registry::new()),
            Clock::manual(),
        ))
    }

    fn settings(config: &Config) -> SessionSettings {
        SessionSettings {
            window: config.ws_max_inflight,
            ephemeral: EphemeralLimits {
                count: config.ws_outbound_queue,
                bytes: config.ws_ephemeral_queue_bytes,
            },
            max_frame_bytes: config.max_frame_bytes(),
            socket: SocketLimits::from_config(config),
            auth_timeout: Duration::from_secs(config.ws_auth_timeout_seconds),
        }
    }

    /// A JSON session with `config` on `mock`.
    fn spawn_session(mock: crate::ws::mock::Mock, config: &Config) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(
            mock,
            Codec::Json,
            "relay.example".into(),
            IpAddr::from([127, 0, 0, 1]),
            relay(config),
            settings(config),
            CancellationToken::new(),
        ))
    }

    /// Frames the relay wrote until its close frame: (texts, close code).
    async fn until_close(peer: &mut Peer) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        while let Some(msg) = peer.from_relay.next().await {
            match msg {
                Message::Text(t) => texts.push(t.to_string()),
                Message::Close(Some(f)) => return (texts, Some(f.code.into())),
                _ => {}
            }
        }
        (texts, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_authenticates_is_closed_with_4004_at_the_deadline() {
        let config = Config::default();
        let (mock, mut peer) = pair(16);
        let start = Instant::now();
        let session = spawn_session(mock, &config);
        let (texts, code) = until_close(&mut peer).await;
        assert_eq!(code, Some(crate::error::close_code::AUTH_TIMEOUT));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(config.ws_auth_timeout_seconds)
        );
        assert_eq!(texts.len(), 1, "only the challenge: {texts:?}");
        assert!(texts[0].contains("challenge"), "{}", texts[0]);
        // The peer answers our close: the handshake ends without waiting.
        peer.to_relay
            .unbounded_send(Ok(Message::Close(None)))
            .unwrap();
        session.await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(config.ws_auth_timeout_seconds)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_before_auth_that_is_not_auth_is_refused_with_4003() {
        let config = Config::default();
        let (mock, mut peer) = pair(16);
        peer.to_relay
            .unbounded_send(Ok(Message::text(r#"{"type":"ack","seq":1}"#)))
            .unwrap();
        let session = spawn_session(mock, &config);
        let (texts, code) = until_close(&mut peer).await;
        assert_eq!(code, Some(crate::error::close_code::AUTH_FAILED));
        assert!(texts.last().unwrap().contains("error"), "{texts:?}");
        peer.to_relay.close_channel();
        session.await.unwrap();
    }
}
