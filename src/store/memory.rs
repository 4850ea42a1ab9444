//! The embedded in-memory store: nothing to install, lost on restart (a restart gives
//! every inbox a new epoch, so reconnecting clients are told of the gap).
//!
//! Inboxes live in a `DashMap`; each inbox's entry lock makes dedupe + cap check +
//! insert atomic for that inbox. Messages are kept in a `VecDeque` in seq order: acks
//! and TTL expiry (one TTL for all) both remove from the front.

use async_trait::async_trait;
use dashmap::DashMap;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::snapshot::{InboxSnapshot, MessageSnapshot, Snapshot};
use super::{
    Batch, HistoryLoss, InsertOutcome, MessageStore, StoreError, StoreEvents, StoreLimits,
    StoredMessage, SweepStats,
};
use crate::protocol::{Cursor, GapReason, InboxId, MessageId, VerifiedEnvelope};

/// Bytes charged per message on top of its body, and per remembered id.
const MESSAGE_OVERHEAD: usize = 256;
const DEDUPE_ENTRY_BYTES: usize = 64;

pub struct MemoryStore {
    inboxes: DashMap<InboxId, Inbox>,
    used_bytes: AtomicUsize,
    /// Messages expired since the last sweep reported them (expiry also happens on
    /// reads and writes, between sweeps).
    expired: AtomicU64,
    limits: StoreLimits,
    /// Where to keep queued messages across a graceful restart, if anywhere.
    snapshot_path: Option<PathBuf>,
    events: StoreEvents,
}

struct Queued {
    message: StoredMessage,
    expires_at_ms: u64,
    bytes: usize,
}

struct Inbox {
    epoch: u64,
    head: u64,
    queue: VecDeque<Queued>,
    /// Highest seq that left the queue without an ack (expired).
    lost_through: u64,
    /// Highest seq the owner acknowledged: where a reader without a cursor stands.
    acked_through: u64,
    /// Ids accepted recently: id -> forget-after time. `recent_order` lets the sweep
    /// drop them roughly oldest first without scanning the map.
    recent: HashMap<MessageId, u64>,
    recent_order: VecDeque<(u64, MessageId)>,
    touched_ms: u64,
}

impl Inbox {
    fn new(now_ms: u64) -> Self {
        Inbox {
            epoch: new_epoch(),
            head: 0,
            queue: VecDeque::new(),
            lost_through: 0,
            acked_through: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            touched_ms: now_ms,
        }
    }

    /// Drops expired messages from the front; returns (count, bytes freed).
    fn expire(&mut self, now_ms: u64) -> (u64, usize) {
        let (mut n, mut bytes) = (0, 0);
        while let Some(front) = self.queue.front() {
            if front.expires_at_ms > now_ms {
                break;
            }
            self.lost_through = self.lost_through.max(front.message.seq);
            bytes += front.bytes;
            n += 1;
            self.queue.pop_front();
        }
        (n, bytes)
    }

    fn forget_ids(&mut self, now_ms: u64) -> usize {
        let mut freed = 0;
        while let Some(&(at, id)) = self.recent_order.front() {
            if at > now_ms {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&id) == Some(&at) {
                self.recent.remove(&id);
            }
            freed += DEDUPE_ENTRY_BYTES;
        }
        freed
    }

    /// A reader without a cursor stands where the owner last acknowledged, so an
    /// expiry after that point is reported to it too.
    fn gap_for(&self, after: Option<Cursor>) -> Option<GapReason> {
        let seen_through = match after {
            Some(c) if c.epoch != self.epoch => return Some(GapReason::EpochChanged),
            Some(c) => c.seq,
            None => self.acked_through,
        };
        (self.lost_through > seen_through).then_some(GapReason::Expired)
    }
}

impl Inbox {
    fn save(&self, inbox: InboxId) -> InboxSnapshot {
        InboxSnapshot {
            key: *inbox.key(),
            whispr_v1: inbox.is_whispr_v1(),
            epoch: self.epoch,
            head: self.head,
            lost_through: self.lost_through,
            acked_through: self.acked_through,
            touched_ms: self.touched_ms,
            messages: self
                .queue
                .iter()
                .map(|q| MessageSnapshot {
                    seq: q.message.seq,
                    stored_at_ms: q.message.stored_at_ms,
                    expires_at_ms: q.expires_at_ms,
                    envelope: (*q.message.envelope).clone(),
                })
                .collect(),
            recent: self.recent_order.iter().map(|&(at, id)| (id, at)).collect(),
        }
    }

    fn restore(saved: InboxSnapshot) -> (InboxId, Inbox) {
        let id = saved.inbox();
        let queue = saved
            .messages
            .into_iter()
            .map(|m| Queued {
                bytes: m.envelope.body.len() + MESSAGE_OVERHEAD,
                expires_at_ms: m.expires_at_ms,
                message: StoredMessage {
                    seq: m.seq,
                    id: m.envelope.id(),
                    envelope: Arc::new(m.envelope),
                    stored_at_ms: m.stored_at_ms,
                },
            })
            .collect();
        let recent_order: VecDeque<(u64, MessageId)> =
            saved.recent.iter().map(|&(id, at)| (at, id)).collect();
        let inbox = Inbox {
            epoch: saved.epoch,
            head: saved.head,
            queue,
            lost_through: saved.lost_through,
            acked_through: saved.acked_through,
            recent: saved.recent.into_iter().collect(),
            recent_order,
            touched_ms: saved.touched_ms,
        };
        (id, inbox)
    }
}

/// Epochs are random in [1, 2^53) so they survive JSON numbers in every language.
fn new_epoch() -> u64 {
    rand::thread_rng().gen_range(1..(1u64 << 53))
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Arc<Self> {
        Arc::new(Self::empty(limits, None))
    }

    fn empty(limits: StoreLimits, snapshot_path: Option<PathBuf>) -> Self {
        MemoryStore {
            inboxes: DashMap::new(),
            used_bytes: AtomicUsize::new(0),
            expired: AtomicU64::new(0),
            limits,
            snapshot_path,
            events: StoreEvents::default(),
        }
    }

    /// A store that restores the snapshot at `path` (if one is there, then deletes it)
    /// and writes a new one at graceful shutdown.
    pub fn open(limits: StoreLimits, path: PathBuf) -> Result<Arc<Self>, StoreError> {
        let snapshot = Snapshot::take(&path)?;
        let store = Self::empty(limits, Some(path));
        if let Some(snapshot) = snapshot {
            let (mut messages, mut bytes) = (0, 0);
            for saved in snapshot.inboxes {
                let (key, inbox) = Inbox::restore(saved);
                messages += inbox.queue.len();
                bytes += inbox.queue.iter().map(|q| q.bytes).sum::<usize>()
                    + inbox.recent.len() * DEDUPE_ENTRY_BYTES;
                store.inboxes.insert(key, inbox);
            }
            store.used_bytes.store(bytes, Ordering::Release);
            tracing::info!(
                inboxes = store.inboxes.len(),
                messages,
                "restored the memory store snapshot"
            );
        }
        Ok(Arc::new(store))
    }

    fn reserve(&self, bytes: usize) -> Result<(), StoreError> {
        let budget = self.limits.max_store_bytes;
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= budget).then_some(used + bytes)
            })
            .map(|_| ())
            .map_err(|_| {
                self.events.full();
                StoreError::StoreFull { budget }
            })
    }

    /// Expires an inbox's front, freeing its bytes and counting the messages.
    fn expire(&self, inbox: &mut Inbox, now_ms: u64) {
        let (n, bytes) = inbox.expire(now_ms);
        self.release(bytes);
        self.expired.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Inboxes the sweep handles between two yields to the runtime.
const SWEEP_CHUNK: usize = 256;

#[async_trait]
impl MessageStore for MemoryStore {
    async fn insert(
        &self,
        message: &VerifiedEnvelope,
        now_ms: u64,
    ) -> Result<InsertOutcome, StoreError> {
        let mut inbox = self
            .inboxes
            .entry(message.inbox())
            .or_insert_with(|| Inbox::new(now_ms));
        let id = message.id();
        if inbox.recent.contains_key(&id) {
            return Ok(InsertOutcome::Duplicate);
        }
        self.expire(&mut inbox, now_ms);
        if inbox.queue.len() >= self.limits.max_messages_per_inbox {
            return Err(StoreError::InboxFull {
                cap: self.limits.max_messages_per_inbox,
            });
        }
        let bytes = message.envelope().body.len() + MESSAGE_OVERHEAD;
        self.reserve(bytes + DEDUPE_ENTRY_BYTES)?;

        inbox.head += 1;
        let seq = inbox.head;
        let forget_at = message.envelope().timestamp.max(now_ms) + self.limits.dedupe_window_ms;
        inbox.recent.insert(id, forget_at);
        inbox.recent_order.push_back((forget_at, id));
        inbox.queue.push_back(Queued {
            message: StoredMessage {
                seq,
                id,
                envelope: Arc::new(message.envelope().clone()),
                stored_at_ms: now_ms,
            },
            expires_at_ms: now_ms + self.limits.message_ttl_ms,
            bytes,
        });
        inbox.touched_ms = now_ms;
        Ok(InsertOutcome::Stored {
            epoch: inbox.epoch,
            seq,
        })
    }

    async fn fetch(
        &self,
        inbox_key: &InboxId,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        // A reader creates the inbox too, so its epoch is fixed from the first contact
        // and a later message cannot silently start a different epoch.
        let mut inbox = self
            .inboxes
            .entry(*inbox_key)
            .or_insert_with(|| Inbox::new(now_ms));
        self.expire(&mut inbox, now_ms);
        inbox.touched_ms = now_ms;
        if after.is_some_and(|c| c.epoch == inbox.epoch && c.seq > inbox.head) {
            // The reader saw seqs this inbox never assigned: history was lost (an older
            // snapshot, say). A new epoch makes the reader start over from what is kept.
            inbox.epoch = new_epoch();
            self.events
                .history_lost(inbox_key, HistoryLoss::CursorAhead);
        }
        let gap = inbox.gap_for(after);
        // Everything queued is above both the last ack and the last expiry; a cursor of
        // this epoch may stand higher still.
        let floor = match after {
            Some(c) if c.epoch == inbox.epoch => c.seq.max(inbox.lost_through),
            _ => inbox.acked_through.max(inbox.lost_through),
        };
        let start = inbox.queue.partition_point(|q| q.message.seq <= floor);
        let messages = inbox
            .queue
            .range(start..)
            .take(limit)
            .map(|q| q.message.clone())
            .collect();
        Ok(Batch {
            epoch: inbox.epoch,
            gap,
            floor,
            messages,
            head: inbox.head,
        })
    }

    async fn ack(&self, inbox_key: &InboxId, through: Cursor) -> Result<u64, StoreError> {
        let Some(mut inbox) = self.inboxes.get_mut(inbox_key) else {
            return Ok(0);
        };
        if through.epoch != inbox.epoch {
            return Ok(0);
        }
        if through.seq > inbox.head {
            // Acknowledging seqs never assigned: history was lost. Delete nothing, and
            // move to a new epoch so the reader's next read reports the gap.
            inbox.epoch = new_epoch();
            self.events
                .history_lost(inbox_key, HistoryLoss::CursorAhead);
            return Ok(0);
        }
        inbox.acked_through = inbox.acked_through.max(through.seq);
        let (mut n, mut freed) = (0, 0);
        while inbox
            .queue
            .front()
            .is_some_and(|q| q.message.seq <= through.seq)
        {
            if let Some(q) = inbox.queue.pop_front() {
                freed += q.bytes;
                n += 1;
            }
        }
        self.release(freed);
        Ok(n)
    }

    async fn sweep(&self, now_ms: u64) -> Result<SweepStats, StoreError> {
        let mut stats = SweepStats::default();
        let mut expired = 0;
        let idle_after = self.limits.message_ttl_ms.max(self.limits.dedupe_window_ms);
        // In chunks, yielding to the runtime between them: the sweep runs on a runtime
        // thread, and one pass over every inbox held each shard of the map, and that
        // thread, for the whole pass (with 10,000 inboxes, every second). An inbox
        // created during the pass waits for the next one.
        let keys: Vec<InboxId> = self.inboxes.iter().map(|e| *e.key()).collect();
        for chunk in keys.chunks(SWEEP_CHUNK) {
            let mut freed = 0;
            for key in chunk {
                let dropped = self.inboxes.remove_if_mut(key, |_, inbox| {
                    let (n, bytes) = inbox.expire(now_ms);
                    expired += n;
                    freed += bytes + inbox.forget_ids(now_ms);
                    inbox.queue.is_empty()
                        && inbox.recent.is_empty()
                        && now_ms.saturating_sub(inbox.touched_ms) > idle_after
                });
                if dropped.is_some() {
                    stats.inboxes_dropped += 1;
                }
            }
            self.release(freed);
            tokio::task::yield_now().await;
        }
        stats.expired = self.expired.swap(0, Ordering::Relaxed) + expired;
        Ok(stats)
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        Ok(self.inboxes.iter().map(|i| i.queue.len() as u64).sum())
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        let Some(path) = &self.snapshot_path else {
            return Ok(());
        };
        let inboxes: Vec<InboxSnapshot> = self
            .inboxes
            .iter()
            .map(|e| e.value().save(*e.key()))
            .collect();
        let messages: usize = inboxes.iter().map(|i| i.messages.len()).sum();
        Snapshot::new(inboxes).write(path)?;
        tracing::info!(path = %path.display(), messages, "wrote the memory store snapshot");
        Ok(())
    }

    fn events(&self) -> &StoreEvents {
        &self.events
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_conformance() {
        super::super::conformance::run_all(|limits| async move {
            MemoryStore::new(limits) as crate::store::SharedStore
        })
        .await;
    }

    #[tokio::test]
    async fn a_sweep_in_chunks_expires_every_inbox_and_drops_the_idle_ones() {
        use crate::protocol::Identity;
        use crate::store::conformance::{envelope, LIMITS};
        let store = MemoryStore::new(LIMITS);
        let (alice, now) = (Identity::generate(), 1_800_000_000_000);
        // More inboxes than one chunk holds, so the sweep yields several times.
        let inboxes = 3 * SWEEP_CHUNK + 7;
        for n in 0..inboxes {
            let bob = Identity::generate();
            store
                .insert(&envelope(&alice, bob.public_key(), n as u32, now), now)
                .await
                .unwrap();
        }
        let expired_at = now + LIMITS.message_ttl_ms;
        let stats = store.sweep(expired_at).await.unwrap();
        assert_eq!(stats.expired, inboxes as u64);
        assert_eq!(stats.inboxes_dropped, 0, "their ids are still remembered");
        assert_eq!(store.depth().await.unwrap(), 0);
        let idle = now + LIMITS.message_ttl_ms.max(LIMITS.dedupe_window_ms) + 1;
        let stats = store.sweep(idle).await.unwrap();
        assert_eq!(stats.inboxes_dropped, inboxes as u64);
        assert!(store.inboxes.is_empty());
    }
}
