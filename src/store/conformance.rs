//! The behaviour every `MessageStore` must show, as one suite run against each backend
//! (the memory store's unit tests; the Redis store's integration tests).

use std::future::Future;

use super::{InsertOutcome, SharedStore, StoreError, StoreLimits};
use crate::protocol::{
    Cursor, Envelope, GapReason, Identity, InboxId, PublicKey, VerifiedEnvelope,
};

/// Limits used by the suite: small enough to hit the cap.
pub const LIMITS: StoreLimits = StoreLimits {
    max_messages_per_inbox: 5,
    message_ttl_ms: 60_000,
    dedupe_window_ms: 300_000,
    max_store_bytes: 64 << 20,
};

const NOW: u64 = 1_800_000_000_000;

/// A verified envelope from `sender` to `recipient` with a distinct body.
pub fn envelope(sender: &Identity, recipient: PublicKey, n: u32, now_ms: u64) -> VerifiedEnvelope {
    Envelope::seal(
        sender,
        recipient,
        now_ms,
        false,
        format!("body {n}").into_bytes(),
    )
    .verify(now_ms, 1_000)
    .expect("freshly sealed envelope verifies")
}

/// Runs every conformance check, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(StoreLimits) -> Fut,
    Fut: Future<Output = SharedStore>,
{
    sequences_and_replay(make(LIMITS).await).await;
    idempotent_insert(make(LIMITS).await).await;
    ack_deletes_through_cursor(make(LIMITS).await).await;
    cursor_ahead_is_lost_history(make(LIMITS).await).await;
    ttl_expiry_is_a_gap(make(LIMITS).await).await;
    stale_epoch_is_a_gap(make(LIMITS).await).await;
    inbox_cap_refuses(make(LIMITS).await).await;
    inboxes_are_independent(make(LIMITS).await).await;
    namespaces_are_apart(make(LIMITS).await).await;
    ack_and_fetch_is_ack_then_fetch(make(LIMITS).await).await;
}

async fn ack_and_fetch_is_ack_then_fetch(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let inbox = InboxId::Native(bob.public_key());
    for n in 1..=4 {
        store
            .insert(&envelope(&alice, bob.public_key(), n, NOW), NOW)
            .await
            .unwrap();
    }
    let epoch = store.fetch(&inbox, None, 2, NOW).await.unwrap().epoch;
    let at = Cursor { epoch, seq: 2 };
    let batch = store
        .ack_and_fetch(&inbox, at, Some(at), 10, NOW)
        .await
        .unwrap();
    assert_eq!(batch.epoch, epoch);
    assert_eq!(batch.gap, None);
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(store.depth().await.unwrap(), 2, "1 and 2 are gone");
    // An ack of another epoch deletes nothing and the read goes on.
    let stale = Cursor {
        epoch: epoch ^ 1,
        seq: 4,
    };
    let batch = store
        .ack_and_fetch(&inbox, stale, None, 10, NOW)
        .await
        .unwrap();
    assert_eq!(batch.messages.len(), 2);
    // An ack past the head is lost history: a new epoch, everything handed out again.
    let ahead = Cursor { epoch, seq: 9 };
    let batch = store
        .ack_and_fetch(&inbox, ahead, Some(at), 10, NOW)
        .await
        .unwrap();
    assert_ne!(batch.epoch, epoch);
    assert_eq!(batch.gap, Some(GapReason::EpochChanged));
    assert_eq!(batch.messages.len(), 2);
}

/// A native envelope addressed to a Whispr v1 inbox's derived key lands in the native
/// inbox of those bytes; the v1 inbox stays empty (its keys are elsewhere).
async fn namespaces_are_apart(store: SharedStore) {
    let (alice, to) = (Identity::generate(), Identity::generate().public_key());
    let v1 = InboxId::whispr_v1(&to);
    let forged = envelope(&alice, *v1.key(), 1, NOW);
    assert_eq!(forged.inbox(), InboxId::Native(*v1.key()));
    store.insert(&forged, NOW).await.unwrap();
    let in_v1 = store.fetch(&v1, None, 10, NOW).await.unwrap();
    assert!(in_v1.messages.is_empty(), "{:?}", in_v1.messages);
    let native = store
        .fetch(&InboxId::Native(*v1.key()), None, 10, NOW)
        .await
        .unwrap();
    assert_eq!(native.messages.len(), 1);
    // Acknowledging the v1 inbox cannot delete from the native one either.
    store
        .ack(
            &v1,
            Cursor {
                epoch: native.epoch,
                seq: 1,
            },
        )
        .await
        .unwrap();
    let native = store
        .fetch(&InboxId::Native(*v1.key()), None, 10, NOW)
        .await
        .unwrap();
    assert_eq!(native.messages.len(), 1);
}

async fn sequences_and_replay(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let mut epoch = None;
    for n in 1..=4u32 {
        let out = store
            .insert(&envelope(&alice, bob.public_key(), n, NOW), NOW)
            .await
            .unwrap();
        let InsertOutcome::Stored { epoch: e, seq } = out else {
            panic!("first insert must store, got {out:?}");
        };
        assert_eq!(seq, u64::from(n), "seqs start at 1 and increase by one");
        assert_eq!(*epoch.get_or_insert(e), e, "epoch is stable");
    }
    let epoch = epoch.unwrap();
    let all = store
        .fetch(&bob.public_key().into(), None, 100, NOW)
        .await
        .unwrap();
    assert_eq!(all.epoch, epoch);
    assert_eq!(all.head, 4);
    assert_eq!(all.gap, None);
    let seqs: Vec<u64> = all.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(all.messages[2].envelope.body, b"body 3");
    assert_eq!(all.messages[2].id, all.messages[2].envelope.id());

    let after = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 2 }),
            1,
            NOW,
        )
        .await
        .unwrap();
    let seqs: Vec<u64> = after.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![3], "after seq 2, limited to 1");
    assert_eq!(after.gap, None);
}

async fn idempotent_insert(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let env = envelope(&alice, bob.public_key(), 1, NOW);
    let first = store.insert(&env, NOW).await.unwrap();
    assert!(matches!(first, InsertOutcome::Stored { seq: 1, .. }));
    assert_eq!(
        store.insert(&env, NOW).await.unwrap(),
        InsertOutcome::Duplicate
    );
    let InsertOutcome::Stored { epoch, .. } = first else {
        unreachable!()
    };
    store
        .ack(&bob.public_key().into(), Cursor { epoch, seq: 1 })
        .await
        .unwrap();
    assert_eq!(
        store.insert(&env, NOW + 1_000).await.unwrap(),
        InsertOutcome::Duplicate,
        "an acked id is still remembered inside the dedupe window"
    );
    let batch = store
        .fetch(&bob.public_key().into(), None, 10, NOW + 1_000)
        .await
        .unwrap();
    assert!(
        batch.messages.is_empty(),
        "a duplicate is never queued again"
    );
    assert_eq!(batch.head, 1);
}

async fn ack_deletes_through_cursor(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    for n in 1..=3 {
        store
            .insert(&envelope(&alice, bob.public_key(), n, NOW), NOW)
            .await
            .unwrap();
    }
    let epoch = store
        .fetch(&bob.public_key().into(), None, 10, NOW)
        .await
        .unwrap()
        .epoch;
    assert_eq!(
        store
            .ack(
                &bob.public_key().into(),
                Cursor {
                    epoch: epoch ^ 1,
                    seq: 3
                }
            )
            .await
            .unwrap(),
        0,
        "an ack from another epoch deletes nothing"
    );
    assert_eq!(
        store
            .ack(&bob.public_key().into(), Cursor { epoch, seq: 2 })
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .ack(&bob.public_key().into(), Cursor { epoch, seq: 2 })
            .await
            .unwrap(),
        0,
        "acks are idempotent"
    );
    let left = store
        .fetch(&bob.public_key().into(), None, 10, NOW)
        .await
        .unwrap();
    assert_eq!(
        left.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(store.depth().await.unwrap(), 1);
}

/// A reader's cursor past the head of its own epoch proves the store lost history (a
/// Redis restored from an older snapshot, say): nothing is deleted or skipped, the inbox
/// moves to a new epoch, and readers are told and handed everything still stored.
async fn cursor_ahead_is_lost_history(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    for n in 1..=3 {
        store
            .insert(&envelope(&alice, bob.public_key(), n, NOW), NOW)
            .await
            .unwrap();
    }
    let epoch = store
        .fetch(&bob.public_key().into(), None, 10, NOW)
        .await
        .unwrap()
        .epoch;
    assert_eq!(
        store
            .ack(&bob.public_key().into(), Cursor { epoch, seq: 9 })
            .await,
        Ok(0),
        "an ack past the head deletes nothing"
    );
    let lost = super::HistoryLoss::CursorAhead;
    assert_eq!(store.events().history_lost_total(lost), 1);
    let after_ack = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 3 }),
            10,
            NOW,
        )
        .await
        .unwrap();
    assert_ne!(after_ack.epoch, epoch, "the inbox moved to a new epoch");
    assert_eq!(after_ack.gap, Some(GapReason::EpochChanged));
    assert_eq!(
        after_ack.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "every stored message is handed out again under the new epoch"
    );

    // The same witness in a read: a cursor past the head.
    let renewed = after_ack.epoch;
    let read = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor {
                epoch: renewed,
                seq: 7,
            }),
            10,
            NOW,
        )
        .await
        .unwrap();
    assert_ne!(read.epoch, renewed);
    assert_eq!(read.gap, Some(GapReason::EpochChanged));
    assert_eq!(read.messages.len(), 3);
    assert_eq!(store.events().history_lost_total(lost), 2);
    let next = store
        .insert(&envelope(&alice, bob.public_key(), 4, NOW), NOW)
        .await
        .unwrap();
    assert_eq!(
        next,
        InsertOutcome::Stored {
            epoch: read.epoch,
            seq: 4
        },
        "seqs go on from the head under the new epoch"
    );
}

async fn ttl_expiry_is_a_gap(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let first = store
        .insert(&envelope(&alice, bob.public_key(), 1, NOW), NOW)
        .await
        .unwrap();
    let InsertOutcome::Stored { epoch, .. } = first else {
        panic!("stored")
    };
    let later = NOW + LIMITS.message_ttl_ms / 2;
    store
        .insert(&envelope(&alice, bob.public_key(), 2, later), later)
        .await
        .unwrap();

    let after_first_ttl = NOW + LIMITS.message_ttl_ms + 1;
    let stats = store.sweep(after_first_ttl).await.unwrap();
    assert_eq!(stats.expired, 1);
    let batch = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 0 }),
            10,
            after_first_ttl,
        )
        .await
        .unwrap();
    assert_eq!(
        batch.gap,
        Some(GapReason::Expired),
        "an expired message after the cursor is reported"
    );
    assert_eq!(batch.floor, 1, "the reader steps over the expired seq");
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2]
    );
    let past_it = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 1 }),
            10,
            after_first_ttl,
        )
        .await
        .unwrap();
    assert_eq!(
        past_it.gap, None,
        "a cursor past the expired message sees no gap"
    );
    let no_cursor = store
        .fetch(&bob.public_key().into(), None, 10, after_first_ttl)
        .await
        .unwrap();
    assert_eq!(
        no_cursor.gap,
        Some(GapReason::Expired),
        "a reader without a cursor stands at the last ack"
    );
    store
        .ack(&bob.public_key().into(), Cursor { epoch, seq: 1 })
        .await
        .unwrap();
    let acked = store
        .fetch(&bob.public_key().into(), None, 10, after_first_ttl)
        .await
        .unwrap();
    assert_eq!(acked.gap, None, "once acked past the loss, no gap");
    assert_eq!(acked.messages.len(), 1);

    let all_gone = later + LIMITS.message_ttl_ms + 1;
    let batch = store
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 1 }),
            10,
            all_gone,
        )
        .await
        .unwrap();
    assert_eq!(
        batch.gap,
        Some(GapReason::Expired),
        "expiry is found on read even before a sweep"
    );
    assert!(batch.messages.is_empty());
}

async fn stale_epoch_is_a_gap(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    store
        .insert(&envelope(&alice, bob.public_key(), 1, NOW), NOW)
        .await
        .unwrap();
    let epoch = store
        .fetch(&bob.public_key().into(), None, 10, NOW)
        .await
        .unwrap()
        .epoch;
    let stale = Cursor {
        epoch: epoch ^ 1,
        seq: 7,
    };
    let batch = store
        .fetch(&bob.public_key().into(), Some(stale), 10, NOW)
        .await
        .unwrap();
    assert_eq!(batch.gap, Some(GapReason::EpochChanged));
    assert_eq!(
        batch.messages.len(),
        1,
        "after an epoch change everything queued is replayed"
    );
}

async fn inbox_cap_refuses(store: SharedStore) {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let cap = LIMITS.max_messages_per_inbox as u32;
    for n in 1..=cap {
        store
            .insert(&envelope(&alice, bob.public_key(), n, NOW), NOW)
            .await
            .unwrap();
    }
    let over = store
        .insert(&envelope(&alice, bob.public_key(), cap + 1, NOW), NOW)
        .await;
    assert_eq!(over, Err(StoreError::InboxFull { cap: cap as usize }));
    let batch = store
        .fetch(&bob.public_key().into(), None, 100, NOW)
        .await
        .unwrap();
    assert_eq!(
        batch.messages.len(),
        cap as usize,
        "nothing was dropped to make room"
    );
    assert_eq!(batch.messages[0].seq, 1);
    store
        .ack(
            &bob.public_key().into(),
            Cursor {
                epoch: batch.epoch,
                seq: 1,
            },
        )
        .await
        .unwrap();
    let retry = store
        .insert(&envelope(&alice, bob.public_key(), cap + 1, NOW), NOW)
        .await
        .unwrap();
    assert!(
        matches!(retry, InsertOutcome::Stored { .. }),
        "room again after an ack"
    );
}

async fn inboxes_are_independent(store: SharedStore) {
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    store
        .insert(&envelope(&alice, bob.public_key(), 1, NOW), NOW)
        .await
        .unwrap();
    store
        .insert(&envelope(&alice, carol.public_key(), 2, NOW), NOW)
        .await
        .unwrap();
    let b = store
        .fetch(&bob.public_key().into(), None, 10, NOW)
        .await
        .unwrap();
    let c = store
        .fetch(&carol.public_key().into(), None, 10, NOW)
        .await
        .unwrap();
    assert_eq!(b.messages.len(), 1);
    assert_eq!(c.messages.len(), 1);
    assert_eq!(b.messages[0].envelope.body, b"body 1");
    assert_eq!(c.messages[0].envelope.body, b"body 2");
    store
        .ack(
            &bob.public_key().into(),
            Cursor {
                epoch: b.epoch,
                seq: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .fetch(&carol.public_key().into(), None, 10, NOW)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
}
