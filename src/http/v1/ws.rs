//! `WS /ws/{key}` and `WS /ws?recipient=<key>`: the v1 push socket. It pushes each
//! queued v1 message for `key` as one JSON text frame (the inbox fields plus `to`),
//! first the backlog, then live ones as the registry wakes it; a message counts as
//! handed out only after its frame was written (see `reader`). It also forwards live
//! copies of what `key` (as a signing key) sent. Text from the client (`ping`) is
//! ignored. The socket registers before its first store read, so nothing falls
//! between the backlog and the live messages.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::error::V1Error;
use super::inbox::V1Message;
use super::{parse_key, V1State};
use crate::error::close_code;
use crate::http::{admit_upgrade, run_upgraded};
use crate::protocol::whispr_v1::{inbox_key, StoredV1};
use crate::protocol::PublicKey;
use crate::session::sleep_until_opt;

pub async fn by_path(
    state: State<V1State>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, V1Error> {
    upgrade(state, peer, headers, &key, ws)
}

pub async fn by_query(
    state: State<V1State>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, V1Error> {
    let key = query.get("recipient").ok_or_else(|| {
        V1Error::Unprocessable("the recipient query parameter is required".into())
    })?;
    upgrade(state, peer, headers, key, ws)
}

fn upgrade(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    key: &str,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, V1Error> {
    let to = parse_key(key)?;
    let app = &v1.app;
    let ip = crate::http::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let (ws, permit) = admit_upgrade(app, ws, ip, app.config.max_frame_bytes())?;
    let state = v1.clone();
    Ok(run_upgraded(app, ws, permit, move |socket| {
        V1Socket::new(state, to).run(socket)
    }))
}

/// Why a v1 socket ends.
enum End {
    Gone,
    Close(u16, &'static str),
}

/// One v1 socket's context.
struct V1Socket {
    v1: V1State,
    to: PublicKey,
    inbox: PublicKey,
    write_timeout: Duration,
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// How long a closing socket waits for the client's Close before dropping TCP.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(1);

impl V1Socket {
    fn new(v1: V1State, to: PublicKey) -> Self {
        let write_timeout = Duration::from_secs(v1.app.config.ws_write_timeout_seconds);
        V1Socket {
            inbox: inbox_key(&to),
            v1,
            to,
            write_timeout,
        }
    }

    async fn run(self, socket: WebSocket) {
        let registry = self.v1.app.relay.registry.clone();
        let (mut wake, mut copies) = registry.register_v1(self.inbox, self.to);
        let (mut sink, mut stream) = socket.split();
        let shutdown = self.v1.app.shutdown.clone();
        let mut ping = tokio::time::interval(Duration::from_secs(
            self.v1.app.config.ws_ping_interval_seconds,
        ));
        ping.reset();
        let pong_timeout = Duration::from_secs(self.v1.app.config.ws_pong_timeout_seconds);
        // Set by a ping, cleared by any frame from the client (v1 clients answer pings
        // and ping every 30 s themselves): a dead peer is closed with 4005.
        let mut pong_deadline: Option<Instant> = None;
        let mut result = self.on_wake(&mut sink).await;
        while result.is_ok() {
            result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(End::Close(close_code::GOING_AWAY, "relay shutting down")),
                msg = stream.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Err(End::Gone),
                    Some(Ok(_)) => {
                        pong_deadline = None;
                        Ok(())
                    }
                },
                changed = wake.changed() => match changed {
                    Ok(()) => self.on_wake(&mut sink).await,
                    Err(_) => Err(End::Gone),
                },
                copy = copies.recv() => match copy {
                    Ok(envelope) => self.on_copy(&mut sink, &envelope.envelope().body).await,
                    Err(RecvError::Lagged(_)) => Ok(()),
                    Err(RecvError::Closed) => Err(End::Gone),
                },
                _ = ping.tick() => {
                    pong_deadline.get_or_insert_with(|| Instant::now() + pong_timeout);
                    self.write(&mut sink, Message::Ping(Default::default())).await
                }
                _ = sleep_until_opt(pong_deadline) => Err(End::Close(close_code::PING_TIMEOUT, "no pong within the deadline")),
            };
        }
        if let Err(End::Close(code, reason)) = result {
            let close = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ =
                tokio::time::timeout(self.write_timeout, sink.send(Message::Close(Some(close))))
                    .await;
            // The closing handshake: wait (bounded) for the client's Close before the
            // TCP connection goes, so the client reads our close code rather than a
            // reset when it still had a pong to write.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
                while let Some(Ok(msg)) = stream.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        drop((wake, copies));
        registry.unregister_v1(&self.inbox, &self.to);
    }

    async fn write(&self, sink: &mut Sink, msg: Message) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, sink.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    fn frame(message: &StoredV1) -> Message {
        let text = serde_json::to_string(&V1Message::new(message, true)).unwrap_or_default();
        Message::Text(text.into())
    }

    /// Writes every queued message not handed out yet; each is handed out once written.
    async fn on_wake(&self, sink: &mut Sink) -> Result<(), End> {
        let limit = self.v1.app.config.max_messages_per_recipient;
        let relay = &self.v1.app.relay;
        let mut pending = match self.v1.readers.open(relay, &self.to, limit).await {
            Ok(pending) => pending,
            Err(e) => {
                // Nothing was handed out; the socket stays up and the next wake-up or
                // catch-up reads again (as native sessions do while Redis is away).
                tracing::warn!(error = %e, "v1 socket: store read failed");
                relay.metrics.store_errors.inc();
                return Ok(());
            }
        };
        let mut written = Ok(());
        for (seq, message) in pending.unhandled() {
            written = self.write(sink, Self::frame(&message)).await;
            if written.is_err() {
                break;
            }
            pending.mark(seq);
        }
        let acked = pending.finish().await;
        written?;
        acked.map_err(|_| End::Close(close_code::UNAVAILABLE, "message store unavailable"))
    }

    /// The sender's copy of a message it just sent (live only, never stored twice).
    async fn on_copy(&self, sink: &mut Sink, body: &[u8]) -> Result<(), End> {
        match serde_json::from_slice::<StoredV1>(body) {
            Ok(message) => self.write(sink, Self::frame(&message)).await,
            Err(_) => Ok(()),
        }
    }
}
