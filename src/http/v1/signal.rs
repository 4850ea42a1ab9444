//! `GET /signal`: the v1 call signalling socket. The rooms and every decision about a
//! frame are in [`crate::signal`]; this is the socket loop around one
//! [`Member`]: read text frames and hand them over, write what the rooms queued for
//! this socket, ping, and close.
//!
//! It is admitted like every other WebSocket (global and per-IP caps, accept rate), and
//! ends with 1001 on shutdown, 4002 when it cannot keep up with its outbox or does not
//! read (slow consumer), 1002 or 1007 for broken WebSocket framing, 4005 when nothing came back within `ws_pong_timeout_seconds` of a ping,
//! and 1009 for a message over twice `signal_max_message_bytes` (smaller oversized
//! frames only get an error frame). Binary frames are ignored: v1 clients send text.

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::error::V1Error;
use super::V1State;
use crate::http::{admit_upgrade, run_upgraded};
use crate::metrics::Metrics;
use crate::signal::Member;
use crate::ws::{
    CloseReason, End, Inbound, NotAnUpgrade, Socket, SocketLimits, Transport, Upgrade,
};

pub async fn upgrade(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, V1Error> {
    let app = &v1.app;
    let c = &app.config;
    let ip = crate::http::client_ip(peer.ip(), &headers, &c.trusted_proxies);
    let admitted = admit_upgrade(app, ws, ip, c.signal_max_ws_message_bytes())?;
    let (member, outbox) = app.signal.connect();
    let socket = SignalSocket {
        slow: member.slow(),
        member,
        outbox,
        shutdown: app.shutdown.clone(),
        limits: SocketLimits::from_config(c),
    };
    let metrics = app.relay.metrics().clone();
    Ok(run_upgraded(app, admitted, move |ws| {
        socket.run(ws, metrics)
    }))
}

/// One `/signal` socket's context. Dropping it (its `member`) leaves every room.
struct SignalSocket {
    member: Member,
    outbox: mpsc::Receiver<Arc<str>>,
    slow: CancellationToken,
    shutdown: CancellationToken,
    limits: SocketLimits,
}

impl SignalSocket {
    async fn run<T: Transport>(mut self, transport: T, metrics: Arc<Metrics>) {
        let mut socket = Socket::new(transport, self.limits.clone(), metrics);
        socket.start_pinging();
        let end = self.serve(&mut socket).await;
        // Leave every room now, so peers hear `peer-leave` without waiting for the
        // close handshake.
        drop(self);
        socket.close(end).await;
    }

    async fn serve<T: Transport>(&mut self, socket: &mut Socket<T>) -> End {
        loop {
            let result = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Err(CloseReason::Shutdown.into()),
                _ = self.slow.cancelled() => Err(CloseReason::SlowConsumer.into()),
                msg = socket.recv() => match msg {
                    Ok(msg) => self.on_message(socket, msg).await,
                    Err(end) => Err(end),
                },
                Some(text) = self.outbox.recv() => socket.send(Message::text(&*text)).await,
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn on_message<T: Transport>(
        &mut self,
        socket: &mut Socket<T>,
        msg: Inbound,
    ) -> Result<(), End> {
        match msg {
            Inbound::Text(text) => match self.member.on_text(text.as_str()) {
                Some(answer) => socket.send(Message::text(&*answer)).await,
                None => Ok(()),
            },
            Inbound::Binary(_) => Ok(()),
        }
    }
}
