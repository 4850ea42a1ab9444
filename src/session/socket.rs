//! The socket loop of one session: challenge, authenticate, register, replay the
//! backlog from the store, then push live until the client leaves, is replaced, is too
//! slow, or the relay shuts down. Each event has its own handler; the decisions (what
//! to answer, what to read next, whether to read on) are in [`super::state`].

use rand::RngCore;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::conn::{error_frame, Conn, Incoming};
use super::state::{
    already_authenticated, auth_refusal, AckAction, Authenticated, Delivery, EpochMoved, Frame,
    Read, SignatureStrikes, Unauthenticated,
};
use crate::analytics::Event;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::protocol::{Codec, Cursor, ServerFrame, VerifiedEnvelope, NONCE_LEN};
use crate::registry::{EphemeralLimits, EphemeralQueue, SessionHandle};
use crate::relay::{Relay, Verifying};
use crate::store::Batch;
use crate::telemetry::{client_failure, ClientFailure};
use crate::ws::{CloseReason, End, Socket, SocketLimits, Transport};

/// Session limits, from the config.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub window: u32,
    /// Sends whose signature checks may run at once (`ws_max_pipelined_sends`).
    pub pipelined_sends: usize,
    pub ephemeral: EphemeralLimits,
    pub max_frame_bytes: usize,
    pub socket: SocketLimits,
    pub auth_timeout: Duration,
}

/// Everything one session runs with besides its socket.
pub struct SessionContext {
    pub codec: Codec,
    /// The origin bound into the sign-in signature.
    pub origin: String,
    pub client_ip: IpAddr,
    pub relay: Arc<Relay>,
    pub settings: SessionSettings,
    pub shutdown: CancellationToken,
}

/// Runs one session to its end, on any [`Transport`] (a real socket, or an in-memory
/// one in the tests).
///
/// Memory per idle session is mostly this future (a task is as large as its largest
/// state), so: the connection is boxed once here, not kept beside the socket it was
/// built from (an `async fn` keeps its arguments for its whole life), and every state
/// but the idle loop is boxed while it runs (here, in `serve_authenticated` and in
/// `Live::serve`).
pub fn run<T: Transport>(socket: T, ctx: SessionContext) -> impl std::future::Future<Output = ()> {
    let span = tracing::info_span!("session", ip = %ctx.client_ip, codec = ctx.codec.subprotocol(), key = tracing::field::Empty);
    let metrics = ctx.relay.metrics().clone();
    let mut conn = Box::new(Conn {
        socket: Socket::new(socket, ctx.settings.socket.clone(), metrics.clone()),
        codec: ctx.codec,
        max_frame_bytes: ctx.settings.max_frame_bytes,
    });
    async move {
        metrics.connections.inc();
        let end = match Box::pin(authenticate(&mut conn, &ctx)).await {
            Ok(auth) => Box::pin(serve_authenticated(&mut conn, auth, &ctx)).await,
            Err(end) => end,
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
    ctx: &SessionContext,
) -> Result<Authenticated, End> {
    let relay = &ctx.relay;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let state = Unauthenticated {
        nonce,
        origin: ctx.origin.clone(),
    };
    conn.send(&state.challenge(relay.clock().now_ms())).await?;
    let deadline = Instant::now() + ctx.settings.auth_timeout;
    let received = tokio::select! {
        _ = ctx.shutdown.cancelled() => return Err(CloseReason::Shutdown.into()),
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
    match state.on_frame(frame, relay.clock().now_ms(), relay.max_skew_ms()) {
        Ok(auth) => Ok(auth),
        Err(e) => {
            // The session's span carries the client's IP.
            if let Some(suppressed) = client_failure(ClientFailure::SignIn) {
                tracing::info!(reason = %e, suppressed, "authentication refused");
            }
            conn.send(&auth_refusal(&e)).await?;
            Err(CloseReason::AuthFailed.into())
        }
    }
}

/// An authenticated session from registration to its end: the first read, then the
/// live loop. Leaves the registry whatever happened; unacked messages stay in the
/// store. The caller closes the socket.
async fn serve_authenticated<T: Transport>(
    conn: &mut Conn<T>,
    mut auth: Authenticated,
    ctx: &SessionContext,
) -> End {
    let relay = &ctx.relay;
    tracing::Span::current().record("key", tracing::field::display(auth.key));
    let codec = Metrics::codec_label(ctx.codec);
    let sessions = relay.metrics().sessions.with_label_values(&[codec]);
    sessions.inc();
    let started = Instant::now();
    // Register before the first store read: anything stored after this point wakes
    // us, anything before it is in that read. That is the gap-free handoff.
    let reg = relay.registry().register(auth.key, ctx.settings.ephemeral);
    if reg.took_over {
        tracing::info!("took over an older session for this key");
    }
    let id = reg.handle.id;
    conn.socket.start_pinging();
    let end = match Box::pin(open(conn, &mut auth, ctx)).await {
        Ok(opened) => {
            let mut live = Live {
                conn,
                ctx,
                delivery: opened.delivery,
                handle: reg.handle,
                ephemeral: reg.ephemeral,
                strikes: relay.session_strikes(),
                sends: VecDeque::new(),
            };
            live.serve(opened.first, opened.refused).await
        }
        Err(end) => end,
    };
    relay.registry().unregister(&auth.key, id);
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
    sessions.dec();
    let event = Event::SessionClosed {
        codec,
        seconds: started.elapsed().as_secs(),
        reason: end.label(),
    };
    relay.analytics().record(relay.clock().now_ms(), event);
    end
}

/// What a session starts its delivery from.
struct Opened {
    delivery: Delivery,
    /// The first batch, read after the auth cursor.
    first: Batch,
    /// The error frame refusing the auth cursor, if the store refused it.
    refused: Option<ServerFrame>,
}

/// Applies the auth cursor and reads the first batch, which names the inbox's epoch:
/// what [`Delivery`] starts from.
async fn open<T: Transport>(
    conn: &mut Conn<T>,
    auth: &mut Authenticated,
    ctx: &SessionContext,
) -> Result<Opened, End> {
    let store = ctx.relay.store();
    let inbox = auth.key.into();
    let mut refused = None;
    if let Some(through) = auth.cursor_ack() {
        if let Err(e) = store.ack(&inbox, through).await {
            refused = Some(auth.cursor_refused(e));
        }
    }
    let window = ctx.settings.window;
    let now = ctx.relay.clock().now_ms();
    let first = match store.fetch(&inbox, auth.cursor, window as usize, now).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable at session start");
            conn.send(&RelayError::from(e).to_frame(None)).await?;
            return Err(CloseReason::Unavailable.into());
        }
    };
    Ok(Opened {
        delivery: Delivery::new(auth.key, window, first.epoch, auth.cursor),
        first,
        refused,
    })
}

/// An authenticated session with its delivery under way.
struct Live<'a, T> {
    conn: &'a mut Conn<T>,
    ctx: &'a SessionContext,
    delivery: Delivery,
    handle: Arc<SessionHandle>,
    ephemeral: EphemeralQueue,
    strikes: SignatureStrikes,
    /// Sends whose signature checks are under way, oldest first; see [`Live::serve`].
    sends: VecDeque<PipelinedSend>,
}

/// One `send` between its arrival and its answer.
struct PipelinedSend {
    reference: Option<u64>,
    bytes: usize,
    verifying: Result<Verifying, RelayError>,
}

/// Until the oldest send's check is done (at once when it failed before its signature
/// was looked at); never when there is none.
async fn oldest_checked(sends: &mut VecDeque<PipelinedSend>) {
    match sends.front_mut() {
        Some(PipelinedSend {
            verifying: Ok(v), ..
        }) => v.ready().await,
        Some(_) => {}
        None => std::future::pending().await,
    }
}

impl<T: Transport> Live<'_, T> {
    /// The live loop. Sends are pipelined: each `send`'s signature check begins when it
    /// arrives, up to `ws_max_pipelined_sends` at once, while the session reads on; the
    /// sends are then rate-limited, stored and answered one at a time in the order they
    /// came, so a sender's messages are stored in its order. Input already received is
    /// read before the oldest send is waited for, so the sends that arrived together
    /// share a batch (with other sessions' sends too: see `relay/verifier.rs`). A lone
    /// send is checked at once (nothing waits for company). One send at a time gave the
    /// verifier at most one envelope per sender, which kept batches small (2.65
    /// signatures on average at max rate with 8 senders, none at all on one core).
    async fn serve(&mut self, first: Batch, refused: Option<ServerFrame>) -> End {
        if let Err(end) = Box::pin(self.begin(first, refused)).await {
            return end;
        }
        let pipeline = self.ctx.settings.pipelined_sends;
        // The waits that outlive one turn of the loop are made once and re-armed only
        // when they fire: building them per turn registered and removed a waiter on the
        // shutdown token (shared by every session), the takeover token and two `Notify`s
        // on every frame: 3.5-4% of the relay's CPU at 10,000 sessions (BENCHMARKS.md).
        let handle = self.handle.clone();
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        let replaced = handle.replaced.clone().cancelled_owned();
        let stop = async move {
            tokio::select! {
                biased;
                _ = shutdown => CloseReason::Shutdown,
                _ = replaced => CloseReason::Replaced,
            }
        };
        tokio::pin!(stop);
        let wake = handle.wake.notified();
        tokio::pin!(wake);
        let ephemeral = handle.ephemeral_ready();
        tokio::pin!(ephemeral);
        loop {
            let room = self.delivery.room();
            let reading = self.sends.len() < pipeline;
            let result = tokio::select! {
                biased;
                reason = &mut stop => Err(reason.into()),
                incoming = self.conn.recv(), if reading => Box::pin(self.on_incoming(incoming)).await,
                _ = oldest_checked(&mut self.sends) => Box::pin(self.answer_oldest()).await,
                _ = &mut ephemeral => {
                    // Re-armed before the queue is read: a push from here on leaves a
                    // permit, so the next turn sees it.
                    ephemeral.set(handle.ephemeral_ready());
                    Box::pin(self.drain_ephemeral()).await
                }
                _ = &mut wake, if room > 0 => {
                    wake.set(handle.wake.notified());
                    Box::pin(self.pump()).await
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Sends `ready`, the refusal of the auth cursor if any, and the first batch; reads
    /// on if that was full.
    async fn begin(&mut self, first: Batch, refused: Option<ServerFrame>) -> Result<(), End> {
        self.conn.send(&self.delivery.ready_frame()).await?;
        if let Some(frame) = refused {
            self.conn.send(&frame).await?;
        }
        let window = self.ctx.settings.window as usize;
        if self.deliver(first, window).await? {
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
        let relay = &self.ctx.relay;
        let store = relay.store();
        let inbox = self.delivery.key.into();
        loop {
            let now = relay.clock().now_ms();
            let (read, limit) = match self.delivery.next_read(ack.take()) {
                Read::Idle => return Ok(()),
                Read::Ack(through) => {
                    if let Err(e) = store.ack(&inbox, through).await {
                        // Not deleted now means redelivered later: never lost.
                        tracing::warn!(error = %e, "ack not applied");
                        relay.metrics().store_errors.inc();
                    }
                    return Ok(());
                }
                Read::Fetch { after, limit } => {
                    (store.fetch(&inbox, Some(after), limit, now).await, limit)
                }
                Read::AckAndFetch {
                    through,
                    after,
                    limit,
                } => (
                    store
                        .ack_and_fetch(&inbox, through, Some(after), limit, now)
                        .await,
                    limit,
                ),
            };
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    // The session stays up; the next wake-up or ack retries the read.
                    tracing::warn!(error = %e, "store read failed");
                    relay.metrics().store_errors.inc();
                    return Ok(());
                }
            };
            if !self.deliver(batch, limit).await? {
                return Ok(());
            }
        }
    }

    /// Sends what a batch read with `limit` becomes; `true` when the state says to read
    /// on (the batch was full).
    async fn deliver(&mut self, batch: Batch, limit: usize) -> Result<bool, End> {
        let stored_at = stored_at(&batch);
        let deliveries = self.delivery.on_batch(batch, limit).map_err(resync)?;
        self.send_deliveries(&deliveries.frames, &stored_at).await?;
        Ok(deliveries.read_more)
    }

    /// Sends frames from `Delivery::on_batch`, recording each delivery's latencies.
    async fn send_deliveries(
        &mut self,
        frames: &[ServerFrame],
        stored_at: &[(u64, u64)],
    ) -> Result<(), End> {
        let relay = &self.ctx.relay;
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
                    let now = relay.clock().now_ms();
                    let stored = stored_at[i].1;
                    relay
                        .metrics()
                        .observe_delivery(now, envelope.timestamp, stored);
                    let event = Event::MessageDelivered {
                        kind: "stored",
                        bytes: envelope.body.len(),
                        queue_ms: now.saturating_sub(stored),
                    };
                    relay.analytics().record(now, event);
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

    async fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Send {
                reference,
                envelope,
            } => {
                let bytes = envelope.body.len();
                let verifying = self.ctx.relay.begin_verify(envelope, self.ctx.client_ip);
                self.sends.push_back(PipelinedSend {
                    reference,
                    bytes,
                    verifying,
                });
                Ok(())
            }
            Frame::Ack { seq } => self.on_ack(seq).await,
            Frame::Auth { .. } => self.conn.send(&already_authenticated()).await,
        }
    }

    /// Rate-limits, stores and answers the oldest send, whose check is done.
    async fn answer_oldest(&mut self) -> Result<(), End> {
        let Some(send) = self.sends.pop_front() else {
            return Ok(());
        };
        let relay = &self.ctx.relay;
        let verified = send.verifying.and_then(|v| relay.finish_verify(v));
        let answer = match relay.accept(verified, send.bytes, self.ctx.client_ip).await {
            Ok(a) => ServerFrame::Accepted {
                reference: send.reference,
                id: a.id,
                duplicate: a.duplicate,
                online: a.online,
            },
            Err(e) => e.to_frame(send.reference),
        };
        self.conn.feed(&answer).await?;
        match answer {
            ServerFrame::Error { code, .. } if self.strikes.on_refusal(code) => {
                Err(CloseReason::BadSignatures.into())
            }
            _ => Ok(()),
        }
    }

    async fn on_ack(&mut self, seq: u64) -> Result<(), End> {
        match self.delivery.on_ack(seq) {
            AckAction::Refuse(frame) => self.conn.send(&frame).await,
            AckAction::Delete(cursor) => self.pump_after(Some(cursor)).await,
        }
    }

    /// Delivers the ephemeral envelopes queued now (one wake-up may stand for several);
    /// any pushed meanwhile wait for the next turn, after shutdown, input and answers.
    async fn drain_ephemeral(&mut self) -> Result<(), End> {
        for env in self.ephemeral.take_queued() {
            self.on_ephemeral(env).await?;
        }
        Ok(())
    }

    async fn on_ephemeral(&mut self, env: Arc<VerifiedEnvelope>) -> Result<(), End> {
        let metrics = self.ctx.relay.metrics();
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
    use crate::protocol::{auth_signing_bytes, ClientFrame, Envelope, Identity};
    use crate::registry::Registry;
    use crate::store::MemoryStore;
    use crate::ws::mock::{pair, Peer};
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    fn relay(config: &Config) -> Arc<Relay> {
        let store = MemoryStore::new(crate::store::StoreLimits::from_config(config));
        Arc::new(Relay::builder(store, Arc::new(Registry::new()), Clock::manual()).build(config))
    }

    fn settings(config: &Config) -> SessionSettings {
        SessionSettings {
            window: config.ws_max_inflight,
            pipelined_sends: config.ws_max_pipelined_sends,
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
        spawn_on(mock, config, relay(config))
    }

    fn spawn_on(
        mock: crate::ws::mock::Mock,
        config: &Config,
        relay: Arc<Relay>,
    ) -> tokio::task::JoinHandle<()> {
        let ctx = SessionContext {
            codec: Codec::Json,
            origin: "relay.example".into(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            relay,
            settings: settings(config),
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(run(mock, ctx))
    }

    /// The next text frame the relay wrote, decoded.
    async fn next_frame(peer: &mut Peer) -> ServerFrame {
        loop {
            match peer.from_relay.next().await {
                Some(Message::Text(t)) => return Codec::Json.decode(t.as_bytes()).unwrap(),
                Some(_) => continue,
                None => panic!("the relay closed the socket"),
            }
        }
    }

    fn send_json(peer: &Peer, frame: &ClientFrame) {
        let Ok(crate::protocol::Encoded::Text(text)) = Codec::Json.encode(frame) else {
            panic!("JSON frames are text");
        };
        peer.to_relay
            .unbounded_send(Ok(Message::text(text)))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_for_the_ack_which_reads_on_in_the_same_round_trip() {
        let config = Config::from_toml("ws_max_inflight = 2\n").unwrap();
        let relay = relay(&config);
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let now = relay.clock().now_ms();
        for n in 0..3u8 {
            let verified = Envelope::seal(&alice, bob.public_key(), now, false, vec![n])
                .verify(now, 1000)
                .unwrap();
            relay.store().insert(&verified, now).await.unwrap();
        }
        let (mock, mut peer) = pair(16);
        let session = spawn_on(mock, &config, relay.clone());
        let ServerFrame::Challenge {
            nonce,
            origin,
            timestamp,
        } = next_frame(&mut peer).await
        else {
            panic!("no challenge first");
        };
        let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
        let key = bob.public_key();
        let signature = bob.sign(&auth_signing_bytes(&nonce, &key, timestamp, &origin));
        send_json(
            &peer,
            &ClientFrame::Auth {
                key: key.as_bytes().to_vec(),
                timestamp,
                signature: signature.to_bytes().to_vec(),
                cursor: None,
            },
        );
        assert!(matches!(
            next_frame(&mut peer).await,
            ServerFrame::Ready { window: 2, .. }
        ));
        let seqs = |frame| match frame {
            ServerFrame::Deliver { seq: Some(seq), .. } => seq,
            other => panic!("{other:?}"),
        };
        assert_eq!(seqs(next_frame(&mut peer).await), 1);
        assert_eq!(seqs(next_frame(&mut peer).await), 2);
        // The window is full: nothing more, and no `synced`, until an ack.
        send_json(&peer, &ClientFrame::Ack { seq: 2 });
        assert_eq!(seqs(next_frame(&mut peer).await), 3);
        assert!(matches!(
            next_frame(&mut peer).await,
            ServerFrame::Synced { seq: 3, .. }
        ));
        let inbox = key.into();
        let left = relay.store().fetch(&inbox, None, 10, now).await.unwrap();
        let left: Vec<u64> = left.messages.iter().map(|m| m.seq).collect();
        assert_eq!(left, [3], "the ack deleted 1 and 2 as it read 3");
        peer.to_relay.close_channel();
        session.await.unwrap();
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
