//! The one write path. Every envelope, from a WebSocket `send` or `POST /v1/send`,
//! goes: size limit -> key lengths -> strict signature -> timestamp window -> rate limit
//! (client IP, sender key) -> store (atomic dedupe by id, inbox cap, byte budget) ->
//! notify the recipient's session -> "accepted". The answer comes only after the store
//! has the message, so an accepted message is never only in flight.
//!
//! A Whispr v1 `POST /send` enters at `submit_verified`, after `protocol::whispr_v1`
//! checked its v1 signature: the same rate limits, store and notification follow.
//!
//! Ephemeral envelopes take the same checks but skip the store: they are handed to the
//! recipient's live session or reported offline.
//!
//! The relay also holds what attachment requests share with it: the rate-limit buckets
//! (`check_rate`, `check_ip_rate`, `check_sender_rate`) and the bound on attachment
//! bytes in flight (`reserve_attachment_bytes`). The attachment routes use them; the store is
//! `blobs`.

mod keys;
mod ratelimit;

use std::net::IpAddr;
use std::sync::Arc;

use crate::analytics::{Analytics, Event};
use crate::blobs::{BlobError, Inflight, InflightPermit};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::protocol::{
    Envelope, MessageId, ProtocolError, PublicKey, VerifiedEnvelope, WireEnvelope,
};
use crate::redis_link::RedisLink;
use crate::registry::Registry;
use crate::store::{InsertOutcome, SharedStore, StoreError};

pub use ratelimit::RateLimits;

/// The outcome of a successful submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: MessageId,
    pub sender: PublicKey,
    pub recipient: PublicKey,
    /// The envelope had been accepted before; nothing changed.
    pub duplicate: bool,
    /// Ephemeral only: whether a live session of the recipient took it.
    pub online: Option<bool>,
}

/// Everything the write path needs, shared by all connections.
pub struct Relay {
    pub store: SharedStore,
    pub registry: Arc<Registry>,
    pub clock: Clock,
    /// Shared with every socket (the socket layer counts its closes).
    pub metrics: Arc<Metrics>,
    pub analytics: Analytics,
    /// Attachment bytes held by requests in progress, all uploads and downloads
    /// together (`max_attachment_inflight_bytes`).
    attachment_bytes: Inflight,
    limits: RateLimits,
    sender_keys: keys::SenderKeys,
    max_message_bytes: usize,
    max_skew_ms: u64,
    /// Set when several nodes share Redis: an ephemeral envelope whose recipient has
    /// no session here is published to the recipient's channel for the node that has.
    nodes: Option<RedisLink>,
}

impl Relay {
    pub fn new(config: &Config, store: SharedStore, registry: Arc<Registry>, clock: Clock) -> Self {
        Relay {
            store,
            registry,
            clock,
            metrics: Arc::new(Metrics::new()),
            analytics: Analytics::disabled(),
            attachment_bytes: Inflight::new(config.max_attachment_inflight_bytes),
            limits: RateLimits::new(
                (config.max_messages_per_second, config.burst_messages),
                (
                    config.max_messages_per_second_per_ip,
                    config.burst_messages_per_ip,
                ),
            ),
            sender_keys: keys::SenderKeys::default(),
            max_message_bytes: config.max_message_bytes,
            max_skew_ms: config.max_clock_skew_ms(),
            nodes: None,
        }
    }

    /// Checks an envelope as received, without side effects.
    pub fn verify(&self, wire: WireEnvelope) -> Result<VerifiedEnvelope, RelayError> {
        if wire.body.len() > self.max_message_bytes {
            return Err(ProtocolError::TooLarge {
                size: wire.body.len(),
                max: self.max_message_bytes,
            }
            .into());
        }
        let envelope = Envelope::try_from(wire)?;
        let key = self.sender_keys.get(&envelope.sender)?;
        Ok(envelope.verify_with(&key, self.clock.now_ms(), self.max_skew_ms)?)
    }

    /// The write path: verify, rate-limit, store, notify. Counts the outcome.
    pub async fn submit(
        &self,
        wire: WireEnvelope,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        let bytes = wire.body.len();
        let result = self.submit_inner(wire, client_ip).await;
        self.account(&result, bytes);
        result
    }

    async fn submit_inner(
        &self,
        wire: WireEnvelope,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        let verified = self.verify(wire)?;
        self.limits.check(verified.sender(), client_ip).await?;
        let id = verified.id();
        if verified.envelope().ephemeral {
            let recipient = *verified.recipient();
            let sender = *verified.sender();
            let online = self.push_ephemeral(verified).await?;
            return Ok(Accepted {
                id,
                sender,
                recipient,
                duplicate: false,
                online: Some(online),
            });
        }
        self.store_and_notify(verified).await
    }

    /// Stores a verified, rate-checked envelope, then wakes its recipient.
    async fn store_and_notify(&self, verified: VerifiedEnvelope) -> Result<Accepted, RelayError> {
        let id = verified.id();
        let outcome = self.store.insert(&verified, self.clock.now_ms()).await?;
        let duplicate = outcome == InsertOutcome::Duplicate;
        if !duplicate {
            // An inbox has one session across all nodes: when it is here, no other
            // node needs the wake-up (a newer one elsewhere reads the store when it
            // registers). v1 inboxes have no session and always publish.
            if !self.registry.notify(verified.recipient()) {
                self.registry.notify_remote(verified.recipient());
            }
        }
        tracing::debug!(id = %id, duplicate, "accepted");
        Ok(Accepted {
            id,
            sender: *verified.sender(),
            recipient: *verified.recipient(),
            duplicate,
            online: None,
        })
    }

    /// The write path for a message a compatibility front end has already verified (a
    /// Whispr v1 message: `protocol::whispr_v1`): rate-limit (client IP, sender key),
    /// store, notify. Nothing else builds a [`VerifiedEnvelope`], so the store still
    /// sees only verified messages.
    pub async fn submit_verified(
        &self,
        verified: VerifiedEnvelope,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        let bytes = verified.envelope().body.len();
        let result = match self.limits.check(verified.sender(), client_ip).await {
            Ok(()) => self.store_and_notify(verified).await,
            Err(e) => Err(e),
        };
        self.account(&result, bytes);
        result
    }

    /// Counts a submission's outcome in the metrics and the analytics log.
    fn account(&self, result: &Result<Accepted, RelayError>, bytes: usize) {
        let m = &self.metrics;
        match result {
            Ok(a) => {
                let kind = match (a.online, a.duplicate) {
                    (Some(_), _) => "ephemeral",
                    (None, true) => "duplicate",
                    (None, false) => "stored",
                };
                m.accepted.with_label_values(&[kind]).inc();
                if self.analytics.enabled() {
                    let event = Event::MessageAccepted {
                        kind,
                        bytes,
                        sender: self.analytics.key(&a.sender),
                        recipient: self.analytics.key(&a.recipient),
                    };
                    self.analytics.record(self.clock.now_ms(), event);
                }
            }
            Err(e) => {
                m.refused(e.code());
                self.analytics.record(
                    self.clock.now_ms(),
                    Event::MessageRefused {
                        reason: e.code().as_str(),
                    },
                );
                match e {
                    RelayError::RateLimited { scope, .. } => {
                        m.rate_limited.with_label_values(&[scope]).inc()
                    }
                    RelayError::Store(StoreError::Unavailable(_)) => m.store_errors.inc(),
                    _ => {}
                }
            }
        }
    }

    /// Joins the other nodes on this Redis: the rate-limit buckets move there, and
    /// ephemeral envelopes reach sessions on other nodes.
    pub fn share_with_nodes(&mut self, conn: RedisLink) {
        self.limits.share(conn.clone());
        self.nodes = Some(conn);
    }

    /// Hands an ephemeral envelope to the recipient's session here or, with other
    /// nodes, on whichever node holds it. `true` when a session (or a node with one)
    /// took it; on a node it is still only as reliable as pub/sub (at most once).
    async fn push_ephemeral(&self, verified: VerifiedEnvelope) -> Result<bool, RelayError> {
        let recipient = *verified.recipient();
        let Some(link) = &self.nodes else {
            return Ok(self.registry.push_ephemeral(&recipient, Arc::new(verified)));
        };
        if self.registry.has_session(&recipient) {
            return Ok(self.registry.push_ephemeral(&recipient, Arc::new(verified)));
        }
        let payload = crate::notify::ephemeral_payload(verified.envelope())
            .map_err(|e| StoreError::Unavailable(format!("encoding an ephemeral envelope: {e}")))?;
        crate::notify::publish_ephemeral(link, &recipient, payload)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis (ephemeral): {e}")).into())
    }

    /// Takes one token from the client IP's and the sender's buckets, the ones sends
    /// use, for work that is not a message (an attachment upload), so uploads and
    /// messages share one budget per sender and per IP. Counts a refusal.
    pub async fn check_rate(
        &self,
        sender: &PublicKey,
        client_ip: IpAddr,
    ) -> Result<(), RelayError> {
        let result = self.limits.check(sender, client_ip).await;
        self.count_rate_limited(result)
    }

    /// Takes one token from the client IP's bucket only (the one sends use): before an
    /// attachment body is read, when its sender is not known yet, and per download.
    /// Counts a refusal.
    pub async fn check_ip_rate(&self, client_ip: IpAddr) -> Result<(), RelayError> {
        let result = self.limits.check_ip(client_ip).await;
        self.count_rate_limited(result)
    }

    /// Takes one token from the sender's bucket only, for an upload whose IP token was
    /// taken before its body was read. Counts a refusal.
    pub async fn check_sender_rate(&self, sender: &PublicKey) -> Result<(), RelayError> {
        let result = self.limits.check_sender(sender).await;
        self.count_rate_limited(result)
    }

    fn count_rate_limited(&self, result: Result<(), RelayError>) -> Result<(), RelayError> {
        result.inspect_err(|e| {
            if let RelayError::RateLimited { scope, .. } = e {
                self.metrics.rate_limited.with_label_values(&[scope]).inc();
            }
        })
    }

    /// Reserves `bytes` of the attachment bytes in flight for one request, or refuses
    /// at once ([`BlobError::Busy`]). Counts a refusal.
    pub fn reserve_attachment_bytes(&self, bytes: u64) -> Result<InflightPermit, BlobError> {
        self.attachment_bytes
            .try_reserve(bytes)
            .inspect_err(|_| self.metrics.blobs_busy.inc())
    }

    /// Periodic housekeeping: idle rate-limit buckets.
    pub fn prune(&self) {
        self.limits.prune();
    }

    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }
}
