//! Queued messages: the `MessageStore` trait, its implementations, and the conformance
//! suite every implementation must pass.
//!
//! The store is the single source of truth for delivery. The relay inserts verified
//! envelopes; sessions and pollers read after a cursor and delete by acknowledging.
//! Ephemeral envelopes never reach the store.

pub mod conformance;
pub(crate) mod limits;
mod memory;
mod redis;
mod snapshot;

use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::protocol::{Cursor, Envelope, GapReason, InboxId, MessageId, VerifiedEnvelope};

pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

/// A queued message as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: MessageId,
    pub envelope: Arc<Envelope>,
    /// When the relay stored it (Unix ms), for queue-age metrics.
    pub stored_at_ms: u64,
}

/// What `insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Newly queued with this cursor position.
    Stored { epoch: u64, seq: u64 },
    /// The same envelope (same id) was accepted before; nothing changed.
    Duplicate,
}

/// The answer to a read after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The inbox's current epoch.
    pub epoch: u64,
    /// Set when messages after the reader's cursor are gone without having been acked.
    pub gap: Option<GapReason>,
    /// Where the reader stands after this read: every seq at or below it was acked,
    /// expired, or at/before the reader's cursor. After a gap the reader moves here;
    /// every returned message is above it.
    pub floor: u64,
    /// Queued messages after the cursor, in seq order, at most `limit`.
    pub messages: Vec<StoredMessage>,
    /// The highest seq ever assigned in this epoch (0 if none): where the backlog ends.
    pub head: u64,
}

/// Limits a store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_messages_per_inbox: usize,
    pub message_ttl_ms: u64,
    /// How long an id is remembered for dedupe after its envelope's timestamp; must be at
    /// least the clock-skew window, after which the relay refuses the envelope anyway.
    pub dedupe_window_ms: u64,
    /// Memory store only: total bytes of queued messages and dedupe entries.
    pub max_store_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the recipient's inbox holds {cap} messages, its limit; retry after the recipient catches up")]
    InboxFull { cap: usize },
    #[error("the relay's message store is at its byte budget of {budget} bytes")]
    StoreFull { budget: usize },
    /// Redis refused a write because it reached its `maxmemory`: the operator's budget,
    /// freed as recipients read and messages expire.
    #[error("the relay's Redis is full (it reached its maxmemory): new messages are refused until recipients read theirs or they expire")]
    RedisFull,
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    /// The store's backend is set up in a way that would lose messages silently (an
    /// evicting Redis): the relay refuses to start, or refuses writes until it is fixed.
    #[error("message store misconfigured: {0}")]
    Misconfigured(String),
    #[error("memory store snapshot: {0}")]
    Snapshot(String),
}

/// Why a store found that an inbox's history may be incomplete. Each one moves the inbox
/// to a new epoch, so every reader is told (`gap epoch_changed`) instead of skipping or
/// deleting what it never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryLoss {
    /// A reader's cursor (or ack) stood past the inbox's head in the same epoch: the
    /// store lost messages that reader had already been handed.
    CursorAhead,
    /// The inbox was last written by an earlier Redis process whose persistence was not
    /// verified as lossless: a crash, restore or failover may have lost its last writes.
    RedisRestarted,
    /// The inbox's metadata was gone while messages remained (evicted).
    MetadataMissing,
    /// Messages or their order were gone from an inbox that still had metadata (evicted).
    Evicted,
    /// A relay of an earlier store schema wrote to an inbox this schema had written:
    /// its readers did not see every message, and their acks may have passed some.
    MixedVersions,
}

impl HistoryLoss {
    pub const ALL: [HistoryLoss; 5] = [
        HistoryLoss::CursorAhead,
        HistoryLoss::RedisRestarted,
        HistoryLoss::MetadataMissing,
        HistoryLoss::Evicted,
        HistoryLoss::MixedVersions,
    ];

    /// The metric label, and the word the Redis scripts return.
    pub fn label(self) -> &'static str {
        match self {
            HistoryLoss::CursorAhead => "cursor_ahead",
            HistoryLoss::RedisRestarted => "redis_restarted",
            HistoryLoss::MetadataMissing => "metadata_missing",
            HistoryLoss::Evicted => "evicted",
            HistoryLoss::MixedVersions => "mixed_versions",
        }
    }

    pub fn from_label(label: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.label().as_bytes() == label)
    }
}

/// What a store noticed about itself, counted for `/metrics` (read at scrape time).
#[derive(Debug, Default)]
pub struct StoreEvents {
    history_lost: [AtomicU64; HistoryLoss::ALL.len()],
    full: AtomicU64,
}

impl StoreEvents {
    /// Counts and logs (WARN, with the inbox's short id) an inbox moved to a new epoch.
    pub fn history_lost(&self, inbox: &InboxId, reason: HistoryLoss) {
        self.history_lost[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            inbox = %inbox,
            reason = reason.label(),
            "inbox history may be incomplete; the inbox moved to a new epoch and its readers are told (gap epoch_changed)"
        );
    }

    /// Counts a write refused because the backend is full.
    pub fn full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    pub fn history_lost_total(&self, reason: HistoryLoss) -> u64 {
        self.history_lost[reason as usize].load(Ordering::Relaxed)
    }

    pub fn full_total(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }
}

/// What a periodic sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Messages expired since the previous sweep, found by this sweep or by reads and
    /// writes in between.
    pub expired: u64,
    pub inboxes_dropped: u64,
}

/// Where messages wait for their recipient. Implementations must pass
/// [`conformance::run_all`].
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Queues a verified, non-ephemeral envelope in its inbox (`message.inbox()`: native
    /// and Whispr v1 inboxes never share storage). Idempotent by message id.
    async fn insert(
        &self,
        message: &VerifiedEnvelope,
        now_ms: u64,
    ) -> Result<InsertOutcome, StoreError>;

    /// Reads up to `limit` messages after `after` (everything queued when `None`),
    /// reporting a gap when the cursor's epoch is stale or messages after it expired.
    /// A cursor past the head of the current epoch proves lost history: the inbox moves
    /// to a new epoch and the read answers `EpochChanged` with every message still
    /// stored.
    async fn fetch(
        &self,
        inbox: &InboxId,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError>;

    /// Deletes every message with seq `<= through.seq`, if `through.epoch` is current.
    /// Returns how many were deleted. Acking past the head of the current epoch deletes
    /// nothing: it proves the store lost history, so the inbox moves to a new epoch
    /// ([`HistoryLoss::CursorAhead`]) and its next read reports the gap.
    async fn ack(&self, inbox: &InboxId, through: Cursor) -> Result<u64, StoreError>;

    /// Acknowledges through `through`, then reads like [`MessageStore::fetch`]: what a
    /// session does after an `ack`, in one round trip where the store has round trips.
    /// A failed acknowledgement only means the messages are delivered again later.
    async fn ack_and_fetch(
        &self,
        inbox: &InboxId,
        through: Cursor,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        self.ack(inbox, through).await?;
        self.fetch(inbox, after, limit, now_ms).await
    }

    /// Expires messages past their TTL and forgets idle empty inboxes.
    async fn sweep(&self, now_ms: u64) -> Result<SweepStats, StoreError>;

    /// Readiness: `Ok` when the store can serve reads and writes.
    async fn check(&self) -> Result<(), StoreError>;

    /// Number of queued messages across all inboxes (for metrics).
    async fn depth(&self) -> Result<u64, StoreError>;

    /// Called once at graceful shutdown, after every session has closed.
    async fn shutdown(&self) -> Result<(), StoreError>;

    /// What the store noticed about itself (history losses, refusals when full).
    fn events(&self) -> &StoreEvents;

    /// The store's name as operators see it: `memory`, `redis` or `redis-cluster`.
    fn kind(&self) -> &'static str;
}

/// A shared store handle.
pub type SharedStore = Arc<dyn MessageStore>;
