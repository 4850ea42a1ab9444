//! The Redis store: queued messages survive a relay restart and are shared by every
//! relay node on the same Redis.
//!
//! # Key schema
//!
//! Every key of one inbox carries the inbox's public key (hex) as a Redis Cluster hash
//! tag, so all of them live in one slot and each operation of a Lua script touches one
//! slot only (a call spread over a cluster master's slots checks each operation's slot
//! first: `writer`; the names are built in [`crate::redis_keys`], which lists every key
//! the relay uses):
//!
//! | key                       | type       | content                                        |
//! |---------------------------|------------|------------------------------------------------|
//! | `whispr:{<inbox>}:meta`   | hash       | `epoch`, `head`, `lost`, `acked`, `run`, `n`, `h` |
//! | `whispr:{<inbox>}:queue`  | sorted set | member = `<seq> <expires-at ms> <payload>`, score = seq |
//! | `whispr:{<inbox>}:ids`    | sorted set | member = message id hex, score = forget-at     |
//!
//! The payload is MessagePack `{stored_at_ms, envelope}`. `n` counts `queue`'s members
//! (so a read notices an evicted `queue` with one `ZCARD`), and `h` is `head` as this
//! schema last wrote it.
//!
//! Sorted sets scored by a per-inbox counter (as Signal-Server does) rather than Streams:
//! the relay's cursor is `(epoch, seq)` with seqs counting up by one, which a counter
//! gives directly, and acks delete "everything through seq", one `ZREMRANGEBYSCORE`.
//! One member per message, its expiry inside, makes a stored message one `ZADD` and an
//! ack one call; expiry reads the front only (as the memory store's queue does), since
//! seqs are handed out in time order with one TTL. Expiries fall out of that order only
//! by how far the nodes' clocks disagree, or after `message_ttl_seconds` was lowered: a
//! message then waits for the one before it, served past its TTL by at most that much.
//!
//! # The earlier schema, migrated in place
//!
//! Relays before this schema kept a message in three keys: `q` (the seq), `m` (seq ->
//! payload) and `exp` (the seq scored by its expiry). A script that opens such an inbox
//! with a clock (an insert, a read, the sweep) moves what they hold into `queue` and
//! deletes them, in the same atomic call; the sweep finds every inbox still holding them
//! (`SCAN` for `:m`, until a sweep finds none), so the upgrade's inboxes are migrated by
//! its first sweep. An earlier relay's writes are recognised by `h` not being `head`
//! (earlier relays count `head` up but never write `h`). Relays of both schemas must not
//! serve one Redis at once: an earlier relay's reader does not see `queue`, and its
//! cumulative acks could pass messages it never saw. When a script finds an earlier
//! relay's write in an inbox this schema had written (`h` there, or a `queue` under
//! metadata without it), it migrates it, numbering its messages after every seq in use
//! when they collide, and reports `mixed_versions` (a new epoch, as below). An earlier
//! relay's reads and acks write nothing this schema can tell apart, so they go unseen.
//! Upgrading is therefore: stop every relay on the Redis, start the new ones. An ack
//! alone (no clock) does not migrate: on an inbox not yet migrated it moves `acked` and
//! answers 0 deleted, and the migration then drops what it acknowledged.
//!
//! # Atomicity
//!
//! Three Lua scripts (insert, reads, and the sweep's expire; in `scripts.rs`) run
//! atomically on one Redis process; each operation in them (one insert, one read or one ack,
//! many of each batched into one call by `writer`) works on one inbox. Each first checks
//! the inbox's history (below), then reads and the sweep expire the inbox's front
//! (`lost` rises to the highest expired seq; an insert does only when the inbox is
//! full); the sweep and every sixteenth insert forget dedupe ids past their window (the
//! insert reads an id past its window as forgotten, so the verdict is exact either way);
//! inserts and reads create `meta` with a fresh random epoch (chosen in Rust, in
//! [1, 2^53)) when it is missing. `ack` takes no clock (the
//! trait gives it none), so it does not expire anything. The gap and floor rules are
//! computed in Rust from `epoch`, `lost` and `acked`, the same expressions as the memory
//! store's, so both stores answer alike.
//!
//! # History checks: no seq is reused where a reader could have passed it
//!
//! Redis can come back with less than it had (`appendfsync everysec` after a crash, an
//! older RDB or AOF restored, a failover to a lagging replica, an eviction). Numbering
//! an inbox on from an older `head` would hand seqs a reader already passed to new
//! messages: the reader skips them and its next cumulative ack deletes them. So before a
//! script reads or assigns a seq it checks, atomically, and moves the inbox to a new
//! epoch (keeping every message still stored, and `head`) when:
//!
//! - `meta.run`, the Redis process (`INFO server` `run_id`) that last wrote the inbox, is
//!   not the one the script runs on, and that one's persistence was not verified
//!   lossless by [`guard`] (`appendonly yes`, `appendfsync always`, never a promoted
//!   replica). Each script is built for one process, its run id written into its text,
//!   and can run on no other (`fence` argues why); a call that reaches another process
//!   fails with `NOSCRIPT`, changing nothing, and the store checks that process, loads
//!   its scripts and calls again. So a lossless restart never looks lossy, an
//!   unverifiable one is taken as lossy, and no script asks Redis for `INFO`;
//! - a reader's cursor, or an ack, stands past `head` in the current epoch (the reader
//!   is a witness: it saw seqs the store no longer has);
//! - `meta` is gone while `queue` remains, or `queue` holds fewer messages than `meta.n`
//!   counts (evicted keys): what is left is kept, `head` past every seq still stored.
//!
//! Readers then get `gap epoch_changed` and everything still stored; the store counts
//! each move in [`StoreEvents`] (`whispr_store_history_lost_total{reason}`) with a WARN
//! naming the inbox. An inbox whose keys are all gone (`FLUSHALL`, no persistence) is
//! simply new, with a new epoch. The run id is the one per-process value Redis cannot
//! restore from a snapshot.
//!
//! # A full or stalled Redis
//!
//! The insert script declares no flags, so at `maxmemory` Redis refuses it before it runs
//! (OOM, answered 507 [`StoreError::RedisFull`]). Reads (with acks) and expire declare
//! `allow-oom`: they delete, or write a few bytes of metadata, and they are what frees a
//! full Redis. Every insert carries a deadline on Redis's clock (`TIME`, with the offset
//! measured by [`guard`]), so an insert that a stopped Redis runs after the relay gave up
//! (503) stores nothing.
//!
//! # TTL strategy
//!
//! Message TTL and the dedupe window are enforced by the scores above, checked against
//! the relay's clock (never Redis's), so tests with a manual clock behave as in memory.
//! Redis key expiry only removes idle inboxes, and only `meta` and `ids` carry a life:
//! each write makes them live at least `message TTL + dedupe window` longer (never
//! shortening a longer life), renewed to that plus a sixteenth once less is left, so
//! once per sixteenth of it rather than on every write (a `PTTL` per write instead of
//! ten calls). `queue` holds messages, which leave by ack or by their TTL (reads, a full
//! insert, the sweep); Redis deletes it when it is empty, so giving it a life too would
//! cost calls on every first message into an empty inbox. A script that finds `meta`
//! gone (expired idle) with messages left expires them first: only what is still within
//! its TTL is reported as lost (an eviction). An inbox that vanished comes back with a
//! new epoch, and a reader with the old cursor is told of an epoch change, like the
//! memory store's idle drop.
//!
//! # Sweep and depth
//!
//! Expiry found by scripts is counted in an `AtomicU64` and reported by the next sweep.
//! The sweep also `SCAN`s the `:queue` keys (only inboxes holding messages have one)
//! and, until one sweep finds none, the earlier schema's `:m` keys, and expires each
//! inbox (after the same eviction check as a read, and migrating it), because a message
//! nobody reads again must still be reported as expired (the conformance suite checks
//! this, and checks `depth` after an ack, which is why neither is left at zero). `depth`
//! `SCAN`s the `:queue` keys (and, while the sweep finds any, the earlier schema's `:q`)
//! and sums their sizes with one `ZCARD` each (many in flight; no pipeline, since on a
//! cluster the keys live on different masters). The sweep costs one round trip per inbox
//! holding messages; both run only at sweep and metrics-scrape intervals. `SCAN` walks
//! the whole keyspace (matching is done server-side), on a cluster every master in
//! turn (`RedisLink::scan_match`); with very many keys a global index of expiring
//! inboxes would be cheaper, but on a cluster it would be one hot slot.
//!
//! # One server or a cluster
//!
//! The store talks through [`RedisLink`]: a single server, or Redis Cluster from the
//! seed nodes in `redis_cluster_urls`. Nothing else changes, because every script and
//! command touches one inbox's keys, which share a slot.
//!
//! # What differs from the memory store
//!
//! - Times come from the calling relay's clock, so with several nodes the node with
//!   the fastest clock decides when a message expires.
//! - `max_store_bytes` is not used: Redis's `maxmemory` is the budget, and a write that
//!   Redis refuses with OOM becomes [`StoreError::RedisFull`]. Evicting policies are
//!   refused by [`guard`] unless `redis_allow_eviction` is set.
//! - `sweep` reports no dropped inboxes: idle inboxes vanish by key expiry, uncounted.

mod fence;
mod guard;
mod ops;
mod scripts;
mod writer;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use redis::cluster_routing::Slot;
use redis::AsyncCommands;
use redis::{Cmd, RedisError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{
    Batch, HistoryLoss, InsertOutcome, MessageStore, StoreError, StoreEvents, StoreLimits,
    StoredMessage, SweepStats,
};
use crate::protocol::{Cursor, Envelope, GapReason, InboxId, VerifiedEnvelope};
use crate::redis_keys::{self, inbox_of, inbox_patterns as patterns};
use crate::redis_link::{RedisLink, RedisTarget};
use fence::{Fence, Place};
use guard::Guard;
use ops::{Insert, Read, ReadKind};
use scripts::{Script, Scripts};
use writer::Writer;

/// What one queued message's payload holds besides its seq.
#[derive(Serialize)]
struct PayloadRef<'a> {
    stored_at_ms: u64,
    envelope: &'a Envelope,
}

#[derive(Deserialize)]
struct Payload {
    stored_at_ms: u64,
    envelope: Envelope,
}

/// How the store uses Redis, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisOptions {
    /// Run on an evicting `maxmemory-policy` anyway (`redis_allow_eviction`).
    pub allow_eviction: bool,
    /// How long a call may take before it fails with 503 (`redis_response_timeout_ms`).
    pub response_timeout: Duration,
    /// Script calls out at once per writer (`redis_calls_in_flight`; see `writer`).
    pub calls_in_flight: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            allow_eviction: false,
            response_timeout: Duration::from_millis(2000),
            calls_in_flight: 1,
        }
    }
}

/// A [`MessageStore`] on one Redis server or a Redis Cluster, shared by every relay
/// node using it. Inserts, and reads with acks, go through two group-commit writers
/// (`writer`); the sweep is one script call per inbox on the shared connection.
pub struct RedisStore {
    inner: Arc<Inner>,
    inserts: Writer<Insert>,
    reads: Writer<Read>,
}

impl std::ops::Deref for RedisStore {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// What the store's calls and its writer task share.
pub struct Inner {
    conn: RedisLink,
    fence: Fence,
    limits: StoreLimits,
    options: RedisOptions,
    guard: Guard,
    /// Messages expired by scripts since the last sweep reported them.
    expired: AtomicU64,
    /// Whether the last sweep found inboxes of the earlier schema (true until a sweep
    /// finds none): once every one is migrated, the sweep and `depth` stop scanning for
    /// them, which costs a `SCAN` of the whole keyspace each.
    legacy_left: AtomicBool,
    events: StoreEvents,
}

/// An `EVALSHA` of `script` with room for its keys and arguments.
fn evalsha(script: &Script, keys: usize) -> Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(&script.sha).arg(keys);
    call
}

/// A script call on the keys of `inbox`, in the scripts' order, with the three
/// arguments every script takes first (see `scripts`).
fn on_inbox(script: &Script, inbox: &InboxId, lossless: &str, keep_ms: u64) -> Cmd {
    let mut call = evalsha(script, PARTS.len());
    for key in redis_keys::inbox_all(inbox) {
        call.arg(key);
    }
    call.arg(new_epoch()).arg(lossless).arg(keep_ms);
    call
}

/// An inbox's keys, in the order every script takes them.
const PARTS: [&str; 3] = redis_keys::INBOX_PARTS;

/// One key of an inbox (see `redis_keys`).
fn key(inbox: &InboxId, part: &str) -> String {
    redis_keys::inbox(inbox, part)
}

/// Epochs are random in [1, 2^53), like the memory store's.
fn new_epoch() -> u64 {
    rand::thread_rng().gen_range(1..(1u64 << 53))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis returned an unexpected reply: {what}"))
}

fn number(field: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("a non-numeric field"))
}

impl RedisStore {
    /// Connects to Redis (`redis://` or `rediss://`, with an optional password; or a
    /// cluster's seed nodes) with the default options and checks it (see [`RedisStore::open`]).
    pub async fn connect(
        target: &RedisTarget,
        limits: StoreLimits,
    ) -> Result<Arc<Self>, StoreError> {
        let options = RedisOptions::default();
        let conn = RedisLink::connect_with_timeout(target, options.response_timeout)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to redis: {e}")))?;
        Ok(Arc::new(Self::open(conn, limits, options).await?))
    }

    /// A store on an existing connection (shared with the rate limits), after checking
    /// the Redis behind it: an evicting `maxmemory-policy` (unless allowed) or a Redis
    /// older than 7.0 is [`StoreError::Misconfigured`].
    pub async fn open(
        conn: RedisLink,
        limits: StoreLimits,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let guard = Guard::new(options.allow_eviction);
        let facts = guard.check(&conn).await?;
        if options.allow_eviction {
            guard::warn_eviction_allowed(&facts);
        }
        let inner = Arc::new(Inner {
            conn,
            fence: Fence::default(),
            limits,
            options,
            guard,
            expired: AtomicU64::new(0),
            legacy_left: AtomicBool::new(true),
            events: StoreEvents::default(),
        });
        Ok(RedisStore {
            inserts: Writer::start(inner.clone()),
            reads: Writer::start(inner.clone()),
            inner,
        })
    }

    /// A read or an ack on `inbox`, batched with whatever else is pending; its part of the
    /// reply.
    async fn reads_op(&self, inbox: &InboxId, kind: ReadKind) -> Result<Vec<Vec<u8>>, StoreError> {
        let keep_ms = self.keep_ms();
        self.reads
            .run(Read {
                inbox: *inbox,
                keep_ms,
                kind,
            })
            .await
    }

    /// A read (batched with others), with an acknowledgement to apply first when `ack` is set.
    async fn read(
        &self,
        inbox: &InboxId,
        ack: Option<Cursor>,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        let fetch = ReadKind::Fetch {
            now_ms,
            after,
            limit,
            ack,
        };
        let reply = self.reads_op(inbox, fetch).await?;
        let [epoch, head, lost_through, acked, expired, lost, rest @ ..] = reply.as_slice() else {
            return Err(corrupt("fetch"));
        };
        self.count_expired(expired)?;
        self.note_loss(inbox, lost)?;
        let (epoch, head) = (number(epoch)?, number(head)?);
        let (lost_through, acked_through) = (number(lost_through)?, number(acked)?);
        // The memory store's `gap_for` and floor, on the same four numbers.
        let gap = match after {
            Some(c) if c.epoch != epoch => Some(GapReason::EpochChanged),
            Some(c) => (lost_through > c.seq).then_some(GapReason::Expired),
            None => (lost_through > acked_through).then_some(GapReason::Expired),
        };
        let floor = match after {
            Some(c) if c.epoch == epoch => c.seq.max(lost_through),
            _ => acked_through.max(lost_through),
        };
        let messages = rest
            .iter()
            .map(|entry| self.decode(entry))
            .collect::<Result<_, _>>()?;
        Ok(Batch {
            epoch,
            gap,
            floor,
            messages,
            head,
        })
    }

    /// Re-checks the Redis behind the store until `stop` (see `guard`); run it as a task.
    pub async fn watch(&self, stop: CancellationToken) {
        self.guard.watch(self.conn.clone(), stop).await
    }
}

impl Inner {
    /// How long an inbox's keys outlive its last write.
    fn keep_ms(&self) -> u64 {
        self.limits.message_ttl_ms + self.limits.dedupe_window_ms
    }

    /// Where `inbox`'s scripts run: its slot on a cluster.
    fn place(&self, inbox: &InboxId) -> Place {
        self.conn
            .is_cluster()
            .then(|| Slot::for_key(key(inbox, "meta")))
    }

    /// Runs the script `pick` chooses on `inbox`'s keys with the common arguments and
    /// then `args`.
    async fn script(
        &self,
        pick: fn(&Scripts) -> &Script,
        inbox: &InboxId,
        keep_ms: u64,
        args: impl Fn(&mut Cmd),
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.eval(self.place(inbox), |scripts, lossless| {
            let mut call = on_inbox(pick(scripts), inbox, lossless, keep_ms);
            args(&mut call);
            call
        })
        .await
    }

    /// Runs the call `build` makes from the scripts of the process serving `place` and
    /// whether the guard verified that process lossless (`ARGV[2]`). A call that meets
    /// another process (`NOSCRIPT`: Redis restarted, failed over, or the slot moved)
    /// changed nothing; the store learns the process and calls again (see `fence`).
    async fn eval(
        &self,
        place: Place,
        build: impl Fn(&Scripts, &str) -> Cmd,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stale = None;
        for _ in 0..3 {
            let scripts = match self.fence.scripts(place) {
                Some(s) if stale.as_ref().is_none_or(|old| !Arc::ptr_eq(old, &s)) => s,
                _ => {
                    self.fence
                        .learn(&self.conn, &self.guard, place, stale.as_ref())
                        .await?
                }
            };
            let lossless = if self.guard.lossless(&scripts.run) {
                "1"
            } else {
                "0"
            };
            let call = build(&scripts, lossless);
            match call.query_async(&mut self.conn.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(e) if e.code() == Some("NOSCRIPT") => stale = Some(scripts),
                Err(e) => return Err(self.failed(e)),
            }
        }
        Err(StoreError::Unavailable(
            "redis lost the store's scripts again right after they were loaded".into(),
        ))
    }

    fn count_expired(&self, field: &[u8]) -> Result<(), StoreError> {
        self.expired.fetch_add(number(field)?, Ordering::Relaxed);
        Ok(())
    }

    /// Reports what a script noticed about the inbox's history (empty: nothing).
    fn note_loss(&self, inbox: &InboxId, field: &[u8]) -> Result<(), StoreError> {
        if field.is_empty() {
            return Ok(());
        }
        let reason = HistoryLoss::from_label(field).ok_or_else(|| corrupt("a loss reason"))?;
        self.events.history_lost(inbox, reason);
        Ok(())
    }

    /// One `queue` member: `<seq> <expires-at> <payload>`.
    fn decode(&self, entry: &[u8]) -> Result<StoredMessage, StoreError> {
        let mut parts = entry.splitn(3, |b| *b == b' ');
        let (Some(seq), Some(_expires_at), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt("a queue entry"));
        };
        let payload: Payload =
            rmp_serde::from_slice(payload).map_err(|_| corrupt("an undecodable message"))?;
        Ok(StoredMessage {
            seq: number(seq)?,
            id: payload.envelope.id(),
            envelope: Arc::new(payload.envelope),
            stored_at_ms: payload.stored_at_ms,
        })
    }

    /// Maps a Redis failure to the store's error, keeping Redis's words in it.
    fn failed(&self, e: RedisError) -> StoreError {
        if e.code() == Some("OOM") {
            self.events.full();
            self.guard.note_full();
            return StoreError::RedisFull;
        }
        self.guard.poke();
        StoreError::Unavailable(format!("redis: {e}"))
    }

    /// Keys matching `pattern`, gathered with SCAN (never KEYS), from every master of
    /// a cluster.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        self.conn
            .scan_match(pattern)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Every inbox's key `part`, both namespaces (see [`Inner::scan`]).
    async fn scan_part(&self, part: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for pattern in patterns(part) {
            keys.extend(self.scan(&pattern).await?);
        }
        Ok(keys)
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn insert(
        &self,
        message: &VerifiedEnvelope,
        now_ms: u64,
    ) -> Result<InsertOutcome, StoreError> {
        if let Some(why) = self.guard.refusal() {
            return Err(StoreError::Misconfigured(why));
        }
        let envelope = message.envelope();
        let payload = rmp_serde::to_vec_named(&PayloadRef {
            stored_at_ms: now_ms,
            envelope,
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot encode a message: {e}")))?;
        let forget_at = envelope.timestamp.max(now_ms) + self.limits.dedupe_window_ms;
        let cap = self.limits.max_messages_per_inbox;
        let insert = Insert {
            inbox: message.inbox(),
            // The dedupe id may be remembered past `keep_ms` by the envelope's skew.
            keep_ms: self.keep_ms().max(forget_at - now_ms),
            id: message.id().to_hex(),
            forget_at,
            now_ms,
            expires_at: now_ms + self.limits.message_ttl_ms,
            cap,
            payload,
            deadline: self.guard.deadline_ms(self.options.response_timeout),
        };
        let reply = self.inserts.run(insert).await?;
        let [status, epoch, seq, expired, lost] = reply.as_slice() else {
            return Err(corrupt("insert"));
        };
        self.note_loss(&message.inbox(), lost)?;
        // Whatever the answer: a full inbox may have expired messages before refusing.
        self.count_expired(expired)?;
        match status.as_slice() {
            b"stored" => Ok(InsertOutcome::Stored {
                epoch: number(epoch)?,
                seq: number(seq)?,
            }),
            b"dup" => Ok(InsertOutcome::Duplicate),
            b"full" => Err(StoreError::InboxFull { cap }),
            b"late" => Err(StoreError::Unavailable(format!(
                "redis ran the insert after its {} ms deadline; nothing was stored",
                self.options.response_timeout.as_millis()
            ))),
            _ => Err(corrupt("insert status")),
        }
    }

    async fn fetch(
        &self,
        inbox: &InboxId,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        self.read(inbox, None, after, limit, now_ms).await
    }

    async fn ack_and_fetch(
        &self,
        inbox: &InboxId,
        through: Cursor,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        self.read(inbox, Some(through), after, limit, now_ms).await
    }

    async fn ack(&self, inbox: &InboxId, through: Cursor) -> Result<u64, StoreError> {
        let reply = self.reads_op(inbox, ReadKind::Ack { through }).await?;
        let [status, n, lost] = reply.as_slice() else {
            return Err(corrupt("ack"));
        };
        self.note_loss(inbox, lost)?;
        match status.as_slice() {
            b"ok" => number(n),
            b"stale" => Ok(0),
            _ => Err(corrupt("ack status")),
        }
    }

    async fn sweep(&self, now_ms: u64) -> Result<SweepStats, StoreError> {
        let mut expired = 0;
        let mut keys = self.scan_part(PARTS[1]).await?;
        // The earlier schema's `:m`, not `:exp`: an inbox whose `exp` was evicted still
        // holds messages. An inbox found twice (both schemas) is expired twice: no harm.
        // Once a sweep finds none, none come back but from a relay of the earlier schema
        // still running, which the scripts notice and report on the inbox's next insert
        // or read (`mixed_versions`).
        if self.legacy_left.load(Ordering::Relaxed) {
            let [_, payloads, _] = redis_keys::LEGACY_PARTS;
            let legacy = self.scan_part(payloads).await?;
            self.legacy_left
                .store(!legacy.is_empty(), Ordering::Relaxed);
            keys.extend(legacy);
        }
        for key in keys {
            let Some(inbox) = inbox_of(&key) else {
                continue;
            };
            let reply = self
                .script(
                    |s| &s.expire,
                    &inbox,
                    self.keep_ms(),
                    |call| {
                        call.arg(now_ms);
                    },
                )
                .await?;
            let [n, lost] = reply.as_slice() else {
                return Err(corrupt("expire"));
            };
            self.note_loss(&inbox, lost)?;
            expired += number(n)?;
        }
        Ok(SweepStats {
            expired: self.expired.swap(0, Ordering::Relaxed) + expired,
            // Idle inboxes vanish by Redis key expiry, uncounted.
            inboxes_dropped: 0,
        })
    }

    /// Readiness: Redis answers a PING, and nothing found it misconfigured.
    async fn check(&self) -> Result<(), StoreError> {
        if let Some(why) = self.guard.refusal() {
            return Err(StoreError::Misconfigured(why));
        }
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Messages queued in every inbox on this Redis, expired-but-unswept included (as
    /// in the memory store).
    async fn depth(&self) -> Result<u64, StoreError> {
        let mut keys = self.scan_part(PARTS[1]).await?;
        // The earlier schema's `:q` holds messages not yet migrated.
        if self.legacy_left.load(Ordering::Relaxed) {
            let [order, _, _] = redis_keys::LEGACY_PARTS;
            keys.extend(self.scan_part(order).await?);
        }
        // One ZCARD per inbox, many in flight: each key may live on another cluster
        // master, so no cross-slot pipeline; the multiplexed connection batches them.
        let sizes: Vec<u64> = futures::stream::iter(keys)
            .map(|key| {
                let mut conn = self.conn.clone();
                async move { conn.zcard::<_, u64>(key).await }
            })
            .buffer_unordered(64)
            .try_collect()
            .await
            .map_err(|e| self.failed(e))?;
        Ok(sizes.iter().sum())
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn events(&self) -> &StoreEvents {
        &self.events
    }

    fn kind(&self) -> &'static str {
        if self.conn.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}
