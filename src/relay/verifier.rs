//! The one verifier stage: every envelope signature checked for a client, from every
//! session and `POST /v1/send`, goes through here, and is verified in batches that grow
//! with the load, like a group commit: alone when nothing else is waiting.
//!
//! - **Idle** (nothing queued, no batch running): the first envelope's caller leads the
//!   batch ([`Leader`]): it yields to the runtime once, so every task with input ready
//!   queues behind it, then verifies the whole queue on its own task, with no hand-off to
//!   another thread, and answers the others. A lone envelope is verified at once, so an
//!   idle relay answers as fast as before batching; on one core, where no worker can
//!   run beside the runtime, this is how sends of many sessions share a batch.
//! - **Busy**: the envelope joins the queue and the caller waits for its verdict. Each of
//!   `verify_workers` threads takes everything pending (at most `verify_max_batch`) and
//!   checks it in one cofactored batch equation (`protocol::verify_envelopes`): 3-4×
//!   cheaper per signature than one at a time on this box (BENCHMARKS.md). A batch grows
//!   with the load, and nothing ever waits for company: no timer, no minimum size.
//! - **A bad signature in a batch** fails the batch equation; then each envelope of that
//!   batch is verified alone, so the bad one is refused and attributed to its own
//!   sender, and the others are accepted. Batch and single verification use the same
//!   equation (PROTOCOL.md §2.2), so the verdict never depends on which path was taken.
//! - **Full** (`verify_queue_depth` envelopes waiting): refused at once with
//!   `unavailable` (503 / an error frame) and a retry hint, before any work is done.
//!
//! Why threads of its own rather than tokio's blocking pool or the runtime's workers:
//! a batch of 64 signatures is about a millisecond of CPU, too long to hold a runtime
//! worker (the sockets of every other session wait behind it), and the blocking pool
//! would start a thread per batch under load. `verify_workers` long-lived threads, two
//! on this 2-core box, let verification use both cores while the runtime's two workers
//! read and write sockets; the OS shares the cores between them by demand. A leader's
//! batch does hold its runtime thread while it runs: it holds only what queued during
//! one yield (on two cores, usually a few envelopes), and on one core, where the
//! measurements of BENCHMARKS.md pin the relay, there is no other thread to run it on.
//! Envelopes that wait longer than `verify_leader_grace_ms` for a leader go to the
//! threads.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use prometheus::IntCounter;
use tokio::sync::oneshot;

use crate::config::{require, Config, Invalid};
use crate::protocol::{verify_envelopes, EnvelopeCheck, ProtocolError, SignedEnvelope};

/// How long a client refused by a full queue is told to wait (a batch takes about a
/// millisecond, so the queue drains in well under this).
pub const VERIFY_BUSY_RETRY_MS: u64 = 100;

/// The stage's bounds (config keys `verify_queue_depth`, `verify_max_batch`,
/// `verify_leader_grace_ms`, `verify_workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierLimits {
    pub queue_depth: usize,
    pub max_batch: usize,
    pub workers: usize,
    /// `verify_leader_grace_ms`: see [`Ticket::ready`].
    pub leader_grace: std::time::Duration,
}

impl VerifierLimits {
    /// The stage's bounds, from the `verify_*` keys.
    pub fn from_config(c: &Config) -> Self {
        VerifierLimits {
            queue_depth: c.verify_queue_depth,
            max_batch: c.verify_max_batch,
            workers: c.verify_workers,
            leader_grace: std::time::Duration::from_millis(c.verify_leader_grace_ms),
        }
    }

    /// Checks the `verify_*` keys, naming the one at fault.
    pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
        let l = Self::from_config(c);
        require(
            (1..=1_000_000).contains(&l.queue_depth),
            "verify_queue_depth",
            "must be between 1 and 1000000",
        )?;
        require(
            (1..=4096).contains(&l.max_batch),
            "verify_max_batch",
            "must be between 1 and 4096",
        )?;
        require(
            (1..=256).contains(&l.workers),
            "verify_workers",
            "must be between 1 and 256",
        )?;
        require(
            (1..=1000).contains(&c.verify_leader_grace_ms),
            "verify_leader_grace_ms",
            "must be between 1 and 1000",
        )
    }
}

/// The queue was full: the envelope was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub queue_depth: usize,
}

/// What the stage has done: the relay's `whispr_signature_*` counters (`metrics.rs`
/// registers them), or unregistered ones in tests.
#[derive(Clone)]
pub struct VerifierStats {
    /// Envelopes verified on their caller's task, in a batch it led (the stage was idle).
    pub inline: IntCounter,
    /// Batches a worker took, and those of two or more envelopes a leader ran; and the
    /// envelopes in them.
    pub batches: IntCounter,
    pub batched: IntCounter,
    /// Batches whose equation failed, so each envelope in them was verified alone.
    pub retried_batches: IntCounter,
    /// Envelopes refused because the queue was full.
    pub refused_full: IntCounter,
}

impl VerifierStats {
    /// Counters in no registry.
    #[cfg(test)]
    pub fn unregistered() -> Self {
        let c = |name: &str| IntCounter::new(name, name).expect("valid metric");
        VerifierStats {
            inline: c("inline"),
            batches: c("batches"),
            batched: c("batched"),
            retried_batches: c("retried_batches"),
            refused_full: c("refused_full"),
        }
    }
}

/// One envelope's verdict.
pub type Verdict = Result<SignedEnvelope, ProtocolError>;

/// A verification [`Verifier::start`] began: waiting for a batch, which a worker runs, or
/// which this ticket's holder runs itself ([`Leader`]: the stage was idle).
// `Done` carries the checked envelope, which the session moves on at once: boxing it
// would cost an allocation per message to save bytes in a queue of at most
// `ws_max_pipelined_sends` entries.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Ticket {
    Done(Verdict),
    Waiting(Follower),
    Lead(Leader),
}

/// The first envelope to reach an idle stage. Its caller runs the batch (group commit's
/// leader): it yields to the runtime once, so the other tasks that have input ready
/// queue their envelopes behind it, then verifies everything queued, its own included,
/// in one batch on its own thread, and answers the others. On one core, where no worker
/// can run beside the runtime, this is how sends from many sessions share a batch; when
/// nothing else is ready the yield costs microseconds, so an idle relay still answers at
/// once. A leader dropped before it led (its session ended) hands the queue to the
/// workers, so nothing waits for a leader that is gone.
pub struct Leader {
    shared: Arc<Shared>,
    reply: Option<oneshot::Receiver<Verdict>>,
    yielded: bool,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.reply.is_some() {
            self.shared.unlead();
        }
    }
}

/// An envelope queued for a batch, a leader's or a worker's.
pub struct Follower {
    reply: oneshot::Receiver<Verdict>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

fn stopped() -> Verdict {
    // A worker answers every job it takes; the sender is only dropped unanswered if a
    // worker panicked, which is a bug.
    Err(ProtocolError::Internal(
        "the signature verifier stopped".into(),
    ))
}

impl Ticket {
    /// Until the verdict is in; a leader first runs the batch (see [`Leader`]).
    /// Cancel-safe: a ticket whose wait was dropped gets its verdict when waited on
    /// again, and a leader yields once at most.
    pub async fn ready(&mut self) {
        if let Ticket::Lead(leader) = self {
            if !leader.yielded {
                tokio::task::yield_now().await;
                leader.yielded = true;
            }
            let reply = leader.reply.take();
            leader.shared.lead();
            *self = match reply {
                Some(reply) => Ticket::Waiting(Follower {
                    reply,
                    shared: leader.shared.clone(),
                }),
                None => Ticket::Done(stopped()),
            };
        }
        if let Ticket::Waiting(Follower { reply, shared }) = self {
            // A leader's session may be busy elsewhere (storing an earlier send, with
            // Redis slow or stalled) before it polls its ticket again: whoever waits past
            // `verify_leader_grace_ms` hands the leader's batch to the workers, so no
            // session's verdict waits on another session's store call. A leader normally
            // leads within microseconds (one yield).
            let grace = shared.limits.leader_grace;
            let verdict = match tokio::time::timeout(grace, &mut *reply).await {
                Ok(verdict) => verdict,
                Err(_) => {
                    shared.unlead();
                    reply.await
                }
            };
            *self = Ticket::Done(verdict.unwrap_or_else(|_| stopped()));
        }
    }
}

struct Job {
    check: EnvelopeCheck,
    reply: oneshot::Sender<Verdict>,
}

struct State {
    queue: VecDeque<Job>,
    /// Batches in progress, by a leader or a worker.
    running: usize,
    /// A leader was chosen and has not taken the queue yet: arrivals join its batch
    /// instead of waking a worker.
    leading: bool,
    stopping: bool,
}

struct Shared {
    limits: VerifierLimits,
    state: Mutex<State>,
    pending: Condvar,
    stats: VerifierStats,
}

/// The verifier stage. Dropping it stops its threads once the queue is empty.
pub struct Verifier {
    shared: Arc<Shared>,
}

impl Verifier {
    /// Starts `limits.workers` verifier threads.
    pub fn new(limits: VerifierLimits, stats: VerifierStats) -> Self {
        let verifier = Self::without_workers(limits, stats);
        for i in 0..limits.workers {
            let shared = verifier.shared.clone();
            std::thread::Builder::new()
                .name(format!("whispr-verify-{i}"))
                .spawn(move || while shared.work_once() {})
                .expect("spawning a verifier thread");
        }
        verifier
    }

    fn without_workers(limits: VerifierLimits, stats: VerifierStats) -> Self {
        Verifier {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    running: 0,
                    leading: false,
                    stopping: false,
                }),
                pending: Condvar::new(),
                stats,
            }),
        }
    }

    #[cfg(test)]
    pub fn stats(&self) -> &VerifierStats {
        &self.shared.stats
    }

    /// The verdict on one envelope's signature. `Err(Full)` when `verify_queue_depth`
    /// are waiting.
    #[cfg(test)]
    pub async fn verify(&self, check: EnvelopeCheck) -> Result<Verdict, Full> {
        let mut ticket = self.start(check)?;
        ticket.ready().await;
        match ticket {
            Ticket::Done(verdict) => Ok(verdict),
            _ => unreachable!("ready leaves a ticket done"),
        }
    }

    /// Queues one envelope's check: the first to reach an idle stage (no batch running,
    /// no leader chosen) leads its batch ([`Leader`]); arrivals while a leader is chosen
    /// join it; arrivals while a batch runs wake a worker. `Err(Full)` when
    /// `verify_queue_depth` are waiting, before any work is done.
    pub fn start(&self, check: EnvelopeCheck) -> Result<Ticket, Full> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.queue.len() >= shared.limits.queue_depth {
            shared.stats.refused_full.inc();
            return Err(Full {
                queue_depth: shared.limits.queue_depth,
            });
        }
        let (reply, verdict) = oneshot::channel();
        state.queue.push_back(Job { check, reply });
        if state.running == 0 && !state.leading && state.queue.len() == 1 {
            state.leading = true;
            return Ok(Ticket::Lead(Leader {
                shared: shared.clone(),
                reply: Some(verdict),
                yielded: false,
            }));
        }
        if !state.leading {
            shared.pending.notify_one();
        }
        Ok(Ticket::Waiting(Follower {
            reply: verdict,
            shared: shared.clone(),
        }))
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.pending.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every change is
        // one push, pop or count), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for pending envelopes, verifies up to `max_batch` of them and answers each.
    /// `false` once the stage is stopping and nothing is left.
    fn work_once(&self) -> bool {
        let jobs = {
            let mut state = self.lock();
            while state.queue.is_empty() {
                if state.stopping {
                    return false;
                }
                state = self.pending.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            self.take(&mut state)
        };
        self.run(jobs, false);
        true
    }

    /// The leader is gone or late: the workers take its batch.
    fn unlead(&self) {
        let mut state = self.lock();
        if state.leading {
            state.leading = false;
            self.pending.notify_all();
        }
    }

    /// A leader's batch, on the caller's thread: everything queued (at most
    /// `max_batch`; the rest goes to the workers). A worker may have taken the queue
    /// already; then there is nothing to do.
    fn lead(&self) {
        let jobs = {
            let mut state = self.lock();
            state.leading = false;
            if state.queue.is_empty() {
                return;
            }
            let jobs = self.take(&mut state);
            if !state.queue.is_empty() {
                self.pending.notify_one();
            }
            jobs
        };
        self.run(jobs, true);
    }

    /// Takes a batch off the queue; the caller runs it.
    fn take(&self, state: &mut State) -> Vec<Job> {
        let n = state.queue.len().min(self.limits.max_batch);
        state.running += 1;
        state.queue.drain(..n).collect()
    }

    /// Verifies `jobs` (one alone, several in one batch equation) and answers each.
    fn run(&self, jobs: Vec<Job>, inline: bool) {
        if inline {
            self.stats.inline.inc_by(jobs.len() as u64);
        }
        // A worker's batch counts whatever its size, a leader's from two envelopes (one
        // alone is what an idle relay verifies).
        if !inline || jobs.len() > 1 {
            self.stats.batches.inc();
            self.stats.batched.inc_by(jobs.len() as u64);
        }
        let (checks, replies): (Vec<EnvelopeCheck>, Vec<_>) =
            jobs.into_iter().map(|j| (j.check, j.reply)).unzip();
        let verdicts = if checks.len() == 1 {
            checks.into_iter().map(EnvelopeCheck::verify).collect()
        } else {
            verify_envelopes(checks)
        };
        if verdicts.iter().any(Result::is_err) && verdicts.len() > 1 {
            self.stats.retried_batches.inc();
        }
        self.lock().running -= 1;
        for (reply, verdict) in replies.into_iter().zip(verdicts) {
            // The caller may have gone (its connection closed): nothing to tell.
            let _ = reply.send(verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Envelope, Identity};

    fn limits(queue_depth: usize) -> VerifierLimits {
        VerifierLimits {
            queue_depth,
            max_batch: 64,
            workers: 1,
            leader_grace: std::time::Duration::from_millis(2),
        }
    }

    fn check(seed: u8, spoil: bool) -> EnvelopeCheck {
        let sender = Identity::from_seed([seed; 32]);
        let mut envelope = Envelope::seal(
            &sender,
            Identity::from_seed([0; 32]).public_key(),
            1000,
            false,
            vec![seed; 8],
        );
        if spoil {
            envelope.body[0] ^= 1;
        }
        let key = envelope.sender.sender_key().unwrap();
        envelope.signature_check(key)
    }

    /// Holds every verification slot, as busy workers would, so submissions queue.
    fn occupy(v: &Verifier) {
        v.shared.lock().running = v.shared.limits.workers;
    }

    #[tokio::test]
    async fn a_leader_verifies_what_queued_behind_it_in_one_batch_and_a_bad_one_fails_alone() {
        let v = Verifier::without_workers(limits(16), VerifierStats::unregistered());
        let mut tickets: Vec<Ticket> = (1..=6u8)
            .map(|i| v.start(check(i, i == 4)).unwrap())
            .collect();
        assert!(matches!(tickets[0], Ticket::Lead(_)), "the stage was idle");
        assert!(tickets[1..]
            .iter()
            .all(|t| matches!(t, Ticket::Waiting(..))));
        for t in &mut tickets {
            t.ready().await;
        }
        let ok: Vec<bool> = tickets
            .iter()
            .map(|t| match t {
                Ticket::Done(verdict) => verdict.is_ok(),
                other => panic!("not done: {other:?}"),
            })
            .collect();
        assert_eq!(ok, [true, true, true, false, true, true]);
        assert_eq!(v.stats().batches.get(), 1);
        assert_eq!(v.stats().batched.get(), 6);
        assert_eq!(v.stats().inline.get(), 6);
        assert_eq!(v.stats().retried_batches.get(), 1);
        let state = v.shared.lock();
        assert_eq!((state.running, state.leading), (0, false), "idle again");
    }

    #[tokio::test]
    async fn a_late_leader_loses_its_batch_to_the_workers() {
        let v = Verifier::new(limits(16), VerifierStats::unregistered());
        let _leader = v.start(check(1, false)).unwrap();
        let mut follower = v.start(check(2, false)).unwrap();
        // The leader never polls (its session is busy): the follower still gets its
        // verdict, from a worker, once the grace is over.
        tokio::time::timeout(std::time::Duration::from_secs(10), follower.ready())
            .await
            .expect("the follower was not left waiting");
        assert!(matches!(follower, Ticket::Done(Ok(_))));
    }

    #[test]
    fn a_leader_gone_before_it_led_hands_its_batch_to_the_workers() {
        let v = Verifier::new(limits(16), VerifierStats::unregistered());
        let leader = v.start(check(1, false)).unwrap();
        let follower = v.start(check(2, false)).unwrap();
        assert!(matches!(leader, Ticket::Lead(_)));
        drop(leader);
        let Ticket::Waiting(Follower { reply, .. }) = follower else {
            panic!("the second envelope joins the leader's batch");
        };
        assert!(
            reply.blocking_recv().unwrap().is_ok(),
            "a worker verified it"
        );
    }

    #[tokio::test]
    async fn an_idle_stage_verifies_inline() {
        let v = Verifier::without_workers(limits(4), VerifierStats::unregistered());
        assert!(v.verify(check(1, false)).await.unwrap().is_ok());
        assert!(v.verify(check(2, true)).await.unwrap().is_err());
        assert_eq!(v.stats().inline.get(), 2);
        assert_eq!(v.stats().batches.get(), 0);
    }

    #[tokio::test]
    async fn a_busy_stage_batches_and_attributes_a_bad_signature_to_its_sender() {
        let v = Arc::new(Verifier::without_workers(
            limits(64),
            VerifierStats::unregistered(),
        ));
        occupy(&v);
        let waiting: Vec<_> = (0..10u8)
            .map(|i| {
                let v = v.clone();
                tokio::spawn(async move { v.verify(check(i + 1, i == 3)).await })
            })
            .collect();
        // Every task has queued its envelope before the worker runs.
        while v.shared.lock().queue.len() < 10 {
            tokio::task::yield_now().await;
        }
        let shared = v.shared.clone();
        assert!(tokio::task::spawn_blocking(move || shared.work_once())
            .await
            .unwrap());
        for (i, task) in waiting.into_iter().enumerate() {
            let verdict = task.await.unwrap().unwrap();
            assert_eq!(verdict.is_err(), i == 3, "envelope {i}");
        }
        let stats = v.stats();
        assert_eq!(stats.batches.get(), 1);
        assert_eq!(stats.batched.get(), 10);
        assert_eq!(stats.retried_batches.get(), 1);
        assert_eq!(stats.inline.get(), 0);
    }

    /// The runtime's worker threads are the only callers: with one of them verifying
    /// inline, the next envelope must queue for a batch even though a verifier thread
    /// is free, or nothing would ever be batched.
    #[tokio::test]
    async fn one_verification_running_is_busy_enough_to_queue() {
        let v = Arc::new(Verifier::without_workers(
            VerifierLimits {
                workers: 2,
                ..limits(8)
            },
            VerifierStats::unregistered(),
        ));
        v.shared.lock().running = 1;
        let queued = {
            let v = v.clone();
            tokio::spawn(async move { v.verify(check(1, false)).await })
        };
        while v.shared.lock().queue.is_empty() {
            tokio::task::yield_now().await;
        }
        let shared = v.shared.clone();
        tokio::task::spawn_blocking(move || shared.work_once())
            .await
            .unwrap();
        assert!(queued.await.unwrap().unwrap().is_ok());
        assert_eq!(v.stats().inline.get(), 0);
        assert_eq!(v.stats().batched.get(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let v = Arc::new(Verifier::without_workers(
            limits(2),
            VerifierStats::unregistered(),
        ));
        occupy(&v);
        let queued: Vec<_> = (0..2u8)
            .map(|i| {
                let v = v.clone();
                tokio::spawn(async move { v.verify(check(i + 1, false)).await })
            })
            .collect();
        while v.shared.lock().queue.len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            v.verify(check(9, false)).await.err(),
            Some(Full { queue_depth: 2 })
        );
        assert_eq!(v.stats().refused_full.get(), 1);
        let shared = v.shared.clone();
        tokio::task::spawn_blocking(move || shared.work_once())
            .await
            .unwrap();
        for task in queued {
            assert!(task.await.unwrap().unwrap().is_ok());
        }
    }

    #[test]
    fn workers_drain_the_queue_then_stop() {
        let v = Verifier::new(
            VerifierLimits {
                max_batch: 4,
                workers: 2,
                ..limits(16)
            },
            VerifierStats::unregistered(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // With every slot held, all twelve go through the worker threads, in batches of
        // at most four.
        occupy(&v);
        rt.block_on(async {
            let verdicts =
                futures::future::join_all((0..12u8).map(|i| v.verify(check(i + 1, i % 5 == 0))))
                    .await;
            for (i, verdict) in verdicts.into_iter().enumerate() {
                assert_eq!(verdict.unwrap().is_err(), i % 5 == 0, "envelope {i}");
            }
        });
        assert!(v.stats().batches.get() >= 3);
        assert_eq!(v.stats().batched.get(), 12);
        let shared = v.shared.clone();
        drop(v);
        // Stopping: the workers see it and leave; a worker's loop would return false.
        assert!(!shared.work_once());
    }
}
