//! Serving a router on a TCP listener (plain or TLS) with hyper directly, because
//! `axum::serve` has no timer (no deadline for a request head, none for an idle
//! keep-alive connection) and accepts every connection it is offered.
//!
//! One task per connection, spawned through the relay's `TaskTracker`:
//! accept (`TCP_NODELAY` on) → [`Gate`] (serve, reserve, or close at once) → the TLS
//! handshake within the head deadline → hyper's HTTP/1.1 connection with upgrades
//! (the relay is HTTP/1.1 only: WebSockets upgrade over it, and TLS offers only
//! `http/1.1` by ALPN). Deadlines: hyper's `header_read_timeout`
//! (`http_header_read_timeout_seconds`, from the accept or the end of the previous
//! response to a complete head), [`activity`]'s watch of idle keep-alive connections
//! (`http_keep_alive_timeout_seconds`) and of answers the client does not read
//! (`http_write_timeout_seconds`), and each body-reading route's own deadline
//! (`body.rs`). On shutdown each connection finishes the request it is in and closes;
//! the relay waits for them within `shutdown_grace_seconds`, as for sessions.
//!
//! Before routing, every request is checked for what must not reach a handler: more
//! than one `Host` header (400: which one signatures bind would be ambiguous), and on
//! a reserve connection anything but `/healthz`, `/readyz` and `/metrics` (the
//! gate's refusal, 429 or 503).

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::activity::{Activity, Deadlines, InProgress, Tracked, Watched};
use super::client_ip::{canonical, check_forwarding_headers, is_trusted_proxy};
use super::gate::{ConnCaps, ConnPermit, Gate, Refusal, Verdict};
use super::AppState;
use crate::error::ApiError;
use crate::protocol::ErrorCode;
use crate::telemetry::{client_failure, ClientFailure};
use crate::tls::{HandshakeFailure, ReloadableTls};

/// Deadlines and caps of HTTP connections (the `http_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub write: Duration,
    pub max_head_bytes: usize,
    pub caps: ConnCaps,
}

/// What one listener serves: its routes, its connection counts, and TLS if any.
pub struct Endpoint {
    pub router: Router,
    pub gate: Arc<Gate>,
    pub tls: Option<ReloadableTls>,
    pub limits: HttpLimits,
}

/// Paths a reserve connection is served: health checks and the scrape.
fn reserve_serves(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Accepts one connection and sets `TCP_NODELAY` on it: answers and WebSocket frames
/// are small writes that must leave at once, not wait for Nagle's algorithm to
/// gather more. `Ok(None)`: the connection was gone before it could be set up.
async fn accept(tcp: &TcpListener) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    let (stream, peer) = tcp.accept().await?;
    match stream.set_nodelay(true) {
        Ok(()) => Ok(Some((stream, peer))),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY; dropping the connection");
            Ok(None)
        }
    }
}

/// Accepts on `tcp` until the relay shuts down.
pub async fn serve(tcp: TcpListener, endpoint: Endpoint, app: AppState) {
    let endpoint = Arc::new(endpoint);
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            accepted = accept(&tcp) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = canonical(peer.ip());
        let exempt = is_trusted_proxy(ip, &app.config.trusted_proxies);
        let refused = |why: Refusal, action: &str| {
            app.relay
                .metrics()
                .http_refused
                .with_label_values(&[why.label(), action])
                .inc();
        };
        let (permit, refusal) = match endpoint.gate.admit(ip, exempt) {
            Verdict::Serve(permit) => (permit, None),
            Verdict::Reserve(permit, why) => {
                refused(why, "reserve");
                (permit, Some(why))
            }
            Verdict::Close(why) => {
                refused(why, "closed");
                tracing::debug!(%peer, cap = why.label(), "HTTP connection caps and reserve full; closed");
                continue;
            }
        };
        let conn = Conn {
            app: app.clone(),
            endpoint: endpoint.clone(),
            peer,
            refusal,
            activity: Activity::new(),
        };
        app.tracker.spawn(conn.run(stream, permit));
    }
}

/// One accepted connection.
struct Conn {
    app: AppState,
    endpoint: Arc<Endpoint>,
    peer: SocketAddr,
    /// Set on a reserve connection: why its requests (but health checks) are refused.
    refusal: Option<Refusal>,
    activity: Arc<Activity>,
}

impl Conn {
    /// Serves the connection; its place in the gate is given back when it ends, or
    /// when a WebSocket upgrade takes the connection over.
    async fn run(self, stream: TcpStream, permit: ConnPermit) {
        let io = Watched::new(stream, self.activity.clone());
        let limits = self.endpoint.limits;
        match self.endpoint.tls.clone() {
            None => self.http(io).await,
            Some(tls) => match tls.handshake(io, limits.header_read).await {
                Ok(stream) => self.http(stream).await,
                Err(failure) => {
                    let reason = match &failure {
                        HandshakeFailure::TimedOut => {
                            self.timed_out("handshake");
                            "not complete before http_header_read_timeout_seconds".to_string()
                        }
                        HandshakeFailure::Failed(e) => e.to_string(),
                    };
                    if let Some(suppressed) = client_failure(ClientFailure::TlsHandshake) {
                        tracing::info!(ip = %self.peer.ip(), %reason, suppressed, "TLS handshake failed");
                    }
                }
            },
        }
        drop(permit);
    }

    fn timed_out(&self, phase: &str) {
        self.app
            .relay
            .metrics()
            .http_timeouts
            .with_label_values(&[phase])
            .inc();
    }

    /// HTTP/1.1 on an established (plain or TLS) stream, until it closes, is idle too
    /// long, is upgraded, or has finished its request after shutdown began.
    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.endpoint.limits;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .max_buf_size(limits.max_head_bytes)
            // A reserve connection answers one request and closes.
            .keep_alive(self.refusal.is_none());
        let conn = Arc::new(self);
        let service = {
            let conn = conn.clone();
            hyper::service::service_fn(move |req| {
                let request = conn.activity.begin();
                conn.clone().respond(req, request)
            })
        };
        let served = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(served);
        let expired = conn.activity.expired(Deadlines {
            keep_alive: limits.keep_alive,
            write: limits.write,
        });
        tokio::pin!(expired);
        let mut draining = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    match result {
                        Err(e) if e.is_timeout() => conn.timed_out("head"),
                        Err(e) => tracing::debug!(peer = %conn.peer, error = %e, "HTTP connection ended with an error"),
                        Ok(()) => {}
                    }
                    return;
                }
                expiry = &mut expired => {
                    // Idle, or a client that does not read its answer: dropping the
                    // connection closes it (and drops that answer).
                    conn.timed_out(expiry.label());
                    return;
                }
                _ = conn.app.shutdown.cancelled(), if !draining => {
                    served.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }

    /// One request: checked, then routed; the answer keeps it in progress until sent.
    async fn respond(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        request: InProgress,
    ) -> Result<Response<Tracked>, Infallible> {
        let response = match self.check(&req) {
            Err(refusal) => {
                let mut response = refusal.into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            Ok(()) => {
                check_forwarding_headers(
                    self.peer.ip(),
                    req.headers(),
                    &self.app.config.trusted_proxies,
                );
                req.extensions_mut().insert(ConnectInfo(self.peer));
                let router = self.endpoint.router.clone();
                match router.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        };
        Ok(response.map(|body| Tracked::new(body, request)))
    }

    /// What is refused before routing.
    fn check(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
            return Err(ApiError::new(
                ErrorCode::Malformed,
                "more than one Host header",
            ));
        }
        match self.refusal {
            Some(why) if !reserve_serves(req.uri().path()) => Err(self.endpoint.gate.refusal(why)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_set() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let client = tokio::spawn(TcpStream::connect(addr));
        let (server_side, peer) = accept(&tcp).await.unwrap().expect("a connection");
        let client = client.await.unwrap().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(
            server_side.nodelay().unwrap(),
            "TCP_NODELAY on the relay's side"
        );
    }

    #[test]
    fn the_reserve_serves_health_checks_only() {
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert!(reserve_serves(path), "{path}");
        }
        for path in ["/v1/send", "/v1/ws", "/healthz/x", "/", "/send"] {
            assert!(!reserve_serves(path), "{path}");
        }
    }
}
