//! The socket loop of one session: challenge, authenticate, replay the backlog from the
//! store, then push live until the client leaves, is replaced, is too slow, or the
//! relay shuts down. Each event has its own handler; all state decisions are in
//! [`super::state`].

use super::sleep_until_opt;
use axum::extract::ws::{Message, WebSocket};
use rand::RngCore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::conn::{error_frame, on_receive_error, Conn, End, Incoming};
use super::state::{AckAction, Authenticated, Delivery, SignatureStrikes, Unauthenticated};
use crate::analytics::Event;
use crate::error::{close_code, RelayError};
use crate::metrics::Metrics;
use crate::protocol::{
    ClientFrame, Codec, ErrorCode, ProtocolError, ServerFrame, VerifiedEnvelope, NONCE_LEN,
};
use crate::registry::SessionHandle;
use crate::relay::Relay;
use crate::store::Batch;

/// Session limits, from the config.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub window: u32,
    pub ephemeral_queue: usize,
    pub max_frame_bytes: usize,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub write_timeout: Duration,
    pub auth_timeout: Duration,
}

/// Runs one session to its end.
pub async fn run(
    socket: WebSocket,
    codec: Codec,
    origin: String,
    client_ip: IpAddr,
    relay: Arc<Relay>,
    settings: SessionSettings,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("session", ip = %client_ip, codec = codec.subprotocol(), key = tracing::field::Empty);
    async move {
        let metrics = &relay.metrics;
        metrics.connections.inc();
        let mut conn = Conn {
            socket,
            codec,
            write_timeout: settings.write_timeout,
            max_frame_bytes: settings.max_frame_bytes,
        };
        let end = match authenticate(&mut conn, origin, &relay, &settings, &shutdown).await {
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
                let reason = end.reason();
                live.finish(end).await;
                sessions.dec();
                let event = Event::SessionClosed {
                    codec: Metrics::codec_label(codec),
                    seconds: started.elapsed().as_secs(),
                    reason: reason.label(),
                };
                relay.analytics.record(relay.clock.now_ms(), event);
                reason
            }
            Err(end) => {
                let reason = end.reason();
                if let End::Close(code, text) = end {
                    conn.close(code, text).await;
                }
                reason
            }
        };
        metrics.disconnects.with_label_values(&[end.label()]).inc();
        metrics.connections.dec();
    }
    .instrument(span)
    .await
}

/// Sends the challenge and waits for a valid `auth`.
async fn authenticate(
    conn: &mut Conn,
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
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return Err(End::Close(close_code::GOING_AWAY, "relay shutting down")),
            r = tokio::time::timeout_at(deadline, conn.socket.recv()) => r,
        };
        let msg = match received {
            Err(_) => {
                return Err(End::Close(
                    close_code::AUTH_TIMEOUT,
                    "authentication timed out",
                ))
            }
            Ok(None) => return Err(End::Gone),
            Ok(Some(Err(e))) => return Err(on_receive_error(e)),
            Ok(Some(Ok(msg))) => msg,
        };
        let frame = match conn.decode(msg) {
            Incoming::Control => continue,
            Incoming::Closed => return Err(End::Gone),
            Incoming::Bad(e) => {
                conn.send(&error_frame(&e, None)).await?;
                return Err(End::Close(close_code::AUTH_FAILED, "authentication failed"));
            }
            Incoming::Frame(f) => f,
        };
        return match state.on_frame(frame, relay.clock.now_ms(), relay.max_skew_ms()) {
            Ok(auth) => Ok(auth),
            Err(e) => {
                tracing::info!(error = %e, "authentication refused");
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
                Err(End::Close(close_code::AUTH_FAILED, "authentication failed"))
            }
        };
    }
}

/// An authenticated session.
struct Live {
    conn: Conn,
    relay: Arc<Relay>,
    settings: SessionSettings,
    shutdown: CancellationToken,
    client_ip: IpAddr,
    handle: Arc<SessionHandle>,
    ephemeral: mpsc::Receiver<Arc<VerifiedEnvelope>>,
    auth: Authenticated,
    delivery: Option<Delivery>,
    pong_deadline: Option<Instant>,
    strikes: SignatureStrikes,
}

impl Live {
    fn start(
        conn: Conn,
        auth: Authenticated,
        client_ip: IpAddr,
        relay: Arc<Relay>,
        settings: SessionSettings,
        shutdown: CancellationToken,
    ) -> Self {
        // Register before the first store read: anything stored after this point wakes
        // us, anything before it is in that read. That is the gap-free handoff.
        let reg = relay.registry.register(auth.key, settings.ephemeral_queue);
        if reg.took_over {
            tracing::info!("took over an older session for this key");
        }
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
            pong_deadline: None,
        }
    }

    async fn serve(&mut self) -> End {
        if let Err(end) = self.begin().await {
            return end;
        }
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.settings.ping_interval,
            self.settings.ping_interval,
        );
        loop {
            let room = self.delivery.as_ref().map_or(0, Delivery::room);
            let pong_deadline = self.pong_deadline;
            let result = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Err(End::Close(close_code::GOING_AWAY, "relay shutting down")),
                _ = self.handle.replaced.cancelled() => Err(End::Close(close_code::REPLACED, "replaced by a newer session for this key")),
                msg = self.conn.socket.recv() => self.on_message(msg).await,
                Some(env) = self.ephemeral.recv() => self.on_ephemeral(env).await,
                _ = self.handle.wake.notified(), if room > 0 => self.pump().await,
                _ = ping.tick() => self.on_ping_tick().await,
                _ = sleep_until_opt(pong_deadline) => Err(End::Close(close_code::PING_TIMEOUT, "no pong within the deadline")),
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
            if let Err(e) = self.relay.store.ack(&key, c).await {
                refused = Some(RelayError::from(e).to_frame(None));
                cursor = None;
            }
        }
        let window = self.settings.window as usize;
        let now = self.relay.clock.now_ms();
        let batch = match self.relay.store.fetch(&key, cursor, window, now).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable at session start");
                self.conn.send(&RelayError::from(e).to_frame(None)).await?;
                return Err(End::Close(
                    close_code::UNAVAILABLE,
                    "message store unavailable",
                ));
            }
        };
        let mut delivery = Delivery::new(key, self.settings.window, batch.epoch, cursor);
        self.conn.send(&delivery.ready_frame()).await?;
        if let Some(frame) = refused {
            self.conn.send(&frame).await?;
        }
        let full = batch.messages.len() >= window;
        let stored_at = stored_at(&batch);
        let frames = delivery.on_batch(batch, window);
        self.delivery = Some(delivery);
        self.send_deliveries(&frames, &stored_at).await?;
        if full {
            self.pump().await?;
        }
        Ok(())
    }

    /// Reads from the store after the session's cursor while the window has room.
    async fn pump(&mut self) -> Result<(), End> {
        loop {
            let Some(delivery) = self.delivery.as_mut() else {
                return Ok(());
            };
            let room = delivery.room();
            if room == 0 {
                return Ok(());
            }
            let now = self.relay.clock.now_ms();
            let batch = match self
                .relay
                .store
                .fetch(&delivery.key, Some(delivery.cursor()), room, now)
                .await
            {
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
            let frames = delivery.on_batch(batch, room);
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
        for frame in frames {
            self.conn.send(frame).await?;
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

    async fn on_message(&mut self, msg: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        let msg = match msg {
            None => return Err(End::Gone),
            Some(Err(e)) => return Err(on_receive_error(e)),
            Some(Ok(m)) => m,
        };
        // Any frame from the client proves it is alive.
        self.pong_deadline = None;
        match self.conn.decode(msg) {
            Incoming::Control => Ok(()),
            Incoming::Closed => Err(End::Gone),
            Incoming::Bad(e) => self.conn.send(&error_frame(&e, None)).await,
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
                self.conn.send(&answer).await?;
                match answer {
                    ServerFrame::Error { code, .. } if self.strikes.on_refusal(code) => Err(
                        End::Close(close_code::BAD_SIGNATURES, "too many bad signatures"),
                    ),
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
            AckAction::Delete(cursor) => {
                if let Err(e) = self.relay.store.ack(&delivery.key, cursor).await {
                    // Not deleted now means redelivered later: never lost.
                    tracing::warn!(error = %e, "ack not applied");
                    self.relay.metrics.store_errors.inc();
                }
                self.pump().await
            }
        }
    }

    async fn on_ephemeral(&mut self, env: Arc<VerifiedEnvelope>) -> Result<(), End> {
        self.relay
            .metrics
            .delivered
            .with_label_values(&["ephemeral"])
            .inc();
        let envelope = Arc::new(env.envelope().clone());
        self.conn
            .send(&ServerFrame::Deliver {
                seq: None,
                id: env.id(),
                envelope,
            })
            .await
    }

    async fn on_ping_tick(&mut self) -> Result<(), End> {
        if self.pong_deadline.is_none() {
            self.pong_deadline = Some(Instant::now() + self.settings.pong_timeout);
        }
        self.conn
            .send_message(Message::Ping(Default::default()))
            .await
    }

    /// Leaves the registry and sends the close frame. Unacked messages stay in the store.
    async fn finish(&mut self, end: End) {
        self.relay
            .registry
            .unregister(&self.auth.key, self.handle.id);
        match end {
            End::Gone => tracing::info!("session ended by the client"),
            End::Close(code, reason) => {
                tracing::info!(code, reason, "closing session");
                self.conn.close(code, reason).await;
            }
        }
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
