//! Group commit: one task per kind of operation takes every operation pending right now
//! and sends them to Redis in one script call (per hash slot on a cluster, where a call
//! may touch one slot only), as database group commit and Kafka's producer batching do.
//! The store runs two: one for inserts, and one for reads and acks (the insert script
//! must be refused at `maxmemory` and reads and acks must run exactly then, so they
//! cannot share a script; see `scripts`).
//!
//! It batches only when it has to: the task waits for the first operation and sends at
//! once with whatever else is already queued, so an idle relay adds no delay; while
//! `redis_calls_in_flight` calls are out (one by default), new operations queue and
//! leave together in the next one. One is the classic group commit: the batch grows
//! with the load and the round trip. At a node's max rate it cut script calls per
//! message from 1.36 (four out) to 0.52, and Redis and relay CPU per message by 10–20%
//! (BENCHMARKS.md).
//! Each operation still gets its own answer from its own part of the script's reply
//! (each part is prefixed by its length), and an insert is still answered "accepted"
//! only after Redis has run the call that stored it. A failed call fails every operation
//! in it; none of them happened (a script runs whole or not at all).
//!
//! What one call costs Redis besides its operations' own commands is the script call
//! itself (about 5 µs, BENCHMARKS.md), and the relay a round trip (a request, a reply to
//! parse, a task to wake): group commit pays both once per batch, not once per
//! operation.

use futures::future::join_all;
use redis::cluster_routing::Slot;
use redis::Cmd;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::scripts::{Script, Scripts};
use super::{corrupt, evalsha, key, number, Inner, PARTS};
use crate::protocol::InboxId;
use crate::redis_keys;
use crate::store::StoreError;

/// Operations waiting for a writer at most; a caller past it waits its turn.
pub const QUEUE: usize = 8192;

/// One operation a batched script carries: five keys (its inbox's) and a fixed number of
/// arguments, read by the script from `ARGV[4]` on, in the order given.
pub trait Op: Send + Sync + 'static {
    /// The script every operation of this kind runs in.
    fn script(scripts: &Scripts) -> &Script;
    fn inbox(&self) -> &InboxId;
    /// The operation's arguments (the script's per-operation `ARGV`s).
    fn args(&self, call: &mut Cmd);
    /// Its share of a call's budget ([`Writer::start`]): how many messages it may write
    /// or read, so that one call's work and reply stay bounded.
    fn weight(&self) -> usize;
}

/// One operation's part of the reply.
pub type Answer = Result<Vec<Vec<u8>>, StoreError>;

struct Pending<O> {
    op: O,
    reply: oneshot::Sender<Answer>,
}

/// The handle operations go through; the task ends when the store (and so this) is
/// dropped.
pub struct Writer<O> {
    queue: mpsc::Sender<Pending<O>>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

impl<O: Op> Writer<O> {
    /// A writer whose calls close once their operations' weights reach `budget` (an
    /// operation heavier than that goes alone).
    pub fn start(inner: Arc<Inner>, budget: usize) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(run(inner, pending, budget));
        Writer { queue }
    }

    /// Runs `op` with whatever else is pending; its own answer.
    pub async fn run(&self, op: O) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { op, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run<O: Op>(inner: Arc<Inner>, mut pending: mpsc::Receiver<Pending<O>>, budget: usize) {
    let in_flight = Arc::new(Semaphore::new(inner.options.calls_in_flight));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // What queued while we waited for a permit goes in the same call.
        let mut used = first.op.weight();
        let mut batch = vec![first];
        while used < budget {
            match pending.try_recv() {
                Ok(p) => {
                    used += p.op.weight();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            commit(&inner, batch).await;
            drop(permit);
        });
    }
}

/// One call per hash slot on a cluster (concurrently), one call on a single server.
async fn commit<O: Op>(inner: &Inner, work: Vec<Pending<O>>) {
    if !inner.conn.is_cluster() {
        return commit_one_call(inner, None, work).await;
    }
    let mut by_slot: HashMap<Slot, Vec<Pending<O>>> = HashMap::new();
    for p in work {
        let slot = Slot::for_key(key(p.op.inbox(), "meta"));
        by_slot.entry(slot).or_default().push(p);
    }
    join_all(
        by_slot
            .into_iter()
            .map(|(slot, group)| commit_one_call(inner, Some(slot), group)),
    )
    .await;
}

async fn commit_one_call<O: Op>(inner: &Inner, place: Option<Slot>, group: Vec<Pending<O>>) {
    // Built once: a retry after `NOSCRIPT` names the same keys.
    let keys: Vec<[String; 5]> = group
        .iter()
        .map(|p| redis_keys::inbox_all(p.op.inbox()))
        .collect();
    let result = inner
        .eval(place, |scripts, lossless| {
            let mut call = evalsha(O::script(scripts), PARTS.len() * group.len());
            for k in keys.iter().flatten() {
                call.arg(k);
            }
            // The three common arguments; each operation brings its own epoch and key
            // life.
            call.arg("").arg(lossless).arg("");
            for p in &group {
                p.op.args(&mut call);
            }
            call
        })
        .await;
    let answers = result.and_then(|reply| split(reply, group.len()));
    match answers {
        Ok(parts) => {
            for (p, part) in group.into_iter().zip(parts) {
                let _ = p.reply.send(Ok(part));
            }
        }
        Err(e) => group.into_iter().for_each(|p| {
            let _ = p.reply.send(Err(e.clone()));
        }),
    }
}

/// A batched reply: for each of `n` operations in order, its length and then its fields.
fn split(reply: Vec<Vec<u8>>, n: usize) -> Result<Vec<Vec<Vec<u8>>>, StoreError> {
    let mut parts = Vec::with_capacity(n);
    let mut fields = reply.into_iter();
    while let Some(len) = fields.next() {
        let len = number(&len)? as usize;
        let part: Vec<_> = fields.by_ref().take(len).collect();
        if part.len() != len {
            return Err(corrupt("a short batch reply"));
        }
        parts.push(part);
    }
    if parts.len() != n {
        return Err(corrupt("a batch reply of another size"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_batched_reply_splits_by_each_parts_length_and_nothing_else_passes() {
        let parts = split(fields(&["2", "a", "b", "0", "1", "c"]), 3).unwrap();
        assert_eq!(parts, vec![fields(&["a", "b"]), vec![], fields(&["c"])]);
        assert!(split(fields(&["2", "a"]), 1).is_err(), "short");
        assert!(split(fields(&["1", "a", "1", "b"]), 1).is_err(), "too many");
        assert!(split(fields(&["1", "a"]), 2).is_err(), "too few");
        assert!(split(fields(&["x", "a"]), 1).is_err(), "no length");
    }
}
