//! The Redis store: queued messages survive a relay restart and are shared by every
//! relay node on the same Redis.
//!
//! # Key schema
//!
//! Every key of one inbox carries the inbox's public key (hex) as a Redis Cluster hash
//! tag, so all of them live in one slot and each Lua script touches one slot only:
//!
//! | key                       | type       | content                                      |
//! |---------------------------|------------|----------------------------------------------|
//! | `whispr:{<inbox>}:meta`   | hash       | `epoch`, `head`, `lost`, `acked`             |
//! | `whispr:{<inbox>}:q`      | sorted set | member = seq (decimal), score = seq          |
//! | `whispr:{<inbox>}:m`      | hash       | seq -> MessagePack `{stored_at_ms, envelope}`|
//! | `whispr:{<inbox>}:exp`    | sorted set | member = seq, score = expires-at (Unix ms)   |
//! | `whispr:{<inbox>}:ids`    | sorted set | member = message id hex, score = forget-at   |
//!
//! Sorted sets scored by a per-inbox counter (as Signal-Server does) rather than Streams:
//! the relay's cursor is `(epoch, seq)` with seqs counting up by one, which a counter
//! gives directly, and acks delete "everything through seq", one `ZRANGEBYSCORE`.
//!
//! # Atomicity
//!
//! Four Lua scripts (insert, fetch, ack, and the sweep's expire) each run atomically on
//! the inbox's slot. Each first expires the inbox's front (`lost` rises to the highest
//! expired seq) and forgets dedupe ids past their window, and insert and fetch create
//! `meta` with a fresh random epoch (chosen in Rust, in [1, 2^53)) when it is missing.
//! `ack` takes no clock (the trait gives it none), so it does not expire anything.
//! The gap and floor rules are computed in Rust from `epoch`, `lost` and `acked`, the
//! same expressions as the memory store's, so both stores answer alike.
//!
//! # TTL strategy
//!
//! Message TTL and the dedupe window are enforced by the scores above, checked against
//! the relay's clock (never Redis's), so tests with a manual clock behave as in memory.
//! Redis key expiry only removes idle inboxes: every insert extends every key of the
//! inbox to live at least `message TTL + dedupe window` longer (never shortening a
//! longer life), so every message and remembered id is gone before its inbox's keys;
//! a fetch that creates an inbox's `meta` gives it that life too. Acks and other
//! fetches only remove or read, so they leave the lives alone (extending on every read
//! and ack cost more Redis time than the rest of those scripts). An inbox that vanished comes back with a new epoch, and a reader with
//! the old cursor is told of an epoch change, like the memory store's idle drop.
//!
//! # Sweep and depth
//!
//! Expiry found by scripts is counted in an `AtomicU64` and reported by the next sweep.
//! The sweep also `SCAN`s the `:exp` keys (only inboxes holding messages have one) and
//! expires each, because a message nobody reads again must still be reported as
//! expired (the conformance suite checks this, and checks `depth` after an ack, which
//! is why neither is left at zero). `depth` `SCAN`s the `:q` keys and sums
//! their sizes with one `ZCARD` each (many in flight; no pipeline, since on a cluster
//! the keys live on different masters). The sweep costs one round trip per inbox
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
//!   Redis refuses with OOM becomes [`StoreError::StoreFull`] (with budget 0).
//! - `sweep` reports no dropped inboxes: idle inboxes vanish by key expiry, uncounted.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use redis::AsyncCommands;
use redis::{FromRedisValue, RedisError, Script, ScriptInvocation};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    Batch, InsertOutcome, MessageStore, StoreError, StoreLimits, StoredMessage, SweepStats,
};
use crate::protocol::{Cursor, Envelope, GapReason, PublicKey, VerifiedEnvelope};
use crate::redis_link::{RedisLink, RedisTarget};

/// Shared by every script: names the keys and defines `open`, `remove`, `expire`, `keep`.
const PRELUDE: &str = r#"
local meta, q, m, exp, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function int(n) return string.format('%d', n) end
local function open(new_epoch)
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'epoch', new_epoch, 'head', '0', 'lost', '0', 'acked', '0')
    return true
  end
  return false
end
local function remove(seqs)
  for i = 1, #seqs, 1000 do
    local chunk = {unpack(seqs, i, math.min(i + 999, #seqs))}
    redis.call('ZREM', q, unpack(chunk))
    redis.call('HDEL', m, unpack(chunk))
    redis.call('ZREM', exp, unpack(chunk))
  end
end
local function expire(now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  if #gone > 0 then
    remove(gone)
    local lost = tonumber(redis.call('HGET', meta, 'lost') or '0')
    for _, s in ipairs(gone) do lost = math.max(lost, tonumber(s)) end
    redis.call('HSET', meta, 'lost', int(lost))
  end
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', now)
  return #gone
end
local function keep(ttl_ms)
  for _, k in ipairs(KEYS) do
    local left = redis.call('PTTL', k)
    if left == -1 or (left >= 0 and left < ttl_ms) then
      redis.call('PEXPIRE', k, ttl_ms)
    end
  end
end
"#;

/// ARGV: id, forget_at, now, expires_at, cap, payload, keep_ms, new_epoch.
/// Returns {status, epoch, seq, expired}.
const INSERT: &str = r#"
open(ARGV[8])
local expired = expire(ARGV[3])
local epoch = redis.call('HGET', meta, 'epoch')
if redis.call('ZSCORE', ids, ARGV[1]) then
  keep(tonumber(ARGV[7]))
  return {'dup', epoch, '0', int(expired)}
end
if redis.call('ZCARD', q) >= tonumber(ARGV[5]) then
  keep(tonumber(ARGV[7]))
  return {'full', epoch, '0', int(expired)}
end
local seq = int(redis.call('HINCRBY', meta, 'head', 1))
redis.call('ZADD', q, seq, seq)
redis.call('HSET', m, seq, ARGV[6])
redis.call('ZADD', exp, ARGV[4], seq)
redis.call('ZADD', ids, ARGV[2], ARGV[1])
keep(tonumber(ARGV[7]))
return {'stored', epoch, seq, int(expired)}
"#;

/// ARGV: now, cursor epoch ('' for none), cursor seq, limit, new_epoch, keep_ms.
/// Returns {epoch, head, lost, acked, expired, seq1, payload1, seq2, payload2, ...}.
const FETCH: &str = r#"
if open(ARGV[5]) then keep(tonumber(ARGV[6])) end
local expired = expire(ARGV[1])
local v = redis.call('HMGET', meta, 'epoch', 'head', 'lost', 'acked')
local low = v[3]
if ARGV[2] == v[1] then
  if tonumber(ARGV[3]) > tonumber(low) then low = ARGV[3] end
elseif tonumber(v[4]) > tonumber(low) then
  low = v[4]
end
local out = {v[1], v[2], v[3], v[4], int(expired)}
local seqs = redis.call('ZRANGEBYSCORE', q, '(' .. low, '+inf', 'LIMIT', 0, tonumber(ARGV[4]))
for _, s in ipairs(seqs) do
  local p = redis.call('HGET', m, s)
  if p then
    table.insert(out, s)
    table.insert(out, p)
  end
end
return out
"#;

/// ARGV: epoch, seq. Returns {status, removed count or head}.
const ACK: &str = r#"
if redis.call('EXISTS', meta) == 0 then return {'stale', '0'} end
local v = redis.call('HMGET', meta, 'epoch', 'head', 'acked')
if v[1] ~= ARGV[1] then return {'stale', '0'} end
if tonumber(ARGV[2]) > tonumber(v[2]) then return {'ahead', v[2]} end
if tonumber(ARGV[2]) > tonumber(v[3]) then redis.call('HSET', meta, 'acked', ARGV[2]) end
local gone = redis.call('ZRANGEBYSCORE', q, '-inf', ARGV[2])
remove(gone)
return {'ok', int(#gone)}
"#;

/// ARGV: now. Returns the number expired.
const EXPIRE: &str = r#"
if redis.call('EXISTS', meta) == 0 then return '0' end
return int(expire(ARGV[1]))
"#;

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

struct Scripts {
    insert: Script,
    fetch: Script,
    ack: Script,
    expire: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            insert: with_prelude(INSERT),
            fetch: with_prelude(FETCH),
            ack: with_prelude(ACK),
            expire: with_prelude(EXPIRE),
        }
    }
}

/// A [`MessageStore`] on one Redis server or a Redis Cluster, shared by every relay
/// node using it.
pub struct RedisStore {
    conn: RedisLink,
    scripts: Scripts,
    limits: StoreLimits,
    /// Messages expired by scripts since the last sweep reported them.
    expired: AtomicU64,
}

/// A script call on the five keys of the inbox tagged `tag`, in the scripts' order.
fn on_inbox<'a>(script: &'a Script, tag: &str) -> ScriptInvocation<'a> {
    let mut call = script.prepare_invoke();
    for part in ["meta", "q", "m", "exp", "ids"] {
        call.key(key(tag, part));
    }
    call
}

/// One key of an inbox: the tag in braces makes Redis Cluster hash only the tag.
fn key(tag: &str, part: &str) -> String {
    format!("whispr:{{{tag}}}:{part}")
}

/// The inbox's hash tag in one of its keys, e.g. `whispr:{ab12..}:exp`.
fn tag_of(key: &str) -> Option<&str> {
    Some(key.strip_prefix("whispr:{")?.split_once('}')?.0)
}

/// Epochs are random in [1, 2^53), like the memory store's.
fn new_epoch() -> u64 {
    rand::thread_rng().gen_range(1..(1u64 << 53))
}

/// Maps a Redis failure to the store's error, keeping Redis's words in it.
fn failed(e: RedisError) -> StoreError {
    if e.code() == Some("OOM") {
        tracing::warn!(error = %e, "redis is out of memory (maxmemory); refusing writes");
        return StoreError::StoreFull { budget: 0 };
    }
    StoreError::Unavailable(format!("redis: {e}"))
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
    /// cluster's seed nodes) and checks with PING. Reconnects by itself later if the
    /// connection drops.
    pub async fn connect(
        target: &RedisTarget,
        limits: StoreLimits,
    ) -> Result<Arc<Self>, StoreError> {
        let conn = RedisLink::connect(target)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to redis: {e}")))?;
        Ok(Arc::new(Self::on(conn, limits)))
    }

    /// A store on an existing connection (shared with the rate limits).
    pub fn on(conn: RedisLink, limits: StoreLimits) -> Self {
        RedisStore {
            conn,
            scripts: Scripts::new(),
            limits,
            expired: AtomicU64::new(0),
        }
    }

    /// How long an inbox's keys outlive its last write.
    fn keep_ms(&self) -> u64 {
        self.limits.message_ttl_ms + self.limits.dedupe_window_ms
    }

    fn count_expired(&self, field: &[u8]) -> Result<(), StoreError> {
        self.expired.fetch_add(number(field)?, Ordering::Relaxed);
        Ok(())
    }

    fn decode(&self, seq: &[u8], payload: &[u8]) -> Result<StoredMessage, StoreError> {
        let payload: Payload =
            rmp_serde::from_slice(payload).map_err(|_| corrupt("an undecodable message"))?;
        Ok(StoredMessage {
            seq: number(seq)?,
            id: payload.envelope.id(),
            envelope: Arc::new(payload.envelope),
            stored_at_ms: payload.stored_at_ms,
        })
    }

    /// Runs a script call on a clone of the shared, self-reconnecting connection.
    async fn run<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        call.invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)
    }

    /// Keys matching `pattern`, gathered with SCAN (never KEYS), from every master of
    /// a cluster.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        self.conn.scan_match(pattern).await.map_err(failed)
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn insert(
        &self,
        message: &VerifiedEnvelope,
        now_ms: u64,
    ) -> Result<InsertOutcome, StoreError> {
        let envelope = message.envelope();
        let payload = rmp_serde::to_vec_named(&PayloadRef {
            stored_at_ms: now_ms,
            envelope,
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot encode a message: {e}")))?;
        let forget_at = envelope.timestamp.max(now_ms) + self.limits.dedupe_window_ms;
        let cap = self.limits.max_messages_per_inbox;
        let mut call = on_inbox(&self.scripts.insert, &message.recipient().to_hex());
        call.arg(message.id().to_hex())
            .arg(forget_at)
            .arg(now_ms)
            .arg(now_ms + self.limits.message_ttl_ms)
            .arg(cap)
            .arg(payload)
            // The dedupe id may be remembered past `keep_ms` by the envelope's skew.
            .arg(self.keep_ms().max(forget_at - now_ms))
            .arg(new_epoch());
        let reply: Vec<Vec<u8>> = self.run(&call).await?;
        let [status, epoch, seq, expired] = reply.as_slice() else {
            return Err(corrupt("insert"));
        };
        self.count_expired(expired)?;
        match status.as_slice() {
            b"stored" => Ok(InsertOutcome::Stored {
                epoch: number(epoch)?,
                seq: number(seq)?,
            }),
            b"dup" => Ok(InsertOutcome::Duplicate),
            b"full" => Err(StoreError::InboxFull { cap }),
            _ => Err(corrupt("insert status")),
        }
    }

    async fn fetch(
        &self,
        inbox: &PublicKey,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        let mut call = on_inbox(&self.scripts.fetch, &inbox.to_hex());
        call.arg(now_ms)
            .arg(after.map(|c| c.epoch.to_string()).unwrap_or_default())
            .arg(after.map_or(0, |c| c.seq))
            // Lua numbers are doubles: a larger LIMIT would not print as an integer.
            .arg(limit.min(u32::MAX as usize))
            .arg(new_epoch())
            .arg(self.keep_ms());
        let reply: Vec<Vec<u8>> = self.run(&call).await?;
        let [epoch, head, lost, acked, expired, rest @ ..] = reply.as_slice() else {
            return Err(corrupt("fetch"));
        };
        self.count_expired(expired)?;
        let (epoch, head) = (number(epoch)?, number(head)?);
        let (lost_through, acked_through) = (number(lost)?, number(acked)?);
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
            .chunks(2)
            .map(|pair| match pair {
                [seq, payload] => self.decode(seq, payload),
                _ => Err(corrupt("fetch pairs")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Batch {
            epoch,
            gap,
            floor,
            messages,
            head,
        })
    }

    async fn ack(&self, inbox: &PublicKey, through: Cursor) -> Result<u64, StoreError> {
        let mut call = on_inbox(&self.scripts.ack, &inbox.to_hex());
        call.arg(through.epoch.to_string()).arg(through.seq);
        let reply: Vec<Vec<u8>> = self.run(&call).await?;
        let [status, n] = reply.as_slice() else {
            return Err(corrupt("ack"));
        };
        match status.as_slice() {
            b"ok" => number(n),
            b"stale" => Ok(0),
            b"ahead" => Err(StoreError::CursorAhead {
                seq: through.seq,
                head: number(n)?,
            }),
            _ => Err(corrupt("ack status")),
        }
    }

    async fn sweep(&self, now_ms: u64) -> Result<SweepStats, StoreError> {
        let mut expired = 0;
        for key in self.scan("whispr:{*}:exp").await? {
            let Some(tag) = tag_of(&key) else {
                continue;
            };
            let mut call = on_inbox(&self.scripts.expire, tag);
            call.arg(now_ms);
            let n: Vec<u8> = self.run(&call).await?;
            expired += number(&n)?;
        }
        Ok(SweepStats {
            expired: self.expired.swap(0, Ordering::Relaxed) + expired,
            // Idle inboxes vanish by Redis key expiry, uncounted.
            inboxes_dropped: 0,
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Messages queued in every inbox on this Redis, expired-but-unswept included (as
    /// in the memory store).
    async fn depth(&self) -> Result<u64, StoreError> {
        let keys = self.scan("whispr:{*}:q").await?;
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
            .map_err(failed)?;
        Ok(sizes.iter().sum())
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let inbox = PublicKey::from_bytes([7; 32]).to_hex();
        assert_eq!(key(&inbox, "meta"), format!("whispr:{{{inbox}}}:meta"));
        for part in ["meta", "q", "m", "exp", "ids"] {
            assert_eq!(tag_of(&key(&inbox, part)), Some(inbox.as_str()));
        }
        assert_eq!(tag_of("other:key"), None);
    }
}
