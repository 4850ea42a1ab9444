//! The one write path. Every envelope, from a WebSocket `send` or `POST /v1/send`,
//! goes: size limit -> key lengths -> the client IP's budget of bad signatures ->
//! strict signature -> timestamp window -> rate limit (client IP, sender key) -> store
//! (atomic dedupe by id, inbox cap, byte budget) -> notify the recipient's session ->
//! "accepted". The answer comes only after the store has the message, so an accepted
//! message is never only in flight.
//!
//! A Whispr v1 `POST /send` is verified by `verify_v1` (`protocol::whispr_v1` checks its
//! v1 signature, within the same budget) and enters at `submit_verified`: the same rate
//! limits, store and notification follow.
//!
//! Every signature check for a client (envelopes, v1 messages, signed HTTP requests)
//! runs through `check_signature`, so a failed check costs the client a token of its
//! IP's budget (`budget.rs`) before it can cost the relay a core.
//!
//! Ephemeral envelopes take the same checks but skip the store: they are handed to the
//! recipient's live session or reported offline.
//!
//! The relay also holds what attachment requests share with messages: the rate-limit
//! buckets (`check_rate`, `check_ip_rate`, `check_sender_rate`). The attachment store
//! and its bound on bytes in flight are `blobs::Attachments`.
//!
//! A [`Relay`] is built once, by [`Relay::builder`], with everything it will hold; its
//! fields are private, and what other modules need of it they read through accessors.

mod budget;
mod keys;
pub(crate) mod limits;
mod ratelimit;
mod verifier;

use std::net::IpAddr;
use std::sync::Arc;

use crate::analytics::{Analytics, Event};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::RelayError;
use crate::metrics::Metrics;
use crate::protocol::whispr_v1::SendV1;
use crate::protocol::{
    Envelope, MessageId, ProtocolError, PublicKey, VerifiedEnvelope, WireEnvelope,
};
use crate::redis_link::RedisLink;
use crate::registry::Registry;
use crate::store::{InsertOutcome, SharedStore, StoreError};

pub use budget::SignatureBudget;
pub use ratelimit::RateLimits;
pub use verifier::{Verifier, VerifierLimits, VerifierStats, VERIFY_BUSY_RETRY_MS};

/// A send whose checks [`Relay::begin_verify`] began: its signature's verdict, in or to
/// come, and who sent it (whose bad-signature budget a refusal is charged to).
#[derive(Debug)]
pub struct Verifying {
    ticket: verifier::Ticket,
    client_ip: IpAddr,
}

impl Verifying {
    /// Until the signature's verdict is in (when this send leads its batch, after
    /// running it: see `verifier.rs`). Cancel-safe.
    pub async fn ready(&mut self) {
        self.ticket.ready().await
    }
}

/// The rate-limit scope (metric label, error detail) of the bad-signature budget.
pub const BAD_SIGNATURES: &str = "bad_signatures";

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

/// Everything the write path needs, shared by all connections. Built by
/// [`Relay::builder`].
pub struct Relay {
    store: SharedStore,
    registry: Arc<Registry>,
    clock: Clock,
    /// Shared with every socket (the socket layer counts its closes).
    metrics: Arc<Metrics>,
    analytics: Analytics,
    limits: RateLimits,
    /// Bad signatures each client IP may make this node check (`budget.rs`).
    signatures: SignatureBudget,
    /// `max_bad_signatures_per_session`: a WebSocket session is closed at this many.
    max_bad_signatures_per_session: u32,
    sender_keys: keys::SenderKeys,
    /// Every envelope signature goes through it: inline when idle, batched when busy.
    verifier: Verifier,
    max_message_bytes: usize,
    max_skew_ms: u64,
    /// Set when several nodes share Redis: an ephemeral envelope whose recipient has
    /// no session here is published to the recipient's channel for the node that has.
    nodes: Option<RedisLink>,
}

/// What a [`Relay`] is built from: the store, the registry and the clock it needs, and
/// what is optional (the analytics log, other nodes on the same Redis).
pub struct RelayBuilder {
    store: SharedStore,
    registry: Arc<Registry>,
    clock: Clock,
    analytics: Analytics,
    nodes: Option<RedisLink>,
}

impl RelayBuilder {
    /// Records accepted and refused messages in `analytics` (off by default).
    pub fn analytics(mut self, analytics: Analytics) -> Self {
        self.analytics = analytics;
        self
    }

    /// Joins the other nodes on this Redis: the rate-limit buckets move there, and
    /// ephemeral envelopes reach sessions on other nodes.
    pub fn shared_with_nodes(mut self, link: RedisLink) -> Self {
        self.nodes = Some(link);
        self
    }

    /// The relay, with its limits from `config`.
    pub fn build(self, config: &Config) -> Relay {
        let mut limits = RateLimits::new(
            (config.max_messages_per_second, config.burst_messages),
            (
                config.max_messages_per_second_per_ip,
                config.burst_messages_per_ip,
            ),
        )
        .with_lease(std::time::Duration::from_millis(config.rate_limit_lease_ms));
        if let Some(link) = &self.nodes {
            limits.share(link.clone());
        }
        let metrics = Arc::new(Metrics::new());
        Relay {
            verifier: Verifier::new(
                VerifierLimits::from_config(config),
                metrics.verifier.clone(),
            ),
            store: self.store,
            registry: self.registry,
            clock: self.clock,
            metrics,
            analytics: self.analytics,
            limits,
            signatures: SignatureBudget::new(
                config.max_bad_signatures_per_second_per_ip,
                config.burst_bad_signatures_per_ip,
            ),
            max_bad_signatures_per_session: config.max_bad_signatures_per_session,
            sender_keys: keys::SenderKeys::default(),
            max_message_bytes: config.max_message_bytes,
            max_skew_ms: config.max_clock_skew_ms(),
            nodes: self.nodes,
        }
    }
}

impl Relay {
    /// Starts building a relay on `store`, waking sessions through `registry`, on
    /// `clock`.
    pub fn builder(store: SharedStore, registry: Arc<Registry>, clock: Clock) -> RelayBuilder {
        RelayBuilder {
            store,
            registry,
            clock,
            analytics: Analytics::disabled(),
            nodes: None,
        }
    }

    /// The message store (sessions and readers read and acknowledge through it).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// This node's live sessions and v1 sockets.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Every metric of this relay (one registry, shared with the sockets).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }

    /// Checks an envelope as received from `client_ip`, its signature through the
    /// verifier stage (`verifier.rs`). Its only side effect is on the IP's budget of bad
    /// signatures.
    pub async fn verify(
        &self,
        wire: WireEnvelope,
        client_ip: IpAddr,
    ) -> Result<VerifiedEnvelope, RelayError> {
        let mut verifying = self.begin_verify(wire, client_ip)?;
        verifying.ready().await;
        self.finish_verify(verifying)
    }

    /// [`Relay::verify`] without waiting: the cheap checks (size, decoding, the IP's
    /// budget of bad signatures, the sender key) now, and the signature queued in the
    /// verifier stage. A session begins several of its sends' checks this way, so they
    /// can share batches, and accepts them in order ([`Relay::finish_verify`],
    /// [`Relay::accept`]).
    pub fn begin_verify(
        &self,
        wire: WireEnvelope,
        client_ip: IpAddr,
    ) -> Result<Verifying, RelayError> {
        if wire.body.len() > self.max_message_bytes {
            return Err(ProtocolError::TooLarge {
                size: wire.body.len(),
                max: self.max_message_bytes,
            }
            .into());
        }
        let envelope = Envelope::try_from(wire)?;
        self.admit_signature(client_ip)?;
        let ticket = match self.sender_keys.get(&envelope.sender) {
            Ok(key) => self
                .verifier
                .start(envelope.signature_check(key))
                .map_err(|full| RelayError::VerifierFull {
                    queue_depth: full.queue_depth,
                })?,
            Err(e) => verifier::Ticket::Done(Err(e)),
        };
        Ok(Verifying { ticket, client_ip })
    }

    /// The rest of [`Relay::verify`] once `verifying` is ready: the timestamp, and the
    /// IP's budget charged for a bad signature.
    pub fn finish_verify(&self, verifying: Verifying) -> Result<VerifiedEnvelope, RelayError> {
        let Verifying { ticket, client_ip } = verifying;
        let verifier::Ticket::Done(signed) = ticket else {
            return Err(ProtocolError::Internal(
                "a signature check was finished before its verdict came".into(),
            )
            .into());
        };
        let verified = signed
            .and_then(|s| s.check_timestamp(self.clock.now_ms(), self.max_skew_ms))
            .inspect_err(|e| self.charge_bad_signature(client_ip, e))?;
        Ok(verified)
    }

    /// Checks a Whispr v1 message from `client_ip` (its v1 signature, strictly) within
    /// the IP's budget of bad signatures, and counts a refusal.
    pub fn verify_v1(
        &self,
        message: SendV1,
        client_ip: IpAddr,
    ) -> Result<VerifiedEnvelope, RelayError> {
        let now = self.clock.now_ms();
        self.check_signature(client_ip, || message.verify(now, self.max_message_bytes))
            .inspect_err(|e| self.metrics.refused(e.code()))
    }

    /// Runs one signature check for `client_ip` within its budget of bad signatures:
    /// refused (`rate_limited`) before the check while the budget is spent, and charged
    /// when the check fails with `bad_signature` (a forged or malleable signature, an
    /// invalid or small-order key). A stale timestamp, checked after a good signature,
    /// is not charged.
    pub fn check_signature<T>(
        &self,
        client_ip: IpAddr,
        check: impl FnOnce() -> Result<T, ProtocolError>,
    ) -> Result<T, RelayError> {
        self.admit_signature(client_ip)?;
        check()
            .inspect_err(|e| self.charge_bad_signature(client_ip, e))
            .map_err(RelayError::from)
    }

    /// Refuses (`rate_limited`) while the client IP's budget of bad signatures is spent.
    fn admit_signature(&self, client_ip: IpAddr) -> Result<(), RelayError> {
        match self.signatures.admit(client_ip, self.clock.now_ms()) {
            Ok(()) => Ok(()),
            Err(wait) => self.count_rate_limited(Err(RelayError::RateLimited {
                scope: BAD_SIGNATURES,
                retry_after_ms: (wait.as_micros() as u64).div_ceil(1000).max(1),
            })),
        }
    }

    /// Charges the client IP's budget when a check failed with `bad_signature`.
    fn charge_bad_signature(&self, client_ip: IpAddr, e: &ProtocolError) {
        if matches!(e, ProtocolError::BadSignature { .. }) {
            self.signatures.charge(client_ip, self.clock.now_ms());
        }
    }

    /// The bad-signature count of one new WebSocket session.
    pub fn session_strikes(&self) -> crate::session::state::SignatureStrikes {
        crate::session::state::SignatureStrikes::new(self.max_bad_signatures_per_session)
    }

    /// The write path: verify, rate-limit, store, notify. Counts the outcome.
    pub async fn submit(
        &self,
        wire: WireEnvelope,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        let bytes = wire.body.len();
        let verified = self.verify(wire, client_ip).await;
        self.accept(verified, bytes, client_ip).await
    }

    /// The write path after the signature check ([`Relay::verify`], or
    /// [`Relay::begin_verify`] and [`Relay::finish_verify`]): rate-limit, store, notify;
    /// counts the outcome of the send (`bytes` long), refused ones included.
    pub async fn accept(
        &self,
        verified: Result<VerifiedEnvelope, RelayError>,
        bytes: usize,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        let result = match verified {
            Ok(v) => self.accept_verified(v, client_ip).await,
            Err(e) => Err(e),
        };
        self.account(&result, bytes);
        result
    }

    async fn accept_verified(
        &self,
        verified: VerifiedEnvelope,
        client_ip: IpAddr,
    ) -> Result<Accepted, RelayError> {
        self.count_rate_limited(self.limits.check(verified.sender(), client_ip).await)?;
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
        let limited = self.limits.check(verified.sender(), client_ip).await;
        let result = match self.count_rate_limited(limited) {
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
                // Rate-limit refusals are counted where they are decided. A failed
                // ephemeral publish is a Redis failure like the store's, and has
                // always been counted with them.
                if matches!(
                    e,
                    RelayError::Store(StoreError::Unavailable(_))
                        | RelayError::EphemeralUnpublished(_)
                ) {
                    m.store_errors.inc();
                }
            }
        }
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
            .map_err(|e| RelayError::EphemeralUnpublished(format!("encoding it: {e}")))?;
        crate::notify::publish_ephemeral(link, &recipient, payload)
            .await
            .map_err(|e| RelayError::EphemeralUnpublished(format!("redis: {e}")))
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

    fn count_rate_limited<T>(&self, result: Result<T, RelayError>) -> Result<T, RelayError> {
        result.inspect_err(|e| {
            if let RelayError::RateLimited { scope, .. } = e {
                self.metrics.rate_limited.with_label_values(&[scope]).inc();
            }
        })
    }

    /// Periodic housekeeping: idle rate-limit and bad-signature buckets.
    pub fn prune(&self) {
        self.limits.prune();
        self.signatures.prune(self.clock.now_ms());
    }

    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }
}
