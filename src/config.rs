//! The relay's configuration: one typed tree, loaded in layers
//! (defaults < TOML file < Whispr-v1 environment names < `WHISPR_*` environment < flags)
//! and validated once, with errors that name the key.
//!
//! Here: the tree ([`Config`], its defaults, the sizes derived from it) and the error
//! types. `load.rs`: the layers, and the one-line error of each (where, key, problem).
//! `text.rs`: how typed values are written (`""` for not set, comma-separated lists).
//! Each module reads its own keys and checks them (`relay/limits.rs`,
//! `store/limits.rs`, `http/limits.rs`, …); the loader runs those checks in turn.
//!
//! Every key is documented in `whispr.example.toml` and the README's table.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod load;
#[cfg(test)]
mod tests;
mod text;

pub use text::resolve_listen;
use text::{comma_separated, empty_is_none, listen_address};

/// Which message store the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process, nothing to install; queued messages are lost on restart.
    Memory,
    /// Redis at `redis_url`: queued messages survive relay restarts. Start fails if
    /// Redis cannot be reached.
    Redis,
    /// Redis at `redis_url` if it answers at start, else memory (with one warning).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of the relay. Field names are the TOML keys; `WHISPR_<KEY>` (upper
/// case) sets them from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the relay listens on: `ip:port`, or `host:port` with a host name resolved
    /// once at start (its first IPv4 address if it has one).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS termination in the relay. With `tls_key`, the
    /// relay serves https:// and wss:// on `listen`; empty (`""`): plain HTTP (behind
    /// nginx).
    #[serde(with = "empty_is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    #[serde(with = "empty_is_none")]
    pub tls_key: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` are believed (CIDRs). Behind nginx
    /// on the same host: `["127.0.0.1/32", "::1/128"]`. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most WebSocket connections at once; further upgrades get 503.
    pub max_connections: usize,
    /// Most WebSocket connections from one client IP; further upgrades get 429.
    pub max_connections_per_ip: usize,
    /// New WebSocket connections accepted per second, all clients together.
    pub max_new_connections_per_second: u32,
    /// Every HTTP connection (before any WebSocket upgrade): the request head (headers)
    /// must be complete this many seconds after the connection is accepted or its
    /// previous response is sent; slower connections are closed. Also the TLS
    /// handshake's deadline.
    pub http_header_read_timeout_seconds: u64,
    /// A connection with no request in progress that sends nothing for this many
    /// seconds is closed (idle keep-alive). At most `http_header_read_timeout_seconds`.
    pub http_keep_alive_timeout_seconds: u64,
    /// A connection whose answer the client has not read for this many seconds (every
    /// write to it blocked) is closed, so a client that stops reading cannot hold the
    /// answer (or a download's attachment bytes) for ever.
    pub http_write_timeout_seconds: u64,
    /// Largest request head (request line and headers) hyper buffers; a larger one is
    /// answered 431. Bounds what a half-sent head holds (hyper's default is ~400 KiB).
    pub http_max_head_bytes: usize,
    /// The body of `POST /v1/send` and v1 `POST /send` must have arrived this many
    /// seconds after its headers (408 `timeout` after it). Uploads have
    /// `attachment_upload_timeout_seconds`.
    pub http_body_timeout_seconds: u64,
    /// Most HTTP connections at once (WebSockets leave this pool when they upgrade).
    /// Connections beyond it get the reserve: health answers, 503 for the rest.
    pub http_max_connections: usize,
    /// Most HTTP connections from one TCP peer address (proxies in `trusted_proxies`
    /// are exempt); beyond it the reserve answers health checks, 429 for the rest.
    pub http_max_connections_per_ip: usize,
    /// Connections beyond the caps that are still read, one request each, so
    /// `/healthz`, `/readyz` and `/metrics` keep answering under a flood; beyond the
    /// reserve a connection is closed as soon as it is accepted. 0: no reserve.
    pub http_reserved_connections: usize,
    /// Most reserve connections one TCP peer address may hold (trusted proxies exempt).
    pub http_reserved_connections_per_ip: usize,
    /// Serve `GET /metrics` on this address instead of `listen` (e.g. 127.0.0.1:9090,
    /// so metrics stay private behind a public listener). Empty (`""`): on `listen`.
    #[serde(with = "empty_is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The public `host[:port]` clients dial, bound into every authentication
    /// signature. Empty (`""`): taken from each request's Host header.
    #[serde(with = "empty_is_none")]
    pub origin: Option<String>,
    pub store: StoreKind,
    /// Redis for `store = "redis"` or `"auto"`: `redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS.
    pub redis_url: String,
    /// Redis Cluster instead of `redis_url`: the seed nodes, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`); the rest of the cluster is
    /// discovered from them. Empty (`""`): no cluster.
    #[serde(with = "comma_separated")]
    pub redis_cluster_urls: Vec<String>,
    /// `rediss://` only: PEM file of the CA that signed Redis's certificate (a private
    /// CA). Empty (`""`): the system's trusted roots.
    #[serde(with = "empty_is_none")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Run on a Redis whose `maxmemory-policy` evicts keys (anything but `noeviction`).
    /// Off: the relay refuses to start on such a Redis. On: it runs, warns at start and
    /// every hour, and reports each eviction it notices to the inbox's readers as a gap.
    pub redis_allow_eviction: bool,
    /// How long a request may wait for Redis, its place in the store's queue included,
    /// before it fails with 503 `unavailable` (milliseconds). An insert that Redis runs after this deadline stores nothing.
    pub redis_response_timeout_ms: u64,
    /// Script calls each of the Redis store's two writers (inserts; reads and acks) has
    /// out at once. What arrives meanwhile leaves together in the next call (group
    /// commit): fewer calls out means bigger batches and less Redis and relay CPU per
    /// message, and a call that stalls holds back what queued behind it.
    pub redis_calls_in_flight: usize,
    /// Memory store: file to write queued messages to at graceful shutdown and read
    /// back at start (then deleted). Empty (`""`): queued messages end with the process.
    #[serde(with = "empty_is_none")]
    pub memory_snapshot_path: Option<PathBuf>,
    /// Largest envelope body (ciphertext) in bytes.
    pub max_message_bytes: usize,
    /// Queued messages per recipient; a full inbox refuses new messages (507).
    pub max_messages_per_recipient: usize,
    /// Sustained sends per second per sender key.
    pub max_messages_per_second: u32,
    /// Burst allowance per sender key.
    pub burst_messages: u32,
    /// Sustained sends per second per client IP.
    pub max_messages_per_second_per_ip: u32,
    /// Burst allowance per client IP.
    pub burst_messages_per_ip: u32,
    /// With the buckets in Redis: how long a node may spend tokens it leased from a
    /// shared bucket (a lease is `rate × this`, at most the burst); 0 takes every token
    /// from Redis. Several nodes together overshoot a limit by at most `rate × this`.
    pub rate_limit_lease_ms: u64,
    /// Failed signature checks (sends, v1 sends, signed requests) one client IP may
    /// cause per second on this node; beyond it (and the burst) its signed requests are
    /// refused with `rate_limited` before their signature is checked.
    pub max_bad_signatures_per_second_per_ip: u32,
    /// Burst allowance of failed signature checks per client IP.
    pub burst_bad_signatures_per_ip: u32,
    /// Sends with a bad signature one WebSocket session may make; the last one is
    /// answered and then the session is closed with 4008.
    pub max_bad_signatures_per_session: u32,
    /// The verifier stage (`relay/verifier.rs`): envelopes waiting for a verifier thread
    /// while it is busy; beyond it a send is refused at once with 503 `unavailable`.
    pub verify_queue_depth: usize,
    /// The verifier stage: most envelopes one thread checks in one batch equation.
    pub verify_max_batch: usize,
    /// The verifier stage: threads verifying batches (and verifications running inline
    /// while idle); one per core.
    pub verify_workers: usize,
    /// The verifier stage: how long envelopes queued behind a leading session wait for
    /// it before the verifier threads take them (ms).
    pub verify_leader_grace_ms: u64,
    /// How long a message waits for its recipient.
    pub message_ttl_seconds: u64,
    /// How far an envelope's or signed request's timestamp may be from the relay's clock.
    pub max_clock_skew_seconds: u64,
    /// Memory store: byte budget for queued messages and dedupe entries (507 when full).
    pub max_store_bytes: usize,
    /// Largest attachment in bytes (Whispr v1 `POST /upload`, native `POST /v1/blobs`);
    /// larger ones are refused with 413. Published in `/v1/info`.
    pub attachment_max_size_bytes: usize,
    /// How long an attachment is kept after its upload. Downloads do not remove it (a
    /// v1 client may download twice); only this TTL does.
    pub attachment_ttl_seconds: u64,
    /// An upload's whole body must arrive within this many seconds (408 `timeout`
    /// after it), so slow senders cannot hold the attachment bytes in flight forever.
    pub attachment_upload_timeout_seconds: u64,
    /// Memory attachment store: byte budget for all attachments together (data plus a
    /// small per-blob overhead); a full store refuses uploads with 507 and never drops
    /// unexpired attachments. With Redis, Redis's `maxmemory` is the budget.
    pub max_attachment_store_bytes: usize,
    /// Bytes of unexpired attachments one sender key may hold, so one key cannot fill
    /// the store; an upload beyond it is refused with 507 until the sender's older
    /// attachments expire. At least `attachment_max_size_bytes`.
    pub max_attachment_bytes_per_sender: usize,
    /// Attachment bytes the relay holds for requests in progress, all uploads and
    /// downloads together (bodies being read, their decoded copies, blobs being
    /// answered). A request that would go over it is refused at once with 503 and
    /// `Retry-After`, not queued. At least one largest v1 upload body.
    pub max_attachment_inflight_bytes: usize,
    /// Serve the Whispr v1 API (`POST /send`, `GET /inbox/{key}`, `/ws/{key}`,
    /// `GET /public-key`, `GET /signal`) for unmodified v1 clients. v1 has no proof of key ownership:
    /// see the README's "Whispr v1 compatibility". Off: every v1 path is 404.
    pub compat_whispr_v1: bool,
    /// Whispr v1 `/signal`: most sockets in one call room (counted across nodes on a
    /// best-effort basis, see `signal`); a join beyond it gets `room full`.
    pub signal_max_peers_per_room: usize,
    /// Whispr v1 `/signal`: largest client frame relayed. Larger ones (up to twice
    /// this) are answered with an error frame and dropped; beyond that, close 1009.
    pub signal_max_message_bytes: usize,
    /// Whispr v1 `/signal`: most rooms one socket may be in at once.
    pub signal_max_rooms_per_connection: usize,
    /// Whispr v1 `/signal`: frames per second one socket may send (also the burst).
    pub signal_max_frames_per_second: u32,
    /// Server WebSocket ping interval.
    pub ws_ping_interval_seconds: u64,
    /// With the Redis store: how often every session re-reads its inbox, in case a
    /// wake-up from another node was lost (pub/sub is at-most-once).
    pub ws_catch_up_seconds: u64,
    /// How long after a ping the relay waits for any frame before closing the session.
    pub ws_pong_timeout_seconds: u64,
    /// How long one frame write may take before the session counts as a slow consumer.
    pub ws_write_timeout_seconds: u64,
    /// How long a new connection has to authenticate.
    pub ws_auth_timeout_seconds: u64,
    /// Unacknowledged deliveries per session before the relay waits for an ack.
    pub ws_max_inflight: u32,
    /// Sends of one session whose signature checks run at once, answered in order; the
    /// relay stops reading the session's socket while that many wait.
    pub ws_max_pipelined_sends: usize,
    /// Ephemeral frames buffered per session; further ones are reported offline.
    pub ws_outbound_queue: usize,
    /// Per-connection read buffer (the main cost of an idle connection).
    pub ws_read_buffer_bytes: usize,
    /// Per-connection write buffer target.
    pub ws_write_buffer_bytes: usize,
    /// Most bytes the relay holds for one WebSocket peer that does not read (its write
    /// buffer: queued frames and the pongs answering its pings). A socket over it is
    /// closed with 4002. At least `ws_write_buffer_bytes` and the largest frame the
    /// relay writes.
    pub ws_max_write_buffer_bytes: usize,
    /// How long the close handshake may take: after sending its close frame the relay
    /// reads (and drops) input until the peer's close frame, at most this long.
    pub ws_close_timeout_seconds: u64,
    /// Bytes of ephemeral envelopes queued per session (each counted as its body plus
    /// 256); a full queue answers `online: false`. At least `max_message_bytes` + 256.
    pub ws_ephemeral_queue_bytes: usize,
    /// Most messages in one `GET /v1/inbox` answer.
    pub poll_max_messages: usize,
    /// How often expired messages are swept.
    pub sweep_interval_seconds: u64,
    /// How long shutdown waits for sessions to close.
    pub shutdown_grace_seconds: u64,
    pub log_format: LogFormat,
    /// Append analytics events (JSON lines: counts and sizes) to this file. Empty
    /// (`""`): off.
    #[serde(with = "empty_is_none")]
    pub analytics_log_path: Option<PathBuf>,
    /// Include sender and recipient keys in analytics events.
    pub analytics_include_keys: bool,
    /// A tracing filter, e.g. `info` or `whispr=debug,info`. `RUST_LOG` overrides it.
    pub log_level: String,
    /// Failed TLS handshakes and refused sign-ins are logged at info with the client IP
    /// and the reason, at most this many lines a minute of each kind (a scanner can
    /// cause thousands); the next line says how many were left out. 0: none at info.
    pub log_client_failures_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            max_new_connections_per_second: 2000,
            http_header_read_timeout_seconds: 10,
            http_keep_alive_timeout_seconds: 5,
            http_write_timeout_seconds: 30,
            http_max_head_bytes: 16384,
            http_body_timeout_seconds: 30,
            http_max_connections: 8192,
            http_max_connections_per_ip: 256,
            http_reserved_connections: 64,
            http_reserved_connections_per_ip: 2,
            origin: None,
            store: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_cluster_urls: Vec::new(),
            redis_tls_ca: None,
            redis_allow_eviction: false,
            redis_response_timeout_ms: 2000,
            redis_calls_in_flight: 1,
            memory_snapshot_path: None,
            max_message_bytes: 64 * 1024,
            max_messages_per_recipient: 1000,
            max_messages_per_second: 10,
            burst_messages: 50,
            max_messages_per_second_per_ip: 100,
            burst_messages_per_ip: 200,
            rate_limit_lease_ms: 50,
            max_bad_signatures_per_second_per_ip: 10,
            burst_bad_signatures_per_ip: 20,
            max_bad_signatures_per_session: 10,
            verify_queue_depth: 4096,
            verify_max_batch: 64,
            verify_leader_grace_ms: 2,
            verify_workers: 2,
            message_ttl_seconds: 7 * 24 * 3600,
            max_clock_skew_seconds: 300,
            max_store_bytes: 512 << 20,
            attachment_max_size_bytes: 10_485_760,
            attachment_ttl_seconds: 3600,
            attachment_upload_timeout_seconds: 120,
            max_attachment_store_bytes: 256 << 20,
            max_attachment_bytes_per_sender: 64 << 20,
            max_attachment_inflight_bytes: 64 << 20,
            compat_whispr_v1: true,
            signal_max_peers_per_room: 8,
            signal_max_message_bytes: 64 * 1024,
            signal_max_rooms_per_connection: 4,
            signal_max_frames_per_second: 50,
            ws_ping_interval_seconds: 30,
            ws_catch_up_seconds: 5,
            ws_pong_timeout_seconds: 20,
            ws_write_timeout_seconds: 10,
            ws_auth_timeout_seconds: 10,
            ws_max_inflight: 256,
            ws_max_pipelined_sends: 16,
            ws_outbound_queue: 64,
            ws_read_buffer_bytes: 1024,
            ws_write_buffer_bytes: 2048,
            ws_max_write_buffer_bytes: 256 * 1024,
            ws_close_timeout_seconds: 2,
            ws_ephemeral_queue_bytes: 512 * 1024,
            poll_max_messages: 100,
            sweep_interval_seconds: 1,
            shutdown_grace_seconds: 10,
            log_format: LogFormat::Text,
            analytics_log_path: None,
            analytics_include_keys: false,
            log_level: "info".into(),
            log_client_failures_per_minute: 10,
        }
    }
}

/// The Whispr v1 settings names, also read from the environment without a prefix, as
/// the original operator guide documents them.
pub const V1_ENV_KEYS: [&str; 4] = [
    "max_messages_per_recipient",
    "max_messages_per_second",
    "message_ttl_seconds",
    "attachment_max_size_bytes",
];

/// Room in a `POST /upload` body for everything but the base64 blob: two keys, the
/// sender's X25519 key, a signature, the digest, the size, JSON punctuation and a file
/// name of a few KiB.
const UPLOAD_BODY_SLACK: usize = 16 * 1024;

/// Room for the fields around the largest payload in a frame the relay writes (a
/// delivery's seq and id, a v1 message's recipient, a signal's call id).
pub(crate) const OUTBOUND_FRAME_SLACK: usize = 4096;

/// What is wrong with the configuration, as one line: where the value came from (a
/// file's path, `environment`, `flag` or `default`), the key as the operator wrote it
/// there (a TOML key, a variable's name, a flag), and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub place: String,
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration: {}", self.place)?;
        if !self.key.is_empty() {
            write!(f, " {}", self.key)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(place: impl Into<String>, key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            place: place.into(),
            key: key.into(),
            // Parsers' messages can span lines (TOML points at the column); the error is
            // one line so it reads the same in a terminal and in the journal.
            problem: problem
                .into()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A value a module's check refused: its key (the one the operator wrote), and why.
/// The loader adds where the value came from ([`ConfigError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) key: &'static str,
    pub(crate) detail: String,
}

/// One module's check of its keys.
type Check = fn(&Config) -> Result<(), Invalid>;

/// `Ok` when `ok`, else `key` is refused with `detail`: the one shape of every check.
pub(crate) fn require(
    ok: bool,
    key: &'static str,
    detail: impl Into<String>,
) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid {
            key,
            detail: detail.into(),
        })
    }
}

/// `WHISPR_*` variables that belong to other commands or to the test suite, not to
/// `whispr serve`'s configuration, so an unknown-variable check must let them be.
/// A relay started by a test or a CI script inherits their environment, so their
/// variables are listed too.
pub const OTHER_WHISPR_VARIABLES: [&str; 7] = [
    // `--server` of send, listen, inbox and bench.
    "WHISPR_SERVER",
    // `--config` of serve (read by the flag parser, not a configuration key).
    "WHISPR_CONFIG",
    // The integration tests: fail instead of skipping when a program is missing.
    "WHISPR_TEST_STRICT",
    // The JavaScript client's tests (`clients/js`): the relay binary and the browser.
    "WHISPR_BIN",
    "WHISPR_CHROMIUM",
    // `.ci/run`'s fuzzing: seconds per target and the fuzz build's target directory.
    "WHISPR_FUZZ_SECONDS",
    "WHISPR_FUZZ_TARGET_DIR",
];

/// Overrides from command-line flags (only the flags that were given).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `ip:port` or `host:port`, resolved like the `listen` key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster_urls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
}

impl Config {
    /// Largest WebSocket frame or HTTP body accepted: a body of `max_message_bytes` in
    /// base64 inside a JSON envelope, plus room for the other fields.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes.div_ceil(3) * 4 + 2048
    }

    /// Largest frame the relay writes on any WebSocket: a delivery of the largest
    /// envelope, a v1 message, or a relayed `/signal` frame, plus the fields around it.
    pub fn max_outbound_frame_bytes(&self) -> usize {
        self.max_frame_bytes().max(self.signal_max_message_bytes) + OUTBOUND_FRAME_SLACK
    }

    /// Largest `POST /upload` body: a blob of `attachment_max_size_bytes` in base64
    /// inside the v1 JSON, plus room for the keys, signature, name and digest.
    pub fn max_upload_body_bytes(&self) -> usize {
        self.attachment_max_size_bytes.div_ceil(3) * 4 + UPLOAD_BODY_SLACK
    }

    /// `attachment_ttl_seconds` in ms; saturating, although validation keeps it small.
    pub fn attachment_ttl_ms(&self) -> u64 {
        self.attachment_ttl_seconds.saturating_mul(1000)
    }

    /// Largest WebSocket message a `/signal` socket reads: twice the relayed limit, so
    /// a frame somewhat over it is answered and dropped instead of ending the socket.
    pub fn signal_max_ws_message_bytes(&self) -> usize {
        self.signal_max_message_bytes.saturating_mul(2)
    }

    pub fn message_ttl(&self) -> Duration {
        Duration::from_secs(self.message_ttl_seconds)
    }

    pub fn max_clock_skew_ms(&self) -> u64 {
        self.max_clock_skew_seconds * 1000
    }
}
