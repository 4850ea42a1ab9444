//! Group commit: one task per kind of operation takes every operation pending right now
//! and sends them to Redis in one script call (on a cluster, one per master, `commit`),
//! as database group commit and Kafka's producer batching do.
//! The store runs two: one for inserts, and one for reads and acks (the insert script
//! must be refused at `maxmemory` and reads and acks must run exactly then, so they
//! cannot share a script; see `scripts`).
//!
//! It batches only when it has to: the task waits for the first operation, yields once
//! to the tasks already runnable, and sends with whatever is queued by then, so an idle
//! relay adds no delay; while `redis_calls_in_flight` calls are out (one by default),
//! new operations queue and leave together in the next one. One is the classic group commit: the batch grows
//! with the load and the round trip. At a node's max rate it cut script calls per
//! message from 1.36 (four out) to 0.52, and Redis and relay CPU per message by 10–20%
//! (BENCHMARKS.md).
//! Each operation still gets its own answer from its own part of the script's reply
//! (each part is prefixed by its length), and an insert is still answered "accepted"
//! only after Redis has run the call that stored it. A call that fails as a whole (the
//! connection, `maxmemory` for inserts, a timeout) fails every operation in it; an
//! operation that fails inside the script (a key of the wrong type, say) fails alone,
//! under `pcall`, and the others of its call go on. Redis does not roll a script back, so
//! what a failed operation wrote before its error stays, as with any script: the
//! scripts are written so that every prefix of an operation leaves its inbox consistent
//! (the next operation's history checks repair the rest).
//!
//! Every caller waits at most `redis_response_timeout_ms` in all, queue included: with
//! one call out at a time, what queued behind a stalled call would otherwise wait for it
//! and then for its own. An insert whose caller gave up stores nothing if Redis runs it
//! after that deadline (it carries the deadline on Redis's clock), so a 503 never hides
//! a stored message for longer than the answer's own race.
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
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::scripts::{Script, Scripts};
use super::{corrupt, evalsha, key, number, Inner, PARTS};
use crate::protocol::InboxId;
use crate::redis_keys;
use crate::store::StoreError;

/// Operations waiting for a writer at most; a caller past it waits its turn.
pub const QUEUE: usize = 8192;

/// One operation a batched script carries: its inbox's keys and a fixed number of
/// arguments, read by the script from `ARGV[4]` on, in the order given.
pub trait Op: Send + Sync + 'static {
    /// A call of this kind closes once its operations' weights reach this (an operation
    /// heavier than what is left starts the next call).
    const BUDGET: usize;
    /// The script every operation of this kind runs in.
    fn script(scripts: &Scripts) -> &Script;
    fn inbox(&self) -> &InboxId;
    /// The operation's arguments (the script's per-operation `ARGV`s).
    fn args(&self, call: &mut Cmd);
    /// Its share of a call's budget ([`Op::BUDGET`]): how many messages it may write
    /// or return, so that one call's reply stays bounded. (An ack weighs 1 and may
    /// delete up to an inbox's cap: deletes cost Redis little and return nothing.)
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
    /// How long a caller waits in all (`redis_response_timeout_ms`).
    timeout: Duration,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

impl<O: Op> Writer<O> {
    pub fn start(inner: Arc<Inner>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        let timeout = inner.options.response_timeout;
        tokio::spawn(run(inner, pending));
        Writer { queue, timeout }
    }

    /// Runs `op` with whatever else is pending; its own answer, within the response
    /// timeout in all (queue included).
    pub async fn run(&self, op: O) -> Answer {
        let timeout = self.timeout;
        let (reply, answer) = oneshot::channel();
        let queued = async {
            self.queue
                .send(Pending { op, reply })
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(timeout, queued)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "redis: no answer within {} ms (queued behind a slower call)",
                    timeout.as_millis()
                )))
            })
    }
}

async fn run<O: Op>(inner: Arc<Inner>, mut pending: mpsc::Receiver<Pending<O>>) {
    let in_flight = Arc::new(Semaphore::new(inner.options.calls_in_flight));
    // An operation that would have taken a call past its budget starts the next one.
    let mut carried: Option<Pending<O>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match pending.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // What queued while we waited for a permit goes in the same call. One yield
        // first lets the tasks already runnable (the sessions and senders woken by the
        // last reply, most often) queue theirs too: at max rate it cut calls per message
        // from 0.54 to 0.35 and Redis CPU per message by a sixth, and costs an idle
        // relay one pass of the scheduler, no timer (BENCHMARKS.md, sixth session).
        tokio::task::yield_now().await;
        let (batch, over) = fill(
            first,
            |p| p.op.weight(),
            || pending.try_recv().ok(),
            O::BUDGET,
        );
        carried = over;
        let inner = inner.clone();
        tokio::spawn(async move {
            commit(&inner, batch).await;
            drop(permit);
        });
    }
}

/// A call's operations: `first`, then what `next` has ready while their weights stay
/// within `budget`; and the one that would have taken the call past it, which starts the
/// next call (so a heavy operation goes alone, never on top of a full call).
fn fill<P>(
    first: P,
    weight: impl Fn(&P) -> usize,
    mut next: impl FnMut() -> Option<P>,
    budget: usize,
) -> (Vec<P>, Option<P>) {
    let mut used = weight(&first);
    let mut batch = vec![first];
    while used < budget {
        let Some(p) = next() else { break };
        let with = used.saturating_add(weight(&p));
        if with > budget {
            return (batch, Some(p));
        }
        used = with;
        batch.push(p);
    }
    (batch, None)
}

/// One call on a single server. On a cluster, one call per master for the operations
/// whose slots the fence has learnt ("spread" over that master's slots: `scripts`'
/// `here`), and one call per hash slot for the rest and for what a spread call could not
/// run (`moved`), all at once. A spread call cuts calls per message on a cluster to what
/// one server takes, and a call's fixed cost is most of a lightly batched message's
/// (BENCHMARKS.md). A call per slot declares its keys, so Redis checks them before the
/// script runs and redis-rs follows `MOVED` and `ASK`; it also learns a slot's process.
async fn commit<O: Op>(inner: &Inner, work: Vec<Pending<O>>) {
    if !inner.conn.is_cluster() {
        return commit_one_call(inner, None, work).await;
    }
    // Each slot looked up once, so every operation of one inbox takes the same path, in
    // order, even while a concurrent call learns the slot anew.
    let mut learnt: HashMap<Slot, Option<Arc<Scripts>>> = HashMap::new();
    let mut by_master: HashMap<String, (Arc<Scripts>, Vec<Pending<O>>)> = HashMap::new();
    let mut unknown = Vec::new();
    for p in work {
        let scripts = learnt
            .entry(slot_of(&p))
            .or_insert_with_key(|slot| inner.fence.scripts(Some(*slot)))
            .clone();
        match scripts {
            Some(s) if s.at.is_some() => {
                let group = by_master
                    .entry(s.run.clone())
                    .or_insert_with(|| (s, Vec::new()));
                group.1.push(p);
            }
            _ => unknown.push(p),
        }
    }
    let spread = by_master.into_values().map(|(scripts, group)| async move {
        let left = if one_slot(&group) {
            group
        } else {
            commit_spread(inner, &scripts, group).await
        };
        commit_by_slot(inner, left).await;
    });
    futures::future::join(join_all(spread), commit_by_slot(inner, unknown)).await;
}

fn slot_of<O: Op>(p: &Pending<O>) -> Slot {
    Slot::for_key(key(p.op.inbox(), "meta"))
}

/// Whether every operation of `group` is on one hash slot (a call per slot serves it as
/// well, and Redis checks its keys before the script runs).
fn one_slot<O: Op>(group: &[Pending<O>]) -> bool {
    group.windows(2).all(|w| slot_of(&w[0]) == slot_of(&w[1]))
}

/// One call per hash slot, all at once.
async fn commit_by_slot<O: Op>(inner: &Inner, work: Vec<Pending<O>>) {
    let mut by_slot: HashMap<Slot, Vec<Pending<O>>> = HashMap::new();
    for p in work {
        by_slot.entry(slot_of(&p)).or_default().push(p);
    }
    join_all(
        by_slot
            .into_iter()
            .map(|(slot, group)| commit_one_call(inner, Some(slot), group)),
    )
    .await;
}

/// One call carrying `group`, whose slots the cluster master `scripts` were learnt for
/// serves as far as the fence knows, sent to that master's address; each operation is
/// answered from its own part. Returns the operations to send again on their own slots:
/// those the script found were not that process's to touch (`moved`), or all of them
/// when the call did not run there (`NOSCRIPT`: another process is at that address) or
/// failed as a whole other than by `maxmemory` (the master may have gone: the calls per
/// slot follow the cluster to its new one, and an insert that did run is then answered
/// `duplicate` by its dedupe id, never stored twice).
async fn commit_spread<O: Op>(
    inner: &Inner,
    scripts: &Scripts,
    group: Vec<Pending<O>>,
) -> Vec<Pending<O>> {
    let Some(at) = scripts.at.as_ref() else {
        return group;
    };
    let lossless = if inner.guard.lossless(&scripts.run) {
        "1"
    } else {
        "0"
    };
    let mut call = evalsha(O::script(scripts), 0);
    call.arg("").arg(lossless).arg(group.len());
    for p in &group {
        p.op.args(&mut call);
    }
    for p in &group {
        for k in redis_keys::inbox_all(p.op.inbox()) {
            call.arg(k);
        }
    }
    let reply = match inner.conn.query_at(Some(at), &call).await {
        Ok(reply) => reply,
        Err(e) if e.code() == Some("OOM") => {
            let e = inner.failed(e);
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
            return Vec::new();
        }
        Err(e) => {
            tracing::debug!(error = %e, node = %format!("{}:{}", at.0, at.1), "a call spread over a master's slots did not run there; sending one per slot");
            return group;
        }
    };
    let parts = redis::FromRedisValue::from_redis_value(reply)
        .map_err(|e| corrupt(&format!("a batch reply ({e})")))
        .and_then(|reply| split(reply, group.len()));
    let parts = match parts {
        Ok(parts) => parts,
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
            return Vec::new();
        }
    };
    let mut left = Vec::new();
    for (p, part) in group.into_iter().zip(parts) {
        if part == [b"moved"] {
            left.push(p);
        } else {
            let _ = p.reply.send(failed_alone(inner, p.op.inbox(), part));
        }
    }
    left
}

async fn commit_one_call<O: Op>(inner: &Inner, place: Option<Slot>, group: Vec<Pending<O>>) {
    // Built once: a retry after `NOSCRIPT` names the same keys.
    let keys: Vec<[String; PARTS.len()]> = group
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
                let _ = p.reply.send(failed_alone(inner, p.op.inbox(), part));
            }
        }
        Err(e) => group.into_iter().for_each(|p| {
            let _ = p.reply.send(Err(e.clone()));
        }),
    }
}

/// An operation's part of the reply, or the error it alone met inside the script, after
/// reporting what it noticed about `inbox`'s history before the error.
fn failed_alone(inner: &Inner, inbox: &InboxId, part: Vec<Vec<u8>>) -> Answer {
    match failure_of(&part) {
        Some((why, lost)) => {
            inner.note_loss(inbox, lost)?;
            Err(StoreError::Unavailable(format!(
                "redis: {}",
                String::from_utf8_lossy(why)
            )))
        }
        None => Ok(part),
    }
}

/// The error and loss reason of a part `{'err', message, lost}` (no script's answer is
/// three fields starting with `err`).
fn failure_of(part: &[Vec<u8>]) -> Option<(&[u8], &[u8])> {
    match part {
        [err, why, lost] if err == b"err" => Some((why, lost)),
        _ => None,
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

    /// Fills one call from `ready` (weights) with `fill`; the batch and what is carried.
    fn one_call(ready: &[usize], budget: usize) -> (Vec<usize>, Option<usize>) {
        let mut rest = ready[1..].iter().copied();
        fill(ready[0], |&w| w, || rest.next(), budget)
    }

    #[test]
    fn a_call_stays_within_its_budget_and_a_heavy_operation_goes_alone() {
        assert_eq!(one_call(&[1, 1, 1], 1024), (vec![1, 1, 1], None));
        assert_eq!(one_call(&[1000, 100, 5], 1024), (vec![1000], Some(100)));
        assert_eq!(one_call(&[100, 5, 919, 1], 1024), (vec![100, 5, 919], None));
        assert_eq!(
            one_call(&[5, usize::MAX], 1024),
            (vec![5], Some(usize::MAX))
        );
        assert_eq!(one_call(&[usize::MAX, 1], 1024), (vec![usize::MAX], None));
        // Full at exactly the budget: the next operation stays queued, not taken.
        let mut taken = 0;
        let (batch, over) = fill(
            256,
            |&w| w,
            || {
                taken += 1;
                Some(1)
            },
            256,
        );
        assert_eq!((batch, over, taken), (vec![256], None, 0));
    }

    #[test]
    fn an_operation_that_failed_inside_the_script_fails_alone() {
        let failed = fields(&["err", "WRONGTYPE", "evicted"]);
        assert_eq!(
            failure_of(&failed),
            Some((&b"WRONGTYPE"[..], &b"evicted"[..]))
        );
        // An ack's answer and a stored insert's are answers, whatever their first field.
        for ok in [
            fields(&["ok", "1", ""]),
            fields(&["stale", "0", ""]),
            fields(&["stored", "1", "2", "0", ""]),
        ] {
            assert_eq!(failure_of(&ok), None);
        }
    }
}
