//! whispr: a WebSocket-first push relay for end-to-end-encrypted chat.
//!
//! The relay verifies Ed25519-signed envelopes, queues them per recipient inbox until
//! acknowledged or expired, and pushes them to the recipient's authenticated session.
//! It never sees plaintext.
//!
//! # Layout
//! The API, for the `whispr` binary and for programs that embed a relay or talk to one:
//! - [`protocol`]: wire format v1 (keys, envelopes, signing bytes, frames, codecs): the
//!   `whispr-proto` crate in `proto/`, whose dependency tree holds no runtime and no I/O.
//! - [`server`]: builds everything and serves a listener until shutdown.
//! - [`config`]: the layered loader and the typed tree of settings; each module below
//!   checks its own keys.
//! - [`error`]: error types and their one mapping to HTTP statuses and close codes.
//! - [`client`]: the Rust client used by the command line and the tests: WebSocket and
//!   HTTP, TLS, the resumable [`client::Listener`], sealed-box encryption, key files.
//! - [`cli`]: the chat commands (`keygen`, `send`, `listen`, `inbox`) behind `main.rs`.
//! - [`bench`]: `whispr bench`, the load generator and its report.
//! - [`clock`], [`shutdown`], [`telemetry`]: time, signals, logging.
//!
//! The relay's inside, private to the crate:
//! - `relay`: the one write path: verify, rate-limit, store, notify.
//! - `store`: the `MessageStore` trait, the memory and Redis stores, the conformance suite.
//! - `blobs`: attachments: the `BlobStore` trait, memory (byte budget) and Redis.
//! - `registry`: live sessions on this node (takeover, wake-ups, ephemeral pushes).
//! - `notify`: with Redis, wake-ups and takeovers between relay nodes (pub/sub).
//! - `redis_link`: where Redis is (one server or a cluster) and one connection type for
//!   both; the batch publisher.
//! - `redis_keys`: every Redis key and channel name, and the schema, in one place.
//! - `signal`: call signalling rooms of the Whispr v1 `/signal` socket, across nodes
//!   over Redis pub/sub when the store is Redis.
//! - `session`: one WebSocket client: pure state machine plus socket loop.
//! - `ws`: the one WebSocket socket layer under every route: upgrade, bounded
//!   buffers, deadlines, pings, error classification, the close handshake.
//! - `http`: routes: WebSocket upgrade, polling fallback, health, info, and the
//!   Whispr v1 API for Python-era clients (`http::v1`, behind `compat_whispr_v1`);
//!   serving them with hyper: connection caps, deadlines, body limits.
//! - `tls`: TLS termination: certificates from PEM files, reload on SIGHUP.
//! - `metrics`: every Prometheus metric, in one table.
//! - `analytics`: the optional JSON-lines event log.
//!
//! [`testing`] (hidden from the documentation) re-exports the few internals that the
//! integration tests, benchmarks, vector generator and fuzz targets drive directly.

/// The wire protocol: the `whispr-proto` crate in `proto/`, re-exported under its old path
/// so the relay, the client and their users keep one name for it.
pub use whispr_proto as protocol;

pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod server;
pub mod shutdown;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;

mod analytics;
mod blobs;
mod http;
mod metrics;
mod notify;
mod redis_keys;
mod redis_link;
mod registry;
mod relay;
mod session;
mod signal;
mod store;
mod tls;
mod ws;
