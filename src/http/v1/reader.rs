//! What v1 readers have been handed. v1 has no cursor a reader owns: the Python client
//! relies on the server forgetting what it returned (fetch-and-delete). Here a v1 read
//! hands out messages and *then* acknowledges them in the store, in the v1 namespace
//! only: a poll acknowledges what its answer contains, a socket what it has written
//! (a failed write leaves the message queued). Because `since` may skip messages in the
//! middle of the queue, handed-out seqs above the acknowledged prefix are remembered
//! here until the prefix reaches them; the store's acknowledgement stays a prefix.
//!
//! One async lock per inbox makes "read, hand out, acknowledge" atomic among v1
//! readers, so two readers never get the same message. No DashMap entry is held across
//! an await: the lock is cloned out first.

use dashmap::DashMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::protocol::whispr_v1::{inbox_key, StoredV1};
use crate::protocol::{Cursor, InboxId, PublicKey};
use crate::relay::Relay;
use crate::store::StoreError;

/// Handed-out bookkeeping of every v1 inbox being read right now or with gaps.
#[derive(Default)]
pub struct Readers {
    inboxes: DashMap<PublicKey, Arc<Mutex<Handed>>>,
}

#[derive(Default)]
struct Handed {
    epoch: u64,
    /// Handed-out seqs above the store's acknowledged prefix.
    seqs: BTreeSet<u64>,
}

/// One read of a v1 inbox, holding its lock until [`Pending::finish`].
pub struct Pending<'a> {
    readers: &'a Readers,
    relay: &'a Relay,
    inbox: PublicKey,
    guard: OwnedMutexGuard<Handed>,
    floor: u64,
    /// Queued messages in seq order; `None` for anything that is not a valid v1 message.
    queued: Vec<(u64, Option<StoredV1>)>,
}

impl Readers {
    /// Locks `to`'s v1 inbox and reads what is queued (at most `limit`).
    pub async fn open<'a>(
        &'a self,
        relay: &'a Relay,
        to: &PublicKey,
        limit: usize,
    ) -> Result<Pending<'a>, StoreError> {
        let inbox = inbox_key(to);
        let lock = self.inboxes.entry(inbox).or_default().clone();
        let mut guard = lock.lock_owned().await;
        let batch = relay
            .store()
            .fetch(
                &InboxId::WhisprV1(inbox),
                None,
                limit,
                relay.clock().now_ms(),
            )
            .await?;
        if guard.epoch != batch.epoch {
            guard.epoch = batch.epoch;
            guard.seqs.clear();
        }
        let queued = batch
            .messages
            .iter()
            .map(|m| (m.seq, StoredV1::open(&m.envelope, to)))
            .collect::<Vec<_>>();
        let mut pending = Pending {
            readers: self,
            relay,
            inbox,
            guard,
            floor: batch.floor,
            queued,
        };
        // Whatever is not a v1 message is never shown; it leaves with the prefix.
        let foreign: Vec<u64> = pending
            .queued
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        foreign.into_iter().for_each(|seq| pending.mark(seq));
        Ok(pending)
    }
}

impl Pending<'_> {
    /// Queued v1 messages not handed to any v1 reader yet, in seq order.
    pub fn unhandled(&self) -> Vec<(u64, StoredV1)> {
        self.queued
            .iter()
            .filter(|(seq, _)| !self.guard.seqs.contains(seq))
            .filter_map(|(seq, m)| m.clone().map(|m| (*seq, m)))
            .collect()
    }

    /// Records that `seq` was handed out.
    pub fn mark(&mut self, seq: u64) {
        self.guard.seqs.insert(seq);
    }

    /// Acknowledges the handed-out prefix in the store and releases the inbox.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let mut through = self.floor;
        for (seq, _) in &self.queued {
            if !self.guard.seqs.contains(seq) {
                break;
            }
            through = *seq;
        }
        if through > self.floor {
            let cursor = Cursor {
                epoch: self.guard.epoch,
                seq: through,
            };
            self.relay
                .store()
                .ack(&InboxId::WhisprV1(self.inbox), cursor)
                .await?;
        }
        self.guard.seqs.retain(|s| *s > through);
        let (readers, inbox) = (self.readers, self.inbox);
        drop(self);
        // Forget the inbox's lock when nobody holds it and nothing is remembered.
        readers.inboxes.remove_if(&inbox, |_, lock| {
            Arc::strong_count(lock) == 1 && lock.try_lock().is_ok_and(|h| h.seqs.is_empty())
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::protocol::whispr_v1::SendV1;
    use crate::protocol::Identity;
    use crate::registry::Registry;
    use crate::store::MemoryStore;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    async fn relay_with_three(to: &PublicKey) -> Relay {
        let config = Config::default();
        let store = MemoryStore::new(crate::store::StoreLimits::from_config(&config));
        let relay =
            Relay::builder(store, Arc::new(Registry::new()), Clock::manual()).build(&config);
        let bob = Identity::generate();
        for n in 0..3u8 {
            let message = SendV1 {
                to: to.to_hex(),
                from_: bob.public_key().to_hex(),
                enc_pub: "aa".repeat(32),
                message: STANDARD.encode([n]),
                signature: STANDARD.encode(bob.sign(&[n]).to_bytes()),
                timestamp: Some(1.0),
            };
            let verified = message.verify(relay.clock().now_ms(), 1024).unwrap();
            let ip = std::net::IpAddr::from([127, 0, 0, 1]);
            relay.submit_verified(verified, ip).await.unwrap();
        }
        relay
    }

    async fn unhandled(readers: &Readers, relay: &Relay, to: &PublicKey) -> Vec<u64> {
        let p = readers.open(relay, to, 10).await.unwrap();
        let seqs = p.unhandled().iter().map(|(s, _)| *s).collect();
        p.finish().await.unwrap();
        seqs
    }

    #[tokio::test]
    async fn only_what_was_handed_out_is_acknowledged() {
        let to = PublicKey::from_bytes([9; 32]);
        let relay = relay_with_three(&to).await;
        let readers = Readers::default();
        let seqs = unhandled(&readers, &relay, &to).await;
        assert_eq!(seqs.len(), 3, "opening without marking hands out nothing");

        // A socket wrote the first frame and failed on the second.
        let mut p = readers.open(&relay, &to, 10).await.unwrap();
        p.mark(seqs[0]);
        p.finish().await.unwrap();
        assert_eq!(unhandled(&readers, &relay, &to).await, seqs[1..]);

        // A poll whose `since` skipped the middle message.
        let mut p = readers.open(&relay, &to, 10).await.unwrap();
        p.mark(seqs[2]);
        p.finish().await.unwrap();
        assert_eq!(unhandled(&readers, &relay, &to).await, [seqs[1]]);
        assert_eq!(
            relay.store().depth().await.unwrap(),
            2,
            "the skipped one blocks the prefix"
        );

        let mut p = readers.open(&relay, &to, 10).await.unwrap();
        p.mark(seqs[1]);
        p.finish().await.unwrap();
        assert_eq!(relay.store().depth().await.unwrap(), 0);
        assert!(readers.inboxes.is_empty(), "nothing left to remember");
    }
}
