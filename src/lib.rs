//! whispr: a WebSocket-first push relay for end-to-end-encrypted chat.
//!
//! The relay verifies Ed25519-signed envelopes, queues them per recipient inbox until
//! acknowledged or expired, and pushes them to the recipient's authenticated session.
//! It never sees plaintext.
//!
//! # Layout
//! - [`protocol`]: wire format v1 (keys, envelopes, signing bytes, frames, codecs): the
//!   `whispr-proto` crate in `proto/`, whose dependency tree holds no runtime and no I/O.
//! - [`relay`]: the one write path: verify, rate-limit, store, notify.
//! - [`store`]: the `MessageStore` trait, the memory store, the conformance suite.
//! - [`blobs`]: attachments: the `BlobStore` trait, memory (byte budget) and Redis.
//! - [`registry`]: live sessions on this node (takeover, wake-ups, ephemeral pushes).
//! - [`notify`]: with Redis, wake-ups and takeovers between relay nodes (pub/sub).
//! - [`signal`]: call signalling rooms of the Whispr v1 `/signal` socket, across nodes
//!   over Redis pub/sub when the store is Redis.
//! - [`session`]: one WebSocket client: pure state machine plus socket loop.
//! - [`ws`]: the one WebSocket socket layer under every route: upgrade, bounded
//!   buffers, deadlines, pings, error classification, the close handshake.
//! - [`http`]: routes: WebSocket upgrade, polling fallback, health, info, and the
//!   Whispr v1 API for Python-era clients (`http::v1`, behind `compat_whispr_v1`);
//!   serving them with hyper: connection caps, deadlines, body limits.
//! - [`redis_keys`]: every Redis key and channel name, and the schema, in one place.
//! - [`server`]: builds everything and serves a listener until shutdown.
//! - [`config`]: layered, validated configuration.
//! - [`error`]: error types and their one mapping to HTTP statuses and close codes.
//! - [`client`]: the Rust client used by the command line and the tests: WebSocket and
//!   HTTP, TLS, the resumable [`client::Listener`], sealed-box encryption, key files.
//! - [`cli`]: the chat commands (`keygen`, `send`, `listen`, `inbox`) behind `main.rs`.
//! - [`clock`], [`shutdown`], [`telemetry`]: time, signals, logging.

/// The wire protocol: the `whispr-proto` crate in `proto/`, re-exported under its old path
/// so the relay, the client and their users keep one name for it.
pub use whispr_proto as protocol;

pub mod analytics;
pub mod bench;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod redis_keys;
pub mod redis_link;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod signal;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod ws;
