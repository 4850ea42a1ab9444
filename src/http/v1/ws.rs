//! `WS /ws/{key}` and `WS /ws?recipient=<key>`: the v1 push socket. It pushes each
//! queued v1 message for `key` as one JSON text frame (the inbox fields plus `to`),
//! first the backlog, then live ones as the registry wakes it; a message counts as
//! handed out only after its frame was written (see `reader`). It also forwards live
//! copies of what `key` (as a signing key) sent. Text from the client (`ping`) is
//! ignored. The socket registers before its first store read, so nothing falls
//! between the backlog and the live messages.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;

use super::error::V1Error;
use super::inbox::V1Message;
use super::{parse_key, V1State};
use crate::http::{admit_upgrade, run_upgraded};
use crate::metrics::DeliveryTransport;
use crate::protocol::whispr_v1::{inbox_key, StoredV1};
use crate::protocol::PublicKey;
use crate::ws::{CloseReason, End, NotAnUpgrade, Socket, SocketLimits, Transport, Upgrade};

pub async fn by_path(
    state: State<V1State>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, V1Error> {
    upgrade(state, peer, headers, &key, ws)
}

pub async fn by_query(
    state: State<V1State>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<Upgrade, NotAnUpgrade>,
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
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, V1Error> {
    let to = parse_key(key)?;
    let app = &v1.app;
    let ip = crate::http::client_ip(peer.ip(), &headers, &app.config.trusted_proxies);
    let admitted = admit_upgrade(app, ws, ip, app.config.max_frame_bytes())?;
    let state = v1.clone();
    Ok(run_upgraded(app, admitted, move |socket| {
        V1Socket::new(state, to).run(socket)
    }))
}

/// One v1 socket's context.
struct V1Socket {
    v1: V1State,
    to: PublicKey,
    inbox: PublicKey,
}

impl V1Socket {
    fn new(v1: V1State, to: PublicKey) -> Self {
        V1Socket {
            inbox: inbox_key(&to),
            v1,
            to,
        }
    }

    async fn run<T: Transport>(self, transport: T) {
        let app = &self.v1.app;
        let registry = app.relay.registry().clone();
        let (mut wake, mut copies) = registry.register_v1(self.inbox, self.to);
        let limits = SocketLimits::from_config(&app.config);
        let mut socket = Socket::new(transport, limits, app.relay.metrics().clone());
        // v1 clients answer pings and ping every 30 s themselves; a dead peer is
        // closed with 4005 by the socket layer.
        socket.start_pinging();
        let shutdown = app.shutdown.clone();
        let mut result = self.on_wake(&mut socket).await;
        while result.is_ok() {
            result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(CloseReason::Shutdown.into()),
                // Text from the client (`ping`) is ignored.
                msg = socket.recv() => msg.map(drop),
                changed = wake.changed() => match changed {
                    Ok(()) => self.on_wake(&mut socket).await,
                    Err(_) => Err(End::Gone),
                },
                copy = copies.recv() => match copy {
                    Ok(envelope) => self.on_copy(&mut socket, &envelope.envelope().body).await,
                    Err(RecvError::Lagged(_)) => Ok(()),
                    Err(RecvError::Closed) => Err(End::Gone),
                },
            };
        }
        drop((wake, copies));
        registry.unregister_v1(&self.inbox, &self.to);
        if let Err(end) = result {
            socket.close(end).await;
        }
    }

    fn frame(message: &StoredV1) -> Message {
        let text = serde_json::to_string(&V1Message::new(message, true)).unwrap_or_default();
        Message::Text(text.into())
    }

    /// Writes every queued message not handed out yet; each is handed out once written.
    async fn on_wake<T: Transport>(&self, socket: &mut Socket<T>) -> Result<(), End> {
        let limit = self.v1.app.config.max_messages_per_recipient;
        let relay = &self.v1.app.relay;
        let mut pending = match self.v1.readers.open(relay, &self.to, limit).await {
            Ok(pending) => pending,
            Err(e) => {
                // Nothing was handed out; the socket stays up and the next wake-up or
                // catch-up reads again (as native sessions do while Redis is away).
                tracing::warn!(error = %e, "v1 socket: store read failed");
                relay.metrics().store_errors.inc();
                return Ok(());
            }
        };
        let mut written = Ok(());
        for (seq, message) in pending.unhandled() {
            written = socket.send(Self::frame(&message)).await;
            if written.is_err() {
                break;
            }
            pending.mark(seq);
            relay.metrics().delivered_over(DeliveryTransport::V1Ws, 1);
        }
        let acked = pending.finish().await;
        written?;
        acked.map_err(|_| CloseReason::Unavailable.into())
    }

    /// The sender's copy of a message it just sent (live only, never stored twice).
    async fn on_copy<T: Transport>(&self, socket: &mut Socket<T>, body: &[u8]) -> Result<(), End> {
        match serde_json::from_slice::<StoredV1>(body) {
            Ok(message) => {
                socket.send(Self::frame(&message)).await?;
                self.v1
                    .app
                    .relay
                    .metrics()
                    .delivered_over(DeliveryTransport::V1Ws, 1);
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}
