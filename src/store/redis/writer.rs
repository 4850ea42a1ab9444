//! Group commit for inserts: one task takes every insert pending right now and sends them
//! to Redis in one script call (per hash slot on a cluster, where a call may touch one
//! slot only), as database group commit and Kafka's producer batching do.
//!
//! It batches only when it has to: the task waits for the first insert and sends at once
//! with whatever else is already queued, so an idle relay adds no delay; while
//! [`IN_FLIGHT`] calls are out, new inserts queue and leave together in the next one. Each
//! insert still gets its own answer (`stored`, `dup`, `full`, `late`) from its own
//! message's result in the script's reply, and "accepted" is still answered only after
//! Redis has run the call that stored it. A failed call fails every insert in it; none
//! of them was stored (a script runs whole or not at all).

use futures::future::join_all;
use redis::cluster_routing::Slot;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{corrupt, evalsha, key, new_epoch, Inner, PARTS};
use crate::protocol::InboxId;
use crate::store::StoreError;

/// Inserts waiting for the writer at most; a sender past it waits its turn.
pub const QUEUE: usize = 8192;
/// Messages in one script call at most.
pub const MAX_BATCH: usize = 256;
/// Script calls out at once: enough to keep the connection busy while one is in Redis.
pub const IN_FLIGHT: usize = 4;

/// One message to store, with everything the insert script needs.
pub struct Insert {
    pub inbox: InboxId,
    pub keep_ms: u64,
    pub id: String,
    pub forget_at: u64,
    pub now_ms: u64,
    pub expires_at: u64,
    pub cap: usize,
    pub payload: Vec<u8>,
    /// On Redis's clock: a call Redis runs later stores nothing of this message.
    pub deadline: i64,
}

/// The script's five fields for one message: status, epoch, seq, expired, lost.
pub type Answer = Result<Vec<Vec<u8>>, StoreError>;

struct Pending {
    insert: Insert,
    reply: oneshot::Sender<Answer>,
}

/// The handle inserts go through; the task ends when the store (and so this) is dropped.
pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

impl Writer {
    pub fn start(inner: Arc<Inner>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(run(inner, pending));
        Writer { queue }
    }

    /// Stores `insert` with whatever else is pending; its own answer.
    pub async fn insert(&self, insert: Insert) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { insert, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(inner: Arc<Inner>, mut pending: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // What queued while we waited for a permit goes in the same call.
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (inner, work) = (inner.clone(), std::mem::take(&mut batch));
        tokio::spawn(async move {
            commit(&inner, work).await;
            drop(permit);
        });
    }
}

/// One call per hash slot on a cluster (concurrently), one call on a single server.
async fn commit(inner: &Inner, work: Vec<Pending>) {
    if !inner.conn.is_cluster() {
        return commit_one_call(inner, None, work).await;
    }
    let mut by_slot: HashMap<Slot, Vec<Pending>> = HashMap::new();
    for p in work {
        let slot = Slot::for_key(key(&p.insert.inbox, "meta"));
        by_slot.entry(slot).or_default().push(p);
    }
    join_all(
        by_slot
            .into_iter()
            .map(|(slot, group)| commit_one_call(inner, Some(slot), group)),
    )
    .await;
}

async fn commit_one_call(inner: &Inner, place: Option<Slot>, group: Vec<Pending>) {
    let result = inner
        .eval(place, |scripts, lossless| {
            let mut call = evalsha(&scripts.insert, PARTS.len() * group.len());
            for p in &group {
                for part in PARTS {
                    call.arg(key(&p.insert.inbox, part));
                }
            }
            call.arg("").arg(lossless).arg("");
            for Pending { insert: i, .. } in &group {
                call.arg(new_epoch())
                    .arg(i.keep_ms)
                    .arg(&i.id)
                    .arg(i.forget_at)
                    .arg(i.now_ms)
                    .arg(i.expires_at)
                    .arg(i.cap)
                    .arg(&i.payload)
                    .arg(i.deadline);
            }
            call
        })
        .await;
    match result {
        Ok(reply) if reply.len() == 5 * group.len() => {
            for (p, fields) in group.into_iter().zip(reply.chunks(5)) {
                let _ = p.reply.send(Ok(fields.to_vec()));
            }
        }
        Ok(_) => group.into_iter().for_each(|p| {
            let _ = p.reply.send(Err(corrupt("insert batch")));
        }),
        Err(e) => group.into_iter().for_each(|p| {
            let _ = p.reply.send(Err(e.clone()));
        }),
    }
}
