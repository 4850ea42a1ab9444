//! HTTP routes: the WebSocket upgrade, the polling fallback, health and info; and
//! serving them (`serve`: hyper with deadlines, `gate`: connection caps, `activity`:
//! the idle and write-stall watch, `body`: body limits and deadlines).
//! Every error leaves through [`crate::error::ApiError`] as JSON `{error, detail}`.

mod activity;
mod admission;
mod blobs;
mod body;
mod client_ip;
mod draining;
mod gate;
mod health;
pub(crate) mod limits;
mod poll;
mod serve;
pub mod v1;
mod ws;

pub use admission::{Admission, Permit};
pub use blobs::parse_upload_query;
pub use client_ip::client_ip;
pub use gate::{ConnCaps, Gate};
pub use poll::{parse_inbox_query, InboxQuery};
pub use serve::{serve, Endpoint, HttpLimits};

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blobs::Attachments;
use crate::config::Config;
use crate::error::ApiError;
use crate::protocol::{Codec, ErrorCode};
use crate::relay::Relay;
use crate::ws::{NotAnUpgrade, Upgrade, UpgradeConfig, WsStream};
use draining::{native_refusal, refuse_when_draining};

/// Shared state of every handler.
pub struct App {
    pub relay: Arc<Relay>,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
    /// Sessions are spawned through this so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// WebSocket connection limits.
    pub admission: Arc<Admission>,
    /// The main listener's HTTP connection counts (sampled into `/metrics`).
    pub http_gate: Arc<Gate>,
    /// Attachments (`POST /v1/blobs`, v1 `POST /upload`) and their bytes in flight:
    /// the store is Redis when the message store is Redis, else memory.
    pub blobs: Attachments,
    /// Call signalling rooms (Whispr v1 `/signal`).
    pub signal: Arc<crate::signal::Rooms>,
}

pub type AppState = Arc<App>;

pub fn router(app: AppState) -> Router {
    let separate_metrics = app.config.metrics_listen.is_some();
    // What starts work, and readiness, refuses while the relay drains.
    let draining = |route| refuse_when_draining(route, &app.shutdown, native_refusal);
    let routes = Router::new()
        .route("/v1/ws", draining(get(ws::upgrade)))
        .route("/v1/send", draining(post(poll::send)))
        .route("/v1/inbox", get(poll::inbox))
        .route("/v1/blobs", draining(post(blobs::upload)))
        .route("/v1/blobs/{sha256}", get(blobs::download))
        .route("/v1/info", get(health::info))
        .route("/healthz", get(health::healthz))
        .route("/readyz", draining(get(health::readyz)));
    let routes = if separate_metrics {
        routes
    } else {
        routes.route("/metrics", get(health::metrics))
    };
    let compat = app.config.compat_whispr_v1.then(|| v1::router(app.clone()));
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app);
    match compat {
        Some(v1) => router.merge(v1),
        None => router,
    }
}

/// The router of `metrics_listen`: only `GET /metrics`.
pub fn metrics_router(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see GET /v1/info")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}

/// What every WebSocket upgrade (native, v1, `/signal`) goes through before its socket
/// runs (after the draining layer refused it during shutdown): a real upgrade request,
/// the connection limits (the
/// permit must live as long as the socket), the socket buffer sizes and caps, and the
/// largest message it may read.
pub(crate) fn admit_upgrade(
    app: &App,
    ws: Result<Upgrade, NotAnUpgrade>,
    ip: IpAddr,
    max_message_bytes: usize,
) -> Result<Admitted, ApiError> {
    let upgrade = ws.map_err(|e| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("not a WebSocket upgrade: {e}"),
        )
    })?;
    let permit = app.admission.admit(ip)?;
    Ok(Admitted {
        upgrade,
        config: UpgradeConfig::new(&app.config, max_message_bytes),
        permit,
    })
}

/// An upgrade that passed [`admit_upgrade`].
pub(crate) struct Admitted {
    upgrade: Upgrade,
    config: UpgradeConfig,
    permit: Permit,
}

impl Admitted {
    /// Answers with this subprotocol if the client offered it.
    pub(crate) fn protocol(mut self, protocol: &'static str) -> Self {
        self.upgrade = self.upgrade.protocol(protocol);
        self
    }
}

/// Completes an admitted upgrade: `socket` runs on the upgraded connection, tracked so
/// shutdown waits for it, and the connection's permit is released when it ends.
pub(crate) fn run_upgraded<F, Fut>(app: &App, admitted: Admitted, socket: F) -> Response
where
    F: FnOnce(WsStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Admitted {
        upgrade,
        config,
        permit,
    } = admitted;
    upgrade.on_upgrade(config, &app.tracker, move |ws| async move {
        socket(ws).await;
        drop(permit);
    })
}

impl App {
    /// The origin bound into signatures: the configured one, else the request's Host
    /// header, else the URI's authority (HTTP/2 carries it there).
    fn origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<String, ApiError> {
        if let Some(origin) = &self.config.origin {
            return Ok(origin.clone());
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
            .ok_or_else(|| ApiError::new(ErrorCode::Malformed, "missing Host header"))
    }
}

/// Encodes an answer in the codec the client asked for.
fn encoded<T: serde::Serialize>(
    codec: Codec,
    status: StatusCode,
    value: &T,
) -> Result<Response, ApiError> {
    let body = codec
        .encode(value)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .into_bytes();
    Ok((status, [(header::CONTENT_TYPE, codec.content_type())], body).into_response())
}

/// The response codec from `Accept` (MessagePack if it names it, else JSON).
fn accept_codec(headers: &HeaderMap) -> Codec {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept
        .split(',')
        .any(|t| Codec::from_content_type(t) == Some(Codec::MsgPack))
    {
        Codec::MsgPack
    } else {
        Codec::Json
    }
}
