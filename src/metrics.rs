//! Prometheus metrics: one table of names, registered once, rendered at `GET /metrics`.
//! No label carries a key or anything a user controls: labels are fixed enums
//! (error codes, codecs, close reasons: `ws::End::label`), so cardinality is bounded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{Codec, ErrorCode};

/// Every metric of the relay.
pub struct Metrics {
    registry: Registry,
    /// The signature verifier stage's counters (`relay/verifier.rs`).
    pub verifier: crate::relay::VerifierStats,
    pub connections: IntGauge,
    pub sessions: IntGaugeVec,
    pub accepted: IntCounterVec,
    pub delivered: IntCounterVec,
    /// Messages handed to readers, by transport (see [`DeliveryTransport`]).
    deliveries: IntCounterVec,
    /// Request bodies refused before or while reading them, by route and reason.
    bodies_refused: IntCounterVec,
    pub expired: IntCounter,
    pub refused: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub disconnects: IntCounterVec,
    /// Every route's WebSocket closes, by reason, counted when the close begins.
    pub ws_closes: IntCounterVec,
    pub delivery_latency: Histogram,
    pub queue_age: Histogram,
    pub queue_depth: IntGauge,
    pub store_errors: IntCounter,
    /// Inboxes moved to a new epoch because their history may be incomplete, by reason
    /// (copied from the store's own counts at scrape time).
    pub store_history_lost: IntCounterVec,
    /// Writes refused because the store was full (memory budget or Redis maxmemory).
    pub store_full: IntCounter,
    pub blob_bytes: IntGauge,
    pub blobs_expired: IntCounter,
    /// Attachment requests refused because `max_attachment_inflight_bytes` was in use.
    pub blobs_busy: IntCounter,
    /// Whispr v1 `/signal` rooms with a member on this node.
    pub signal_rooms: IntGauge,
    /// Memberships of this node's `/signal` sockets in rooms.
    pub signal_members: IntGauge,
    /// Open HTTP connections of the main listener, by pool (served, reserve); sampled
    /// at scrape.
    pub http_connections: IntGaugeVec,
    /// HTTP connections past a cap (per_ip, global), by what they got: the reserve
    /// (health answered, the rest refused) or closed at accept.
    pub http_refused: IntCounterVec,
    /// HTTP connections closed by a deadline, by phase (handshake, head, idle, write).
    pub http_timeouts: IntCounterVec,
    /// TLS certificate reloads (SIGHUP), by result (ok, failed: the old one stays).
    pub tls_reloads: IntCounterVec,
    /// The largest write buffer a closed WebSocket held (set from `write_buffer_peak`
    /// at scrape, so concurrent closes cannot lower it).
    ws_write_buffer_peak_bytes: IntGauge,
    write_buffer_peak: AtomicU64,
}

fn buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
        3600.0, 86400.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets()))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let sessions = IntGaugeVec::new(
            Opts::new(
                "whispr_sessions",
                "Authenticated WebSocket sessions, by encoding.",
            ),
            &["codec"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(sessions.clone()))
            .expect("unique metric");
        let http_connections = IntGaugeVec::new(
            Opts::new(
                "whispr_http_connections",
                "Open HTTP connections (not upgraded), by pool: served, or the reserve past a cap.",
            ),
            &["pool"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_connections.clone()))
            .expect("unique metric");
        let metrics = Metrics {
            connections: gauge(
                "whispr_connections",
                "Open WebSocket connections (authenticated or not).",
            ),
            sessions,
            accepted: counter_vec(
                "whispr_messages_accepted_total",
                "Envelopes accepted, by kind (stored, duplicate, ephemeral).",
                &["kind"],
            ),
            delivered: counter_vec(
                "whispr_messages_delivered_total",
                "Deliver frames written to sessions, by kind (stored, ephemeral).",
                &["kind"],
            ),
            deliveries: counter_vec(
                "whispr_deliveries_total",
                "Messages handed to readers, by transport: ws (native WebSocket, stored and ephemeral), http_poll (GET /v1/inbox), v1_ws (Whispr v1 /ws, live sender copies included), v1_poll (Whispr v1 GET /inbox).",
                &["transport"],
            ),
            bodies_refused: counter_vec(
                "whispr_http_bodies_refused_total",
                "Request bodies refused, by route (send, v1_send, v1_upload, blobs) and reason: too_large (413, from Content-Length before a byte is read, or at the limit), timeout (408), cut (the body ended early).",
                &["route", "reason"],
            ),
            expired: counter(
                "whispr_messages_expired_total",
                "Queued messages that expired unacknowledged.",
            ),
            refused: counter_vec(
                "whispr_messages_refused_total",
                "Envelopes refused, by error code.",
                &["reason"],
            ),
            rate_limited: counter_vec(
                "whispr_rate_limited_total",
                "Requests refused by a rate limit, by bucket (sender, ip, bad_signatures: the client IP's budget of failed signature checks).",
                &["scope"],
            ),
            disconnects: counter_vec(
                "whispr_disconnects_total",
                "WebSocket sessions ended, by reason.",
                &["reason"],
            ),
            ws_closes: counter_vec(
                "whispr_ws_closes_total",
                "WebSocket connections (native, v1, /signal) that began closing, by reason (client: the peer closed or left).",
                &["reason"],
            ),
            delivery_latency: histogram(
                "whispr_delivery_latency_seconds",
                "From the envelope's timestamp (sender clock) to the deliver frame being written.",
            ),
            queue_age: histogram(
                "whispr_queue_age_seconds",
                "From storing a message to writing its deliver frame.",
            ),
            queue_depth: gauge(
                "whispr_queue_depth",
                "Messages queued in the store (sampled at scrape).",
            ),
            store_errors: counter("whispr_store_errors_total", "Store operations that failed."),
            store_history_lost: counter_vec(
                "whispr_store_history_lost_total",
                "Inboxes moved to a new epoch because the store may have lost their history (readers are told with gap epoch_changed), by reason: cursor_ahead, redis_restarted, metadata_missing, evicted.",
                &["reason"],
            ),
            store_full: counter(
                "whispr_store_full_total",
                "Writes refused because the store was full (max_store_bytes, or Redis at its maxmemory).",
            ),
            blob_bytes: gauge(
                "whispr_attachment_bytes",
                "Bytes the memory attachment store counts against max_attachment_store_bytes (0 with Redis).",
            ),
            blobs_expired: counter(
                "whispr_attachments_expired_total",
                "Attachments dropped by the sweep after their TTL (memory store).",
            ),
            verifier: crate::relay::VerifierStats {
                inline: counter(
                    "whispr_signatures_inline_total",
                    "Envelope signatures verified on their session's task, in a batch that session led (the verifier stage was idle).",
                ),
                batches: counter(
                    "whispr_signature_batches_total",
                    "Batches of envelope signatures checked in one equation: every verifier thread's, and a leading session's of two or more.",
                ),
                batched: counter(
                    "whispr_signatures_batched_total",
                    "Envelope signatures verified in batches (batched / batches = mean batch size).",
                ),
                retried_batches: counter(
                    "whispr_signature_batches_retried_total",
                    "Batches with a bad signature, whose envelopes were then verified one by one.",
                ),
                refused_full: counter(
                    "whispr_signatures_refused_full_total",
                    "Envelopes refused with 503 because verify_queue_depth were waiting.",
                ),
            },
            blobs_busy: counter(
                "whispr_attachments_busy_total",
                "Attachment uploads and downloads refused (503) because max_attachment_inflight_bytes was in use.",
            ),
            signal_rooms: gauge(
                "whispr_signal_rooms",
                "Call signalling rooms (/signal) with a member on this node.",
            ),
            signal_members: gauge(
                "whispr_signal_members",
                "Room memberships of this node's /signal sockets.",
            ),
            http_connections,
            http_refused: counter_vec(
                "whispr_http_connections_refused_total",
                "HTTP connections past http_max_connections_per_ip (cap=per_ip) or http_max_connections (cap=global), by action: reserve (health checks answered, the rest refused) or closed.",
                &["cap", "action"],
            ),
            http_timeouts: counter_vec(
                "whispr_http_timeouts_total",
                "HTTP connections closed by a deadline, by phase: handshake (TLS), head (http_header_read_timeout_seconds), idle (http_keep_alive_timeout_seconds), write (http_write_timeout_seconds).",
                &["phase"],
            ),
            tls_reloads: counter_vec(
                "whispr_tls_reloads_total",
                "TLS certificate reloads (SIGHUP) by result: ok, or failed (the previous certificate stays in use).",
                &["result"],
            ),
            ws_write_buffer_peak_bytes: gauge(
                "whispr_ws_write_buffer_peak_bytes",
                "Most bytes one closed WebSocket had queued in the relay for its peer (bounded by ws_max_write_buffer_bytes + 256).",
            ),
            write_buffer_peak: AtomicU64::new(0),
            registry,
        };
        // Every series of these exists from the start (at 0), so a dashboard or an
        // alert on them has data before the first delivery or refusal.
        for transport in DeliveryTransport::ALL {
            metrics.deliveries.with_label_values(&[transport.label()]);
        }
        for result in ["ok", "failed"] {
            metrics.tls_reloads.with_label_values(&[result]);
        }
        for route in BODY_ROUTES {
            for reason in BODY_REFUSALS {
                metrics.bodies_refused.with_label_values(&[route, reason]);
            }
        }
        metrics
    }

    pub fn codec_label(codec: Codec) -> &'static str {
        match codec {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    pub fn refused(&self, code: ErrorCode) {
        self.refused.with_label_values(&[code.as_str()]).inc();
    }

    /// Counts `n` messages handed to readers over `transport`.
    pub fn delivered_over(&self, transport: DeliveryTransport, n: usize) {
        self.deliveries
            .with_label_values(&[transport.label()])
            .inc_by(n as u64);
    }

    /// Counts a request body refused on `route` for `reason` (fixed names: see
    /// `http::body`).
    pub fn body_refused(&self, route: &'static str, reason: &'static str) {
        self.bodies_refused
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Records one stored delivery's latencies.
    pub fn observe_delivery(&self, now_ms: u64, sent_ms: u64, stored_ms: u64) {
        self.delivered.with_label_values(&["stored"]).inc();
        self.delivered_over(DeliveryTransport::Ws, 1);
        self.delivery_latency
            .observe(now_ms.saturating_sub(sent_ms) as f64 / 1000.0);
        self.queue_age
            .observe(now_ms.saturating_sub(stored_ms) as f64 / 1000.0);
    }

    /// Copies the store's own counts into their counters (they only grow).
    pub fn sync_store(&self, events: &crate::store::StoreEvents) {
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        for reason in crate::store::HistoryLoss::ALL {
            catch_up(
                &self.store_history_lost.with_label_values(&[reason.label()]),
                events.history_lost_total(reason),
            );
        }
        catch_up(&self.store_full, events.full_total());
    }

    /// Records the largest write buffer of a socket that ended.
    pub fn observe_write_buffer_peak(&self, bytes: usize) {
        self.write_buffer_peak
            .fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let peak = self.write_buffer_peak.load(Ordering::Relaxed);
        self.ws_write_buffer_peak_bytes
            .set(i64::try_from(peak).unwrap_or(i64::MAX));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The routes that read a request body (`route` of `whispr_http_bodies_refused_total`).
pub const BODY_ROUTES: [&str; 4] = ["send", "v1_send", "v1_upload", "blobs"];
/// Why a body was refused (`reason` of `whispr_http_bodies_refused_total`).
pub const BODY_REFUSALS: [&str; 3] = ["too_large", "timeout", "cut"];

/// How a message reached its reader, for `whispr_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryTransport {
    /// A native WebSocket session (`/v1/ws`).
    Ws,
    /// A native poll (`GET /v1/inbox`).
    HttpPoll,
    /// A Whispr v1 push socket (`/ws/{key}`, `/ws?recipient=`).
    V1Ws,
    /// A Whispr v1 poll (`GET /inbox/{key}`).
    V1Poll,
}

impl DeliveryTransport {
    pub const ALL: [DeliveryTransport; 4] = [
        DeliveryTransport::Ws,
        DeliveryTransport::HttpPoll,
        DeliveryTransport::V1Ws,
        DeliveryTransport::V1Poll,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeliveryTransport::Ws => "ws",
            DeliveryTransport::HttpPoll => "http_poll",
            DeliveryTransport::V1Ws => "v1_ws",
            DeliveryTransport::V1Poll => "v1_poll",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_and_body_refusal_is_exposed_from_the_start() {
        let text = Metrics::new().render();
        for transport in DeliveryTransport::ALL {
            let series = format!(
                "whispr_deliveries_total{{transport=\"{}\"}} 0",
                transport.label()
            );
            assert!(text.contains(&series), "{series}");
        }
        for route in BODY_ROUTES {
            for reason in BODY_REFUSALS {
                let series = format!(
                    "whispr_http_bodies_refused_total{{reason=\"{reason}\",route=\"{route}\"}} 0"
                );
                assert!(text.contains(&series), "{series}");
            }
        }
    }
}
