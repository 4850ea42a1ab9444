//! `GET /signal`: the v1 call signalling socket. The rooms and every decision about a
//! frame are in [`crate::signal`]; this is the socket loop around one
//! [`Member`]: read text frames and hand them over, write what the rooms queued for
//! this socket, ping, and close.
//!
//! It is admitted like every other WebSocket (global and per-IP caps, accept rate), and
//! ends with 1001 on shutdown, 4002 when it cannot keep up with its outbox (slow
//! consumer), 4005 when nothing came back within `ws_pong_timeout_seconds` of a ping,
//! and 1009 for a message over twice `signal_max_message_bytes` (smaller oversized
//! frames only get an error frame). Binary frames are ignored: v1 clients send text.

use crate::http::{admit_upgrade, run_upgraded};
use crate::session::sleep_until_opt;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::V1Error;
use super::V1State;
use crate::error::close_code;
use crate::signal::Member;

pub async fn upgrade(
    State(v1): State<V1State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, V1Error> {
    let app = &v1.app;
    let c = &app.config;
    let ip = crate::http::client_ip(peer.ip(), &headers, &c.trusted_proxies);
    let (ws, permit) = admit_upgrade(app, ws, ip, c.signal_max_ws_message_bytes())?;
    let (member, outbox) = app.signal.connect();
    let socket = SignalSocket {
        slow: member.slow(),
        member,
        outbox,
        shutdown: app.shutdown.clone(),
        ping_interval: Duration::from_secs(c.ws_ping_interval_seconds),
        pong_timeout: Duration::from_secs(c.ws_pong_timeout_seconds),
        write_timeout: Duration::from_secs(c.ws_write_timeout_seconds),
        pong_deadline: None,
    };
    Ok(run_upgraded(app, ws, permit, move |ws| socket.run(ws)))
}

/// Why a signal socket ends.
enum End {
    Gone,
    Close(u16, &'static str),
}

/// One `/signal` socket's context. Dropping it (its `member`) leaves every room.
struct SignalSocket {
    member: Member,
    outbox: mpsc::Receiver<Arc<str>>,
    slow: CancellationToken,
    shutdown: CancellationToken,
    ping_interval: Duration,
    pong_timeout: Duration,
    write_timeout: Duration,
    pong_deadline: Option<Instant>,
}

impl SignalSocket {
    async fn run(mut self, mut socket: WebSocket) {
        let end = self.serve(&mut socket).await;
        let write_timeout = self.write_timeout;
        // Leave every room now, so peers hear `peer-leave` without waiting for the
        // close handshake.
        drop(self);
        if let End::Close(code, reason) = end {
            close(&mut socket, write_timeout, code, reason).await;
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let mut ping =
            tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        loop {
            let pong_deadline = self.pong_deadline;
            let result = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Err(End::Close(close_code::GOING_AWAY, "relay shutting down")),
                _ = self.slow.cancelled() => Err(End::Close(close_code::SLOW_CONSUMER, "slow consumer")),
                msg = socket.recv() => self.on_message(socket, msg).await,
                Some(text) = self.outbox.recv() => self.write(socket, Message::text(&*text)).await,
                _ = ping.tick() => self.on_ping_tick(socket).await,
                _ = sleep_until_opt(pong_deadline) => Err(End::Close(close_code::PING_TIMEOUT, "no pong within the deadline")),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn on_message(
        &mut self,
        socket: &mut WebSocket,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Result<(), End> {
        let msg = match msg {
            None | Some(Ok(Message::Close(_))) => return Err(End::Gone),
            Some(Err(e)) => return Err(on_receive_error(&e)),
            Some(Ok(msg)) => msg,
        };
        // Any frame from the client proves it is alive.
        self.pong_deadline = None;
        match msg {
            Message::Text(text) => match self.member.on_text(text.as_str()) {
                Some(answer) => self.write(socket, Message::text(&*answer)).await,
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    async fn on_ping_tick(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        if self.pong_deadline.is_none() {
            self.pong_deadline = Some(Instant::now() + self.pong_timeout);
        }
        self.write(socket, Message::Ping(Default::default())).await
    }

    /// Every write has a deadline; a peer that does not read is gone.
    async fn write(&self, socket: &mut WebSocket, msg: Message) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close_code::SLOW_CONSUMER, "slow consumer")),
        }
    }
}

/// Sends the close frame and waits briefly for the client's (the RFC 6455 handshake), so
/// the connection is not torn down under frames it has yet to read.
async fn close(socket: &mut WebSocket, write_timeout: Duration, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let handshake = async {
        socket.send(Message::Close(Some(frame))).await.ok()?;
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        Some(())
    };
    let _ = tokio::time::timeout(write_timeout.min(Duration::from_secs(2)), handshake).await;
}

/// A message over the WebSocket limit ends the socket with 1009; other receive
/// errors mean the connection is gone.
fn on_receive_error(e: &axum::Error) -> End {
    let text = e.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        End::Close(close_code::TOO_BIG, "message too big")
    } else {
        End::Gone
    }
}
