//! The relay's configuration: one typed tree, loaded in layers
//! (defaults < TOML file < Whispr-v1 environment names < `WHISPR_*` environment < flags)
//! and validated once, with errors that name the key.
//!
//! Every key is documented in `whispr.example.toml` and the README's table.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Deserializer, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

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
    /// relay serves https:// and wss:// on `listen`; empty: plain HTTP (behind nginx).
    pub tls_cert: String,
    /// PEM private key matching `tls_cert`.
    pub tls_key: String,
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
    /// so metrics stay private behind a public listener). Empty: on `listen`.
    pub metrics_listen: String,
    /// The public `host[:port]` clients dial, bound into every authentication
    /// signature. Empty: taken from each request's Host header.
    pub origin: String,
    pub store: StoreKind,
    /// Redis for `store = "redis"` or `"auto"`: `redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS.
    pub redis_url: String,
    /// Redis Cluster instead of `redis_url`: the seed nodes, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`); the rest of the cluster is
    /// discovered from them. Empty: no cluster.
    pub redis_cluster_urls: String,
    /// `rediss://` only: PEM file of the CA that signed Redis's certificate (a private
    /// CA). Empty: the system's trusted roots.
    pub redis_tls_ca: String,
    /// Run on a Redis whose `maxmemory-policy` evicts keys (anything but `noeviction`).
    /// Off: the relay refuses to start on such a Redis. On: it runs, warns at start and
    /// every hour, and reports each eviction it notices to the inbox's readers as a gap.
    pub redis_allow_eviction: bool,
    /// How long a Redis call may take before the request fails with 503 `unavailable`
    /// (milliseconds). An insert that Redis runs after this deadline stores nothing.
    pub redis_response_timeout_ms: u64,
    /// Memory store: file to write queued messages to at graceful shutdown and read
    /// back at start (then deleted). Empty: queued messages end with the process.
    pub memory_snapshot_path: String,
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
    /// Append analytics events (JSON lines: counts and sizes) to this file. Empty: off.
    pub analytics_log_path: String,
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
            tls_cert: String::new(),
            tls_key: String::new(),
            metrics_listen: String::new(),
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
            origin: String::new(),
            store: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_cluster_urls: String::new(),
            redis_tls_ca: String::new(),
            redis_allow_eviction: false,
            redis_response_timeout_ms: 2000,
            memory_snapshot_path: String::new(),
            max_message_bytes: 64 * 1024,
            max_messages_per_recipient: 1000,
            max_messages_per_second: 10,
            burst_messages: 50,
            max_messages_per_second_per_ip: 100,
            burst_messages_per_ip: 200,
            max_bad_signatures_per_second_per_ip: 10,
            burst_bad_signatures_per_ip: 20,
            max_bad_signatures_per_session: 10,
            verify_queue_depth: 4096,
            verify_max_batch: 64,
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
            ws_outbound_queue: 64,
            ws_read_buffer_bytes: 2048,
            ws_write_buffer_bytes: 2048,
            ws_max_write_buffer_bytes: 256 * 1024,
            ws_close_timeout_seconds: 2,
            ws_ephemeral_queue_bytes: 512 * 1024,
            poll_max_messages: 100,
            sweep_interval_seconds: 1,
            shutdown_grace_seconds: 10,
            log_format: LogFormat::Text,
            analytics_log_path: String::new(),
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

/// The largest `attachment_max_size_bytes`: Redis refuses larger values.
const MAX_ATTACHMENT_BYTES: usize = 512 << 20;

/// The longest `attachment_ttl_seconds`: 30 days. Attachments are for handing a file
/// over, not for keeping it; the bound also keeps every expiry far from overflowing.
const MAX_ATTACHMENT_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// The largest `max_attachment_inflight_bytes` (its KiB count must fit a semaphore
/// reservation).
const MAX_ATTACHMENT_INFLIGHT_BYTES: usize = 1 << 40;

/// Room in a `POST /upload` body for everything but the base64 blob: two keys, the
/// sender's X25519 key, a signature, the digest, the size, JSON punctuation and a file
/// name of a few KiB.
const UPLOAD_BODY_SLACK: usize = 16 * 1024;

/// Room for the fields around the largest payload in a frame the relay writes (a
/// delivery's seq and id, a v1 message's recipient, a signal's call id).
const OUTBOUND_FRAME_SLACK: usize = 4096;

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

/// A value that `validated` refused: its key, and why.
struct Invalid {
    key: &'static str,
    detail: String,
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

/// Highest accepted `max_messages_per_second[_per_ip]`.
const MAX_RATE: u32 = 1_000_000;

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
    /// Loads the layers from the real environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_settings(file, None, overrides).map(|(config, _)| config)
    }

    /// [`Config::load`] plus a Whispr v1 `settings.json` (`--settings FILE`), read between
    /// the TOML file and the environment. Only the v1 settings names are taken from it;
    /// the other keys it holds are returned so the caller can say they were ignored.
    pub fn load_with_settings(
        file: Option<&Path>,
        settings: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let (v1, ignored) = match settings {
            Some(path) => read_v1_settings(path)?,
            None => (serde_json::Map::new(), Vec::new()),
        };
        check_whispr_variables(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))?;
        let fig = Self::figment(file, &v1, overrides)?;
        let config = extract(&fig, settings)?;
        Ok((config, ignored))
    }

    /// Parses a TOML document on top of the defaults (no environment): for tests and
    /// `whispr config check`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        extract(&fig, None)
    }

    fn figment(
        file: Option<&Path>,
        v1_settings: &serde_json::Map<String, serde_json::Value>,
        overrides: &Overrides,
    ) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    path.display().to_string(),
                    "",
                    "no such file",
                ));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let known = known_keys();
        fig = fig
            .merge(Serialized::defaults(v1_settings))
            .merge(Env::raw().filter(|k| {
                V1_ENV_KEYS
                    .iter()
                    .any(|n| k.as_str().eq_ignore_ascii_case(n))
            }))
            .merge(
                Env::prefixed("WHISPR_")
                    .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n))),
            )
            .merge(Serialized::defaults(overrides));
        Ok(fig)
    }

    fn validated(self) -> Result<Config, Invalid> {
        let invalid = |key, detail: &str| {
            Err(Invalid {
                key,
                detail: detail.into(),
            })
        };
        if !(1..=16 << 20).contains(&self.max_message_bytes) {
            return invalid("max_message_bytes", "must be between 1 and 16777216");
        }
        if self.max_messages_per_recipient == 0 {
            return invalid("max_messages_per_recipient", "must be at least 1");
        }
        if self.max_messages_per_second == 0 || self.max_messages_per_second_per_ip == 0 {
            return invalid(
                "max_messages_per_second",
                "rates must be at least 1 per second",
            );
        }
        // The shared (Redis) buckets count in microseconds: one message per µs at most.
        if self.max_messages_per_second > MAX_RATE || self.max_messages_per_second_per_ip > MAX_RATE
        {
            return invalid(
                "max_messages_per_second",
                "rates must be at most 1000000 per second (per sender and per IP)",
            );
        }
        if self.burst_messages == 0 || self.burst_messages_per_ip == 0 {
            return invalid("burst_messages", "bursts must be at least 1");
        }
        for (key, v) in [
            (
                "max_bad_signatures_per_second_per_ip",
                self.max_bad_signatures_per_second_per_ip,
            ),
            (
                "burst_bad_signatures_per_ip",
                self.burst_bad_signatures_per_ip,
            ),
            (
                "max_bad_signatures_per_session",
                self.max_bad_signatures_per_session,
            ),
        ] {
            if !(1..=MAX_RATE).contains(&v) {
                return invalid(key, "must be between 1 and 1000000");
            }
        }
        if let Err((key, detail)) = self.verifier_limits().validate() {
            return invalid(key, detail);
        }
        if self.message_ttl_seconds == 0 {
            return invalid("message_ttl_seconds", "must be at least 1");
        }
        if self.max_clock_skew_seconds == 0 {
            return invalid("max_clock_skew_seconds", "must be at least 1");
        }
        if self.max_store_bytes < self.max_message_bytes * 2 {
            return invalid(
                "max_store_bytes",
                "must hold at least two messages of max_message_bytes",
            );
        }
        if !(1..=MAX_ATTACHMENT_BYTES).contains(&self.attachment_max_size_bytes) {
            return invalid(
                "attachment_max_size_bytes",
                "must be between 1 and 536870912 (512 MiB, Redis's largest value)",
            );
        }
        if !(1..=MAX_ATTACHMENT_TTL_SECONDS).contains(&self.attachment_ttl_seconds) {
            return invalid(
                "attachment_ttl_seconds",
                "must be between 1 and 2592000 (30 days)",
            );
        }
        if !(1..=3600).contains(&self.attachment_upload_timeout_seconds) {
            return invalid(
                "attachment_upload_timeout_seconds",
                "must be between 1 and 3600",
            );
        }
        if self.max_attachment_store_bytes < self.attachment_max_size_bytes {
            return invalid(
                "max_attachment_store_bytes",
                "must hold at least one attachment of attachment_max_size_bytes",
            );
        }
        if self.max_attachment_bytes_per_sender < self.attachment_max_size_bytes {
            return invalid(
                "max_attachment_bytes_per_sender",
                "must hold at least one attachment of attachment_max_size_bytes",
            );
        }
        if self.max_attachment_inflight_bytes < self.max_upload_body_bytes()
            || self.max_attachment_inflight_bytes > MAX_ATTACHMENT_INFLIGHT_BYTES
        {
            return invalid(
                "max_attachment_inflight_bytes",
                "must be at least one largest upload body (attachment_max_size_bytes in base64 plus 16 KiB) and at most 1 TiB",
            );
        }
        if self.ws_max_inflight == 0 {
            return invalid("ws_max_inflight", "must be at least 1");
        }
        if self.ws_outbound_queue == 0 {
            return invalid("ws_outbound_queue", "must be at least 1");
        }
        if self.ws_read_buffer_bytes < 1024 || self.ws_write_buffer_bytes < 1024 {
            return invalid(
                "ws_read_buffer_bytes",
                "WebSocket buffers must be at least 1024 bytes",
            );
        }
        let largest = self
            .max_outbound_frame_bytes()
            .max(self.ws_write_buffer_bytes);
        if self.ws_max_write_buffer_bytes < largest {
            return invalid(
                "ws_max_write_buffer_bytes",
                &format!("must be at least ws_write_buffer_bytes and the largest frame the relay writes (max_frame_bytes or signal_max_message_bytes, plus {OUTBOUND_FRAME_SLACK}): {largest} with these settings"),
            );
        }
        if self.ws_ephemeral_queue_bytes
            < self.max_message_bytes + crate::registry::EPHEMERAL_OVERHEAD_BYTES
        {
            return invalid(
                "ws_ephemeral_queue_bytes",
                "must hold one largest ephemeral envelope: at least max_message_bytes + 256",
            );
        }
        for (key, v) in [
            ("ws_ping_interval_seconds", self.ws_ping_interval_seconds),
            ("ws_catch_up_seconds", self.ws_catch_up_seconds),
            ("ws_pong_timeout_seconds", self.ws_pong_timeout_seconds),
            ("ws_write_timeout_seconds", self.ws_write_timeout_seconds),
            ("ws_auth_timeout_seconds", self.ws_auth_timeout_seconds),
            ("ws_close_timeout_seconds", self.ws_close_timeout_seconds),
            ("sweep_interval_seconds", self.sweep_interval_seconds),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1 second");
            }
        }
        if self.signal_max_peers_per_room < 2 {
            return invalid(
                "signal_max_peers_per_room",
                "must be at least 2 (a call needs two peers)",
            );
        }
        if !(64..=16 << 20).contains(&self.signal_max_message_bytes) {
            return invalid(
                "signal_max_message_bytes",
                "must be between 64 and 16777216",
            );
        }
        if self.signal_max_rooms_per_connection == 0 {
            return invalid("signal_max_rooms_per_connection", "must be at least 1");
        }
        if self.signal_max_frames_per_second == 0 {
            return invalid("signal_max_frames_per_second", "must be at least 1");
        }
        if self.poll_max_messages == 0 {
            return invalid("poll_max_messages", "must be at least 1");
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_new_connections_per_second == 0
        {
            return invalid("max_connections", "connection limits must be at least 1");
        }
        self.validate_http_limits()?;
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return invalid(
                "tls_cert",
                "tls_cert and tls_key must be given together (or neither)",
            );
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "metrics_listen",
                "must be an address such as 127.0.0.1:9090, or empty",
            );
        }
        if self.origin.contains('/') || self.origin.contains(char::is_whitespace) {
            return invalid(
                "origin",
                "must be host[:port] without scheme or path, e.g. chat.example.com",
            );
        }
        for url in std::iter::once(self.redis_url.as_str())
            .chain(self.redis_cluster_urls.split(',').map(str::trim))
            .filter(|u| !u.is_empty())
        {
            if redis::parse_redis_url(url).is_none()
                || !(url.starts_with("redis://") || url.starts_with("rediss://"))
            {
                let key = if url == self.redis_url {
                    "redis_url"
                } else {
                    "redis_cluster_urls"
                };
                return invalid(
                    key,
                    "must be redis://[[user]:password@]host:port[/db] or rediss://… (comma-separated for the cluster list)",
                );
            }
        }
        if !self.redis_tls_ca.is_empty() && !Path::new(&self.redis_tls_ca).is_file() {
            return invalid("redis_tls_ca", "no such file (a PEM CA certificate)");
        }
        if self.store == StoreKind::Memory {
            // A Redis address with the memory store is a half-finished setup: running on
            // memory would silently give up what the operator wanted Redis for.
            let set = if !self.redis_cluster_urls.trim().is_empty() {
                Some("redis_cluster_urls")
            } else if self.redis_url != Config::default().redis_url {
                Some("redis_url")
            } else {
                None
            };
            if let Some(key) = set {
                return invalid(
                    key,
                    "is set but store = \"memory\": add store = \"redis\" (or \"auto\") to use Redis, or remove it",
                );
            }
        }
        if !(100..=60_000).contains(&self.redis_response_timeout_ms) {
            return invalid(
                "redis_response_timeout_ms",
                "must be between 100 and 60000 (milliseconds)",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid(
                "log_level",
                "not a valid filter (try `info` or `whispr=debug,info`)",
            );
        }
        Ok(self)
    }

    /// How the Redis store uses Redis.
    pub fn redis_options(&self) -> crate::store::RedisOptions {
        crate::store::RedisOptions {
            allow_eviction: self.redis_allow_eviction,
            response_timeout: Duration::from_millis(self.redis_response_timeout_ms),
        }
    }

    /// The `http_*` keys: deadlines of HTTP connections and their caps.
    fn validate_http_limits(&self) -> Result<(), Invalid> {
        let invalid = |key, detail: &str| {
            Err(Invalid {
                key,
                detail: detail.into(),
            })
        };
        for (key, v) in [
            (
                "http_header_read_timeout_seconds",
                self.http_header_read_timeout_seconds,
            ),
            (
                "http_keep_alive_timeout_seconds",
                self.http_keep_alive_timeout_seconds,
            ),
            ("http_body_timeout_seconds", self.http_body_timeout_seconds),
            (
                "http_write_timeout_seconds",
                self.http_write_timeout_seconds,
            ),
        ] {
            if !(1..=3600).contains(&v) {
                return invalid(key, "must be between 1 and 3600 seconds");
            }
        }
        // The head deadline starts when a keep-alive connection goes idle, so an idle
        // connection is closed by then whatever this says.
        if self.http_keep_alive_timeout_seconds > self.http_header_read_timeout_seconds {
            return invalid(
                "http_keep_alive_timeout_seconds",
                "must not exceed http_header_read_timeout_seconds (an idle connection's wait for its next request counts against the head deadline)",
            );
        }
        // hyper refuses a read buffer under 8 KiB.
        if !(8192..=1 << 20).contains(&self.http_max_head_bytes) {
            return invalid("http_max_head_bytes", "must be between 8192 and 1048576");
        }
        if self.http_max_connections == 0 || self.http_max_connections_per_ip == 0 {
            return invalid(
                "http_max_connections",
                "HTTP connection caps (http_max_connections, http_max_connections_per_ip) must be at least 1",
            );
        }
        if self.http_reserved_connections > 0 && self.http_reserved_connections_per_ip == 0 {
            return invalid(
                "http_reserved_connections_per_ip",
                "must be at least 1 when http_reserved_connections is not 0",
            );
        }
        Ok(())
    }

    /// Deadlines and caps of HTTP connections.
    pub fn http_limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_read: Duration::from_secs(self.http_header_read_timeout_seconds),
            keep_alive: Duration::from_secs(self.http_keep_alive_timeout_seconds),
            write: Duration::from_secs(self.http_write_timeout_seconds),
            max_head_bytes: self.http_max_head_bytes,
            caps: crate::http::ConnCaps {
                max: self.http_max_connections,
                max_per_ip: self.http_max_connections_per_ip,
                reserved: self.http_reserved_connections,
                reserved_per_ip: self.http_reserved_connections_per_ip,
            },
        }
    }

    /// Where Redis is, for `store = "redis"` or `"auto"`.
    pub fn redis_target(&self) -> crate::redis_link::RedisTarget {
        crate::redis_link::RedisTarget::from_config(
            &self.redis_url,
            &self.redis_cluster_urls,
            &self.redis_tls_ca,
        )
    }

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

    pub fn blob_limits(&self) -> crate::blobs::BlobLimits {
        crate::blobs::BlobLimits {
            max_blob_bytes: self.attachment_max_size_bytes,
            ttl_ms: self.attachment_ttl_ms(),
            max_store_bytes: self.max_attachment_store_bytes,
            max_sender_bytes: self.max_attachment_bytes_per_sender,
        }
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

    /// The verifier stage's bounds (`verify_*`).
    pub fn verifier_limits(&self) -> crate::relay::VerifierLimits {
        crate::relay::VerifierLimits {
            queue_depth: self.verify_queue_depth,
            max_batch: self.verify_max_batch,
            workers: self.verify_workers,
        }
    }

    pub fn max_clock_skew_ms(&self) -> u64 {
        self.max_clock_skew_seconds * 1000
    }

    /// The TLS files, when TLS termination is configured.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        (!self.tls_cert.is_empty()).then(|| crate::tls::TlsFiles {
            cert: self.tls_cert.clone().into(),
            key: self.tls_key.clone().into(),
        })
    }

    pub fn store_limits(&self) -> crate::store::StoreLimits {
        crate::store::StoreLimits {
            max_messages_per_inbox: self.max_messages_per_recipient,
            message_ttl_ms: self.message_ttl_seconds * 1000,
            // A future timestamp may be accepted up to the skew, and a past one until the
            // skew: remembering ids for twice the skew covers both.
            dedupe_window_ms: 2 * self.max_clock_skew_ms(),
            max_store_bytes: self.max_store_bytes,
        }
    }
}

/// Reads a v1 `settings.json`: the v1 names it holds, and the names it holds besides.
fn read_v1_settings(
    path: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<String>), ConfigError> {
    let bad = |key: &str, detail: String| ConfigError::new(path.display().to_string(), key, detail);
    let text = std::fs::read_to_string(path).map_err(|e| bad("", format!("cannot read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad("", format!("not JSON: {e}")))?;
    let serde_json::Value::Object(all) = value else {
        return Err(bad(
            "",
            "a settings file is a JSON object of settings".into(),
        ));
    };
    let (mut taken, mut ignored) = (serde_json::Map::new(), Vec::new());
    for (key, value) in all {
        if V1_ENV_KEYS.contains(&key.as_str()) {
            // Every v1 setting is a count or a duration in seconds.
            if !value.is_u64() {
                return Err(bad(
                    &key,
                    format!("must be a non-negative integer, not {value}"),
                ));
            }
            taken.insert(key, value);
        } else {
            ignored.push(key);
        }
    }
    Ok((taken, ignored))
}

/// Extracts and validates the layered configuration; an error names the layer that set
/// the offending value and the key as written there.
fn extract(fig: &Figment, settings: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config = fig
        .extract::<Config>()
        .map_err(|e| from_figment(fig, &e, settings))?;
    if v1_rate_without_burst(fig) {
        config.burst_messages = config.max_messages_per_second;
    }
    config.validated().map_err(|e| {
        let (place, key) = locate(fig.find_metadata(e.key), e.key, settings);
        ConfigError::new(place, key, e.detail)
    })
}

/// The first of figment's errors, as one line (figment chains every error it met, and
/// an unknown key's message lists all ~70 keys).
fn from_figment(fig: &Figment, e: &figment::Error, settings: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let mut key = e.path.join(".");
    let problem = match &e.kind {
        Kind::UnknownField(field, _) => {
            if e.path.last() != Some(field) {
                key = e
                    .path
                    .iter()
                    .chain([field])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(".");
            }
            match suggest(field, &known_keys()) {
                Some(near) => format!("unknown key (did you mean {near}?)"),
                None => "unknown key (whispr.example.toml lists every key)".into(),
            }
        }
        other => other.to_string(),
    };
    let metadata = e.metadata.as_ref().or_else(|| fig.find_metadata(&key));
    let (place, key) = locate(metadata, &key, settings);
    ConfigError::new(place, key, problem)
}

/// Where a key's value came from, and the key as the operator wrote it there: a file's
/// path and its key, `environment` and the variable, `flag` and the flag.
fn locate(metadata: Option<&Metadata>, key: &str, settings: Option<&Path>) -> (String, String) {
    let Some(md) = metadata else {
        return ("default".into(), key.into());
    };
    if md.name.contains("environment variable") {
        // Two environment layers: `WHISPR_<KEY>` wins over the bare v1 name.
        let prefixed = format!("WHISPR_{}", key.to_ascii_uppercase());
        let var = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .find(|k| k.eq_ignore_ascii_case(&prefixed))
            .or_else(|| {
                std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .find(|k| k.eq_ignore_ascii_case(key))
            })
            .unwrap_or(prefixed);
        return ("environment".into(), var);
    }
    if let Some(Source::File(path)) = &md.source {
        return (path.display().to_string(), key.into());
    }
    let type_name = md.name.as_ref();
    if type_name.ends_with("Overrides") {
        ("flag".into(), format!("--{}", key.replace('_', "-")))
    } else if type_name.ends_with("::Config") {
        ("default".into(), key.into())
    } else if let (true, Some(path)) = (type_name.contains("Map"), settings) {
        (path.display().to_string(), key.into())
    } else {
        (type_name.into(), key.into())
    }
}

/// Whether `max_messages_per_second` comes from a Whispr v1 layer (`settings.json` or
/// the bare v1 environment name) and no layer sets `burst_messages`. v1 meant "at most
/// N in any second", so then the burst is the rate, not the native default of 50.
fn v1_rate_without_burst(fig: &Figment) -> bool {
    let key = "max_messages_per_second";
    let from_v1 = fig.find_metadata(key).is_some_and(|md| {
        let (place, name) = locate(Some(md), key, None);
        md.name.contains("Map")
            || (place == "environment" && !name.to_ascii_uppercase().starts_with("WHISPR_"))
    });
    let burst_set = fig
        .find_metadata("burst_messages")
        .is_some_and(|md| !md.name.ends_with("::Config"));
    from_v1 && !burst_set
}

/// Refuses a `WHISPR_*` variable that is neither a configuration key nor one of
/// [`OTHER_WHISPR_VARIABLES`]: a typo would otherwise be ignored without a word.
fn check_whispr_variables(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let known: Vec<String> = known_keys()
        .iter()
        .map(|k| format!("WHISPR_{}", k.to_ascii_uppercase()))
        .chain(OTHER_WHISPR_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    for name in names {
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with("WHISPR_") || known.contains(&upper) {
            continue;
        }
        let problem = match suggest(&upper, &known) {
            Some(near) => format!("unknown variable (did you mean {near}?)"),
            None => format!(
                "unknown variable: not a key of whispr.example.toml in upper case after WHISPR_, nor one of {}",
                OTHER_WHISPR_VARIABLES.join(", ")
            ),
        };
        return Err(ConfigError::new("environment", name, problem));
    }
    Ok(())
}

/// The known name nearest to `typed`, if it is near enough to be a typo of it (an edit
/// distance of at most a third of its length).
fn suggest(typed: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&typed.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= k.len().max(3) / 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over bytes (configuration names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Reads `listen`: an `ip:port`, or a `host:port` resolved now (first IPv4 address,
/// else the first address), so `--listen localhost:8000` works as it reads.
fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_listen(&text).map_err(serde::de::Error::custom)
}

/// `ip:port` or `host:port` to one address to bind.
pub fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(format!(
            "{text:?} is not host:port (e.g. 127.0.0.1:8000, [::]:8000 or localhost:8000)"
        ));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// The top-level keys of `Config`, from its serialised default.
fn known_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let text = include_str!("../whispr.example.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
        for key in known_keys() {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} ="))),
                "whispr.example.toml lacks `{key}`"
            );
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn attachment_ttl_math_saturates() {
        let month = Config::from_toml("attachment_ttl_seconds = 2592000").unwrap();
        assert_eq!(month.attachment_ttl_ms(), 2_592_000_000);
        let huge = Config {
            attachment_ttl_seconds: u64::MAX,
            ..Config::default()
        };
        assert_eq!(huge.attachment_ttl_ms(), u64::MAX);
        assert_eq!(huge.blob_limits().ttl_ms, u64::MAX);
    }

    #[test]
    fn v1_names_are_keys() {
        let c = Config::from_toml(
            "max_messages_per_recipient = 20\nmax_messages_per_second = 3\nmessage_ttl_seconds = 60\nattachment_max_size_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!(c.max_messages_per_recipient, 20);
        assert_eq!(c.max_messages_per_second, 3);
        assert_eq!(c.message_ttl_seconds, 60);
        assert_eq!(c.attachment_max_size_bytes, 1024);
    }

    #[test]
    fn whispr_v1_compat_is_on_by_default_and_can_be_switched_off() {
        assert!(Config::default().compat_whispr_v1);
        let c = Config::from_toml("compat_whispr_v1 = false").unwrap();
        assert!(!c.compat_whispr_v1);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn whispr_v1_compat_switch_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WHISPR_COMPAT_WHISPR_V1", "false");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert!(!c.compat_whispr_v1);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::from_toml("max_mesages_per_second = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_mesages_per_second"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn a_misspelled_whispr_variable_stops_with_one_line_and_a_suggestion() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WHISPR_MAX_MESAGES_PER_SECOND", "5");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                "configuration: environment WHISPR_MAX_MESAGES_PER_SECOND: unknown variable (did you mean WHISPR_MAX_MESSAGES_PER_SECOND?)"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("WHISPR_NONSENSE", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(err.key, "WHISPR_NONSENSE");
            assert!(err.problem.contains("WHISPR_SERVER"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            for other in OTHER_WHISPR_VARIABLES {
                jail.set_env(other, "1");
            }
            jail.set_env("WHISPR_CONFIG", "/nonexistent");
            Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn every_error_is_one_line_naming_where_and_the_key() {
        // The one line a load from `file` with `flags` fails with.
        let error = |file: Option<&str>, flags: &Overrides| {
            Config::load(file.map(Path::new), flags)
                .unwrap_err()
                .to_string()
        };
        let none = Overrides::default();
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "max_mesages_per_second = 3\n")?;
            let err = error(Some("w.toml"), &none);
            assert!(
                err.starts_with("configuration: ")
                    && err.ends_with(
                        "w.toml max_mesages_per_second: unknown key (did you mean max_messages_per_second?)"
                    ),
                "{err}"
            );
            jail.create_file("syntax.toml", "listen = \n[x\n")?;
            let err = error(Some("syntax.toml"), &none);
            assert!(err.contains("syntax.toml") && !err.contains('\n'), "{err}");
            jail.create_file("zero.toml", "message_ttl_seconds = 0\n")?;
            let err = error(Some("zero.toml"), &none);
            assert!(
                err.ends_with("zero.toml message_ttl_seconds: must be at least 1"),
                "{err}"
            );
            jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "soon");
            let err = error(None, &none);
            assert!(
                err.starts_with("configuration: environment WHISPR_MESSAGE_TTL_SECONDS: "),
                "{err}"
            );
            jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "0");
            let err = error(None, &none);
            assert_eq!(
                err,
                "configuration: environment WHISPR_MESSAGE_TTL_SECONDS: must be at least 1"
            );
            jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "60");
            let flags = Overrides {
                log_level: Some("[[[".into()),
                ..Overrides::default()
            };
            let err = error(None, &flags);
            assert!(
                err.starts_with("configuration: flag --log-level: not a valid filter"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn listen_takes_host_names() {
        let c = Config::from_toml("listen = \"localhost:8001\"").unwrap();
        assert!(c.listen.ip().is_loopback(), "{}", c.listen);
        assert_eq!(c.listen.port(), 8001);
        assert_eq!(
            resolve_listen("[::1]:9").unwrap(),
            "[::1]:9".parse::<SocketAddr>().unwrap()
        );
        for bad in [
            "localhost",
            "localhost:http",
            ":80",
            "no-such-host.invalid:80",
        ] {
            let err = Config::from_toml(&format!("listen = {bad:?}")).unwrap_err();
            assert_eq!(err.key, "listen", "{bad}: {err}");
        }
    }

    #[test]
    fn suggestions_are_for_typos_only() {
        let known = known_keys();
        assert_eq!(
            suggest("max_mesages_per_second", &known).as_deref(),
            Some("max_messages_per_second")
        );
        assert_eq!(suggest("colour", &known), None);
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_key() {
        let err = Config::from_toml("message_ttl_seconds = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("message_ttl_seconds"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        for (toml, key) in [
            ("message_ttl_seconds = 0", "message_ttl_seconds"),
            (
                "max_messages_per_second_per_ip = 1000001",
                "max_messages_per_second",
            ),
            ("max_message_bytes = 0", "max_message_bytes"),
            (
                "max_bad_signatures_per_second_per_ip = 0",
                "max_bad_signatures_per_second_per_ip",
            ),
            (
                "burst_bad_signatures_per_ip = 0",
                "burst_bad_signatures_per_ip",
            ),
            (
                "max_bad_signatures_per_session = 1000001",
                "max_bad_signatures_per_session",
            ),
            ("ws_max_inflight = 0", "ws_max_inflight"),
            ("origin = \"https://x\"", "origin"),
            ("max_store_bytes = 10", "max_store_bytes"),
            ("attachment_max_size_bytes = 0", "attachment_max_size_bytes"),
            ("attachment_ttl_seconds = 0", "attachment_ttl_seconds"),
            (
                "attachment_upload_timeout_seconds = 0",
                "attachment_upload_timeout_seconds",
            ),
            ("attachment_ttl_seconds = 2592001", "attachment_ttl_seconds"),
            (
                "attachment_ttl_seconds = 18446744073709551615",
                "attachment_ttl_seconds",
            ),
            (
                "attachment_max_size_bytes = 2048\nmax_attachment_store_bytes = 2047",
                "max_attachment_store_bytes",
            ),
            (
                "attachment_max_size_bytes = 2048\nmax_attachment_bytes_per_sender = 2047",
                "max_attachment_bytes_per_sender",
            ),
            (
                "attachment_max_size_bytes = 3000\nmax_attachment_inflight_bytes = 20383",
                "max_attachment_inflight_bytes",
            ),
            (
                "http_header_read_timeout_seconds = 0",
                "http_header_read_timeout_seconds",
            ),
            (
                "http_keep_alive_timeout_seconds = 11",
                "http_keep_alive_timeout_seconds",
            ),
            (
                "http_body_timeout_seconds = 3601",
                "http_body_timeout_seconds",
            ),
            ("http_max_head_bytes = 8191", "http_max_head_bytes"),
            ("http_max_connections = 0", "http_max_connections"),
            ("http_max_connections_per_ip = 0", "http_max_connections"),
            (
                "http_reserved_connections_per_ip = 0",
                "http_reserved_connections_per_ip",
            ),
            ("signal_max_peers_per_room = 1", "signal_max_peers_per_room"),
            (
                "ws_max_write_buffer_bytes = 65536",
                "ws_max_write_buffer_bytes",
            ),
            ("ws_close_timeout_seconds = 0", "ws_close_timeout_seconds"),
            (
                "ws_ephemeral_queue_bytes = 65536",
                "ws_ephemeral_queue_bytes",
            ),
            ("signal_max_message_bytes = 0", "signal_max_message_bytes"),
            (
                "signal_max_rooms_per_connection = 0",
                "signal_max_rooms_per_connection",
            ),
            (
                "signal_max_frames_per_second = 0",
                "signal_max_frames_per_second",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "max_messages_per_second = 5\nmessage_ttl_seconds = 100\nlisten = \"127.0.0.1:9000\"")?;
            jail.set_env("MESSAGE_TTL_SECONDS", "200");
            jail.set_env("max_messages_per_recipient", "77");
            jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "300");
            jail.set_env("WHISPR_TEST_STRICT", "1");
            let flags = Overrides {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
                ..Overrides::default()
            };
            let c = Config::load(Some(Path::new("w.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.max_messages_per_second, 5, "file over defaults");
            assert_eq!(
                c.message_ttl_seconds, 300,
                "WHISPR_ env over v1 env over file"
            );
            assert_eq!(
                c.listen.to_string(),
                "127.0.0.1:9100",
                "flags over everything"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn a_v1_settings_json_is_a_layer_below_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "w.toml",
                "max_messages_per_recipient = 5\nmessage_ttl_seconds = 100",
            )?;
            jail.create_file(
                "settings.json",
                r#"{"max_messages_per_recipient": 20, "message_ttl_seconds": 60, "analytics_enabled": true}"#,
            )?;
            jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "90");
            let (c, ignored) = Config::load_with_settings(
                Some(Path::new("w.toml")),
                Some(Path::new("settings.json")),
                &Overrides::default(),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(
                c.max_messages_per_recipient, 20,
                "settings.json over the TOML file"
            );
            assert_eq!(
                c.message_ttl_seconds, 90,
                "the environment over settings.json"
            );
            assert_eq!(ignored, vec!["analytics_enabled".to_string()]);
            jail.create_file("broken.json", "[1, 2]")?;
            let err = Config::load_with_settings(
                None,
                Some(Path::new("broken.json")),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("broken.json"), "{err}");
            jail.create_file("typed.json", r#"{"max_messages_per_recipient": "many"}"#)?;
            let err = Config::load_with_settings(
                None,
                Some(Path::new("typed.json")),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("typed.json")
                    && err.to_string().contains("max_messages_per_recipient"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn a_v1_rate_without_a_burst_allows_at_most_that_many_in_a_second() {
        figment::Jail::expect_with(|jail| {
            let load = |settings: Option<&str>| {
                Config::load_with_settings(
                    Some(Path::new("w.toml")),
                    settings.map(Path::new),
                    &Overrides::default(),
                )
                .map(|(c, _)| (c.max_messages_per_second, c.burst_messages))
                .map_err(|e| e.to_string())
            };
            jail.create_file("w.toml", "")?;
            jail.create_file("settings.json", r#"{"max_messages_per_second": 10}"#)?;
            assert_eq!(load(Some("settings.json"))?, (10, 10), "settings.json");
            assert_eq!(load(None)?, (10, 50), "native defaults");
            jail.set_env("max_messages_per_second", "7");
            assert_eq!(load(None)?, (7, 7), "the v1 environment name");
            jail.set_env("WHISPR_MAX_MESSAGES_PER_SECOND", "8");
            assert_eq!(
                load(None)?,
                (8, 50),
                "the native variable keeps the native burst"
            );
            jail.clear_env();
            jail.create_file("w.toml", "max_messages_per_second = 9")?;
            assert_eq!(load(None)?, (9, 50), "a TOML key is native");
            jail.create_file("w.toml", "burst_messages = 30")?;
            assert_eq!(
                load(Some("settings.json"))?,
                (10, 30),
                "a burst that is set stays"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_readable() {
        let err = Config::load(
            Some(Path::new("/nonexistent/whispr.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/whispr.toml"),
            "{err}"
        );
    }
}
