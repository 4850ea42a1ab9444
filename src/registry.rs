//! Live authenticated sessions, one per inbox key, on this node; and the Whispr v1
//! sockets, which v1 cannot authenticate, so they get no takeover: many per key, woken
//! through a watch channel, plus a lossy channel of live sender copies.
//!
//! The registry only signals: "your inbox has new messages" (a coalescing wake-up) and
//! ephemeral envelopes (a small queue, bounded in count and in bytes). Sessions read stored messages from the
//! store themselves, so a notification that is missed or coalesced loses nothing.
//! No method awaits, so no entry lock is ever held across an await.
//!
//! With the Redis store the registry also tells whoever holds the other end of its
//! outbox (`crate::notify`, over an unbounded channel, never awaiting) when a key's
//! session arrives or leaves and when a key's inbox got a message, so other nodes are
//! woken and older sessions elsewhere close. The outbox's [`Command`] type is the
//! registry's own: the registry knows nothing of Redis or of `notify`, which imports it.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::protocol::{PublicKey, VerifiedEnvelope};

/// What the registry tells the cross-node side about its changes, in the order they
/// happened per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A local session now owns `key`'s inbox: subscribe, then announce the takeover.
    Registered { key: PublicKey, session: u64 },
    /// The local session `session` for `key` left.
    Unregistered { key: PublicKey, session: u64 },
    /// `key`'s inbox has new stored messages: wake whichever node holds its session.
    Wake(PublicKey),
    /// The first Whispr v1 socket for the (derived) inbox `key` opened here: hear its
    /// wake-ups too. v1 sockets take nothing over, so there is no takeover to announce.
    Watch(PublicKey),
    /// The last v1 socket for `key` closed.
    Unwatch(PublicKey),
}

/// The registry's outbox: the sending side of an unbounded channel, so telling never
/// awaits.
pub type Commands = mpsc::UnboundedSender<Command>;

/// The registry's side of one session.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    /// Woken when the inbox may have new stored messages.
    pub wake: Notify,
    /// Cancelled when a newer session for the same key takes over.
    pub replaced: CancellationToken,
    /// Ephemeral envelopes waiting for the session. A deque, not a channel: an empty
    /// `VecDeque` allocates nothing, and most sessions never get an ephemeral envelope,
    /// while a tokio channel costs about 1 KB per session up front (a tenth of an idle
    /// session's memory).
    ephemeral: Mutex<VecDeque<Arc<VerifiedEnvelope>>>,
    /// Woken (one stored permit, so no push is missed) when `ephemeral` gains one.
    ephemeral_ready: Notify,
    /// Bytes queued on `ephemeral` (see [`EphemeralLimits::bytes`]).
    ephemeral_bytes: AtomicUsize,
    ephemeral_limits: EphemeralLimits,
}

/// How much one session's ephemeral queue holds: `count` envelopes and `bytes`, each
/// envelope counted as its body plus [`EPHEMERAL_OVERHEAD_BYTES`].
#[derive(Debug, Clone, Copy)]
pub struct EphemeralLimits {
    pub count: usize,
    pub bytes: usize,
}

/// What a queued ephemeral envelope costs beyond its body (keys, signature, id, the
/// queue slot), for the byte bound.
pub const EPHEMERAL_OVERHEAD_BYTES: usize = 256;

impl SessionHandle {
    /// Fires once an ephemeral envelope may be queued (one stored permit, so a push
    /// before the wait is not missed); then take them with [`EphemeralQueue::take_queued`].
    pub fn ephemeral_ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.ephemeral_ready.notified()
    }
}

fn ephemeral_cost(envelope: &VerifiedEnvelope) -> usize {
    envelope.envelope().body.len() + EPHEMERAL_OVERHEAD_BYTES
}

/// A session's end of its ephemeral queue.
#[derive(Debug)]
pub struct EphemeralQueue {
    handle: Arc<SessionHandle>,
}

impl EphemeralQueue {
    /// The next envelope, waiting for one (the tests' way; a session waits on
    /// [`SessionHandle::ephemeral_ready`] beside its other events instead).
    #[cfg(test)]
    pub async fn recv(&mut self) -> Arc<VerifiedEnvelope> {
        loop {
            if let Some(envelope) = self.take(1).pop_front() {
                return envelope;
            }
            // A push between the pop and here left a permit: this returns at once.
            self.handle.ephemeral_ready().await;
        }
    }

    /// Every envelope queued right now, oldest first (at most the queue's count limit),
    /// their bytes leaving the count. A caller that waits on
    /// [`SessionHandle::ephemeral_ready`] itself takes them all each time it fires
    /// (pushes while it was woken leave one permit, not one each); what is pushed after
    /// this leaves a permit for the next wait, so one turn never runs unbounded while
    /// senders keep pushing.
    pub fn take_queued(&mut self) -> VecDeque<Arc<VerifiedEnvelope>> {
        self.take(usize::MAX)
    }

    /// The oldest `most` envelopes queued, under one lock; their bytes leave the count
    /// under it too, so a push never sees bytes of envelopes already gone.
    fn take(&mut self, most: usize) -> VecDeque<Arc<VerifiedEnvelope>> {
        let h = &self.handle;
        if h.ephemeral_bytes.load(Ordering::Acquire) == 0 {
            // Nothing queued (every envelope counts at least its own size): no lock.
            return VecDeque::new();
        }
        let mut queue = h.ephemeral.lock().unwrap_or_else(|e| e.into_inner());
        let taken = if most >= queue.len() {
            // An empty deque allocates nothing: the taken one is freed once delivered.
            std::mem::take(&mut *queue)
        } else {
            queue.drain(..most).collect()
        };
        let cost: usize = taken.iter().map(|e| ephemeral_cost(e)).sum();
        h.ephemeral_bytes.fetch_sub(cost, Ordering::AcqRel);
        taken
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: DashMap<PublicKey, Arc<SessionHandle>>,
    next_id: AtomicU64,
    /// Whispr v1 sockets, by derived v1 inbox key: many per key (v1 has no takeover),
    /// each woken through a watch channel, which never loses a wake-up.
    v1_inboxes: DashMap<PublicKey, watch::Sender<u64>>,
    /// Whispr v1 sender copies, by the sender's raw signing key (live only, lossy).
    v1_copies: DashMap<PublicKey, broadcast::Sender<Arc<VerifiedEnvelope>>>,
    /// Commands to the pub/sub task, when other nodes share the store.
    remote: Option<Commands>,
}

/// Sender copies buffered per v1 signing key before a slow socket skips some.
pub(crate) const V1_COPY_QUEUE: usize = 64;

/// What a session gets back from registering.
pub struct Registration {
    pub handle: Arc<SessionHandle>,
    pub ephemeral: EphemeralQueue,
    /// Whether an older session for the same key was told to close.
    pub took_over: bool,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose sessions are announced to other nodes through `remote`.
    pub fn with_remote(remote: Commands) -> Self {
        Registry {
            remote: Some(remote),
            ..Self::default()
        }
    }

    /// Sends a command to the pub/sub task. Called with the key's entry held, so the
    /// commands for one key arrive in the order the registry changed.
    fn tell(&self, cmd: Command) {
        if let Some(remote) = &self.remote {
            let _ = remote.send(cmd);
        }
    }

    /// Makes this session the one active consumer of `key`'s inbox, closing any older
    /// one (takeover).
    pub fn register(&self, key: PublicKey, ephemeral: EphemeralLimits) -> Registration {
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            wake: Notify::new(),
            replaced: CancellationToken::new(),
            ephemeral: Mutex::new(VecDeque::new()),
            ephemeral_ready: Notify::new(),
            ephemeral_bytes: AtomicUsize::new(0),
            ephemeral_limits: ephemeral,
        });
        let registered = Command::Registered {
            key,
            session: handle.id,
        };
        // Told while the entry is held, so two registrations racing for one key reach
        // the pub/sub task in the order the map took them.
        let old = match self.sessions.entry(key) {
            Entry::Occupied(mut e) => {
                let old = e.insert(handle.clone());
                self.tell(registered);
                Some(old)
            }
            Entry::Vacant(e) => {
                let _held = e.insert(handle.clone());
                self.tell(registered);
                None
            }
        };
        let took_over = old.is_some();
        if let Some(old) = old {
            old.replaced.cancel();
        }
        Registration {
            ephemeral: EphemeralQueue {
                handle: handle.clone(),
            },
            handle,
            took_over,
        }
    }

    /// Removes the session if it is still the registered one for `key`.
    pub fn unregister(&self, key: &PublicKey, id: u64) {
        if let Entry::Occupied(e) = self.sessions.entry(*key) {
            if e.get().id == id {
                e.remove();
                self.tell(Command::Unregistered {
                    key: *key,
                    session: id,
                });
            }
        }
    }

    /// Closes `key`'s session `id` because a newer one took over on another node.
    pub fn replace(&self, key: &PublicKey, id: u64) {
        if let Some(h) = self.sessions.get(key).filter(|h| h.id == id) {
            h.replaced.cancel();
        }
    }

    /// Tells the node holding `key`'s session, if it is another one, that the inbox has
    /// new stored messages. The local session is woken by [`Registry::notify`].
    pub fn notify_remote(&self, key: &PublicKey) {
        self.tell(Command::Wake(*key));
    }

    /// Wakes every local session and v1 socket, so each reads its inbox from the store
    /// again (after wake-ups from other nodes may have been lost).
    pub fn wake_all(&self) {
        for h in self.sessions.iter() {
            h.wake.notify_one();
        }
        for v1 in self.v1_inboxes.iter() {
            v1.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every key with a local session or v1 socket now, for a catch-up that wakes them a
    /// slice at a time ([`crate::notify::catch_up`]).
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.sessions.iter().map(|e| *e.key()).collect();
        keys.extend(self.v1_inboxes.iter().map(|e| *e.key()));
        keys
    }

    /// Tells `key`'s session (if any) that its inbox has new messages; `key` may also be
    /// a derived Whispr v1 inbox, whose sockets are woken too.
    pub fn notify(&self, key: &PublicKey) -> bool {
        if let Some(v1) = self.v1_inboxes.get(key) {
            v1.send_modify(|n| *n = n.wrapping_add(1));
        }
        match self.sessions.get(key) {
            Some(h) => {
                h.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Hands an ephemeral envelope to `key`'s session. `false` when there is no session
    /// or its queue is full, in envelopes or in bytes (ephemeral messages are never
    /// queued beyond that, and the sender hears `online: false`).
    pub fn push_ephemeral(&self, key: &PublicKey, envelope: Arc<VerifiedEnvelope>) -> bool {
        let Some(h) = self.sessions.get(key) else {
            return false;
        };
        let cost = ephemeral_cost(&envelope);
        let limits = h.ephemeral_limits;
        {
            let mut queue = h.ephemeral.lock().unwrap_or_else(|e| e.into_inner());
            // Bytes change only under this lock or by the receiver (down), so the check
            // holds.
            let queued = h.ephemeral_bytes.load(Ordering::Acquire);
            if queue.len() >= limits.count.max(1) || queued + cost > limits.bytes {
                return false;
            }
            h.ephemeral_bytes.fetch_add(cost, Ordering::AcqRel);
            queue.push_back(envelope);
        }
        h.ephemeral_ready.notify_one();
        true
    }

    /// Registers a Whispr v1 socket on the derived inbox `inbox` and on sender copies
    /// for the raw signing key `key`. Register before the first store read.
    pub fn register_v1(
        &self,
        inbox: PublicKey,
        key: PublicKey,
    ) -> (
        watch::Receiver<u64>,
        broadcast::Receiver<Arc<VerifiedEnvelope>>,
    ) {
        let wake = self
            .v1_inboxes
            .entry(inbox)
            .or_insert_with(|| {
                // The first v1 socket for this inbox here: hear other nodes' wake-ups.
                self.tell(Command::Watch(inbox));
                watch::channel(0).0
            })
            .subscribe();
        let copies = self
            .v1_copies
            .entry(key)
            .or_insert_with(|| broadcast::channel(V1_COPY_QUEUE).0)
            .subscribe();
        (wake, copies)
    }

    /// Forgets a v1 socket's channels once no socket listens on them. The caller drops
    /// its receivers first.
    pub fn unregister_v1(&self, inbox: &PublicKey, key: &PublicKey) {
        // Told while the entry is held, so a `Watch` from a socket opening right now
        // cannot overtake this `Unwatch`.
        if let Entry::Occupied(e) = self.v1_inboxes.entry(*inbox) {
            if e.get().receiver_count() == 0 {
                e.remove();
                self.tell(Command::Unwatch(*inbox));
            }
        }
        self.v1_copies
            .remove_if(key, |_, tx| tx.receiver_count() == 0);
    }

    /// Hands a copy of a v1 message to the sender's own v1 sockets, if any are open.
    pub fn push_v1_copy(&self, sender: &PublicKey, message: Arc<VerifiedEnvelope>) {
        if let Some(tx) = self.v1_copies.get(sender) {
            let _ = tx.send(message);
        }
    }

    /// Whether `id` is `key`'s session on this node (not replaced, not gone).
    pub fn is_current(&self, key: &PublicKey, id: u64) -> bool {
        self.sessions.get(key).is_some_and(|h| h.id == id)
    }

    /// Whether a session for `key` is registered on this node.
    pub fn has_session(&self, key: &PublicKey) -> bool {
        self.sessions.contains_key(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    const LIMITS: EphemeralLimits = EphemeralLimits {
        count: 4,
        bytes: 1 << 20,
    };

    #[test]
    fn the_registry_does_not_import_notify() {
        // Built from parts so that this test's own lines do not match.
        let needle = concat!("crate", "::", "notify");
        let code = include_str!("registry.rs")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            assert!(
                !line.contains(needle) && !line.contains(concat!("super", "::", "notify")),
                "the registry must not depend on notify: {line}"
            );
        }
    }

    #[test]
    fn takeover_cancels_the_older_session_only() {
        let reg = Registry::new();
        let key = Identity::generate().public_key();
        let first = reg.register(key, LIMITS);
        assert!(!first.took_over);
        let second = reg.register(key, LIMITS);
        assert!(second.took_over);
        assert!(first.handle.replaced.is_cancelled());
        assert!(!second.handle.replaced.is_cancelled());
        reg.unregister(&key, first.handle.id);
        assert_eq!(
            reg.len(),
            1,
            "the old session leaving does not remove the new one"
        );
        reg.unregister(&key, second.handle.id);
        assert!(reg.is_empty());
    }

    #[test]
    fn remote_commands_follow_the_registry_and_replace_closes_only_that_session() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reg = Registry::with_remote(tx);
        let key = Identity::generate().public_key();
        let first = reg.register(key, LIMITS);
        let second = reg.register(key, LIMITS);
        reg.unregister(&key, first.handle.id);
        reg.notify_remote(&key);
        reg.replace(&key, first.handle.id);
        assert!(
            !second.handle.replaced.is_cancelled(),
            "not the named session"
        );
        reg.replace(&key, second.handle.id);
        assert!(second.handle.replaced.is_cancelled());
        reg.unregister(&key, second.handle.id);
        let mut got = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            got.push(format!("{cmd:?}"));
        }
        let (a, b) = (first.handle.id, second.handle.id);
        assert_eq!(
            got,
            [
                format!("Registered {{ key: {key:?}, session: {a} }}"),
                format!("Registered {{ key: {key:?}, session: {b} }}"),
                format!("Wake({key:?})"),
                format!("Unregistered {{ key: {key:?}, session: {b} }}"),
            ],
            "the replaced session leaving is no unsubscribe"
        );
    }

    #[test]
    fn v1_sockets_share_a_key_and_all_wake() {
        let reg = Registry::new();
        let inbox = Identity::generate().public_key();
        let key = Identity::generate().public_key();
        let (mut a, _) = reg.register_v1(inbox, key);
        let (mut b, copies_b) = reg.register_v1(inbox, key);
        assert!(
            !reg.notify(&inbox),
            "no native session, v1 sockets still woken"
        );
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        a.mark_unchanged();
        b.mark_unchanged();
        drop((b, copies_b));
        reg.unregister_v1(&inbox, &key);
        reg.notify(&inbox);
        assert!(
            a.has_changed().unwrap(),
            "the other socket stays registered"
        );
    }

    fn ephemeral(body: usize) -> Arc<VerifiedEnvelope> {
        let alice = Identity::generate();
        let bob = Identity::generate().public_key();
        Arc::new(
            crate::protocol::Envelope::seal(&alice, bob, 1000, true, vec![7; body])
                .verify(1000, 10)
                .unwrap(),
        )
    }

    /// A registry with the recipient of a 6-byte ephemeral envelope online, its queue
    /// holding at most `count` envelopes (and 1 MiB).
    fn online(count: usize) -> (Registry, Arc<VerifiedEnvelope>, PublicKey, Registration) {
        let reg = Registry::new();
        let env = ephemeral(6);
        let bob = env.envelope().recipient;
        let limits = EphemeralLimits {
            count,
            bytes: 1 << 20,
        };
        let reg_b = reg.register(bob, limits);
        (reg, env, bob, reg_b)
    }

    #[tokio::test]
    async fn ephemeral_queue_is_bounded_in_count() {
        let reg = Registry::new();
        let env = ephemeral(6);
        let bob = env.envelope().recipient;
        assert!(!reg.push_ephemeral(&bob, env.clone()), "nobody online");
        let limits = EphemeralLimits {
            count: 1,
            bytes: 1 << 20,
        };
        let mut reg_b = reg.register(bob, limits);
        assert!(reg.push_ephemeral(&bob, env.clone()));
        assert!(
            !reg.push_ephemeral(&bob, env.clone()),
            "queue of one is full"
        );
        reg_b.ephemeral.recv().await;
        assert!(reg.push_ephemeral(&bob, env), "room again");
    }

    #[tokio::test]
    async fn ephemeral_queue_is_bounded_in_bytes_and_frees_them_on_receive() {
        let reg = Registry::new();
        let env = ephemeral(10_000);
        let bob = env.envelope().recipient;
        let cost = 10_000 + EPHEMERAL_OVERHEAD_BYTES;
        let limits = EphemeralLimits {
            count: 64,
            bytes: 3 * cost + cost / 2,
        };
        let mut reg_b = reg.register(bob, limits);
        let taken = (0..64)
            .filter(|_| reg.push_ephemeral(&bob, env.clone()))
            .count();
        assert_eq!(taken, 3, "three fit in three and a half envelopes' bytes");
        reg_b.ephemeral.recv().await;
        assert!(reg.push_ephemeral(&bob, env.clone()), "one left, one fits");
        assert!(!reg.push_ephemeral(&bob, env));
    }

    #[tokio::test]
    async fn a_waiting_session_gets_an_ephemeral_envelope_pushed_after_it_began_waiting() {
        let (reg, env, bob, mut reg_b) = online(4);
        let waiting = tokio::spawn(async move { reg_b.ephemeral.recv().await });
        tokio::task::yield_now().await;
        assert!(reg.push_ephemeral(&bob, env.clone()));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the push woke the waiting session")
            .unwrap();
        assert!(Arc::ptr_eq(&got, &env));
    }

    #[tokio::test]
    async fn a_wake_takes_what_is_queued_and_later_pushes_wake_again() {
        // What the session loop relies on: one take empties the queue and frees all its
        // bytes, and a push after the take leaves a permit, so that push waits for the
        // next turn instead of keeping one turn running.
        let (reg, env, bob, mut reg_b) = online(8);
        for _ in 0..3 {
            assert!(reg.push_ephemeral(&bob, env.clone()));
        }
        let wait = std::time::Duration::from_secs(5);
        tokio::time::timeout(wait, reg_b.handle.ephemeral_ready())
            .await
            .expect("three pushes left a permit");
        assert_eq!(reg_b.ephemeral.take_queued().len(), 3);
        assert!(reg_b.ephemeral.take_queued().is_empty());
        assert_eq!(reg_b.handle.ephemeral_bytes.load(Ordering::Acquire), 0);
        assert!(reg.push_ephemeral(&bob, env));
        tokio::time::timeout(wait, reg_b.handle.ephemeral_ready())
            .await
            .expect("a push after the take wakes the next wait");
        assert_eq!(reg_b.ephemeral.take_queued().len(), 1);
    }
}
