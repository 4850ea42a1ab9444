//! The Whispr v1 API, for unmodified clients of the original Python server: `POST /send`,
//! `GET /inbox/{key}`, `WS /ws/{key}` and `WS /ws?recipient=`, `GET /public-key`, and
//! the call signalling socket `WS /signal` (`signal`, over [`crate::signal`]).
//!
//! Why it is a separate router: v1 proves no key ownership, so it is a switch
//! (`compat_whispr_v1`) and lives in its own namespace of the same store. A v1 message is
//! verified by `protocol::whispr_v1` and goes through `Relay::submit_verified` (rate
//! limits, store, wake-up), like a native one; its inbox is a key derived from the v1
//! `to` key, which no native client can read and no v1 reader can point at a native
//! inbox. Reads hand messages out and acknowledge them in that namespace (`reader`).
//! Attachments (`attachments`: `POST /upload`, `GET /download/{att_id}`,
//! `GET /download/raw/{att_id}`) are checked here and kept in the relay's blob store;
//! `/signal` rooms live in `crate::signal`. Errors leave as v1's FastAPI shapes (`error`).

mod attachments;
mod error;
mod inbox;
mod reader;
mod send;
mod signal;
mod ws;

pub use inbox::parse_since;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

use super::draining::refuse_when_draining;
use super::AppState;
use crate::error::RelayError;
use crate::protocol::{KeyField, PublicKey};
pub use error::V1Error;

/// Shared state of the v1 handlers.
pub struct V1 {
    app: AppState,
    readers: reader::Readers,
    /// The server's X25519 public key in hex, answered by `GET /public-key`.
    server_key: String,
}

type V1State = Arc<V1>;

/// The v1 routes, with their own state (merged into the main router when the switch
/// is on). The server's X25519 key is generated here, once per process: v1 clients
/// only use it as a liveness probe, nothing is ever encrypted to it.
pub fn router(app: AppState) -> Router {
    let secret = crypto_box::SecretKey::generate(&mut rand::rngs::OsRng);
    let state = Arc::new(V1 {
        app,
        readers: reader::Readers::default(),
        server_key: hex::encode(secret.public_key().as_bytes()),
    });
    let shutdown = &state.app.shutdown;
    // What starts work refuses while the relay drains, in v1's error shape.
    let draining = |route| refuse_when_draining(route, shutdown, draining_refusal);
    Router::new()
        .route("/send", draining(post(send::send)))
        .route("/inbox/{key}", get(inbox::inbox))
        .route("/ws/{key}", draining(get(ws::by_path)))
        .route("/ws", draining(get(ws::by_query)))
        .route("/public-key", get(public_key))
        .route(
            "/upload",
            refuse_when_draining(
                post(attachments::upload),
                shutdown,
                attachments::draining_refusal,
            ),
        )
        .route("/download/{att_id}", get(attachments::download))
        .route("/download/raw/{att_id}", get(attachments::download_raw))
        .route("/signal", draining(get(signal::upgrade)))
        .with_state(state.clone())
}

/// What the relay logs once at start when v1 is on.
pub const STARTUP_WARNING: &str = "Whispr v1 compatibility is on (compat_whispr_v1): \
    POST /send, GET /inbox/{key}, /ws/{key}, GET /public-key, POST /upload and GET /download \
    are served without proof of key ownership; anyone who knows a v1 public key can read \
    that v1 inbox's ciphertext and metadata and take its messages from the owner (never a \
    native inbox), and fetch attachments whose id they know. \
    GET /signal relays call signalling between any sockets that name the same call_id, \
    unauthenticated: whoever knows or guesses a call_id can join that call's room. \
    Set compat_whispr_v1 = false when no v1 client is left";

/// A v1 route's answer while the relay drains: 503 `{"detail": ...}`.
fn draining_refusal() -> axum::response::Response {
    axum::response::IntoResponse::into_response(V1Error::from(RelayError::ShuttingDown))
}

async fn public_key(State(v1): State<V1State>) -> Json<Value> {
    Json(json!({ "public_key": v1.server_key, "analytics": false }))
}

/// A v1 key from a URL: 64 hex characters.
fn parse_key(key: &str) -> Result<PublicKey, V1Error> {
    PublicKey::from_hex(key, KeyField::Key)
        .map_err(|e| V1Error::Unprocessable(format!("key must be 64 hex characters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, StatusCode};

    async fn body(resp: axum::response::Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn while_draining_v1_answers_503_in_its_shape_and_uploads_say_when_to_retry() {
        let resp = draining_refusal();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(
            body(resp).await,
            r#"{"detail":"the relay is shutting down"}"#
        );
        let resp = attachments::draining_refusal();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            body(resp).await,
            r#"{"detail":"the relay is shutting down"}"#
        );
    }
}
