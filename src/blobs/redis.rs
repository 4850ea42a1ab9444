//! The Redis blob store, used when the message store is Redis (same `redis_url`, its
//! own connection), so every relay node sees every attachment.
//!
//! # Key schema
//!
//! One hash per blob, `whispr:blob:{<sha256 hex>}` (the id as a Redis Cluster hash
//! tag, so the key has one slot), with three fields:
//!
//! | field  | content                                        |
//! |--------|------------------------------------------------|
//! | `meta` | MessagePack [`BlobMeta`]                       |
//! | `data` | the blob's bytes                               |
//! | `exp`  | expires-at, Unix ms (decimal), the relay clock |
//!
//! # Atomicity and TTL
//!
//! `put` is one Lua script: if the key exists and its `exp` is after `now`, it answers
//! the stored `meta` (Rust then tells a retry from another uploader); otherwise it
//! replaces the hash and sets `PEXPIRE` to the blob's remaining life. So two relays
//! racing on one id store it once (SET NX semantics) and a retry never extends a life.
//! `get` compares `exp` with the relay's clock, like the message store, so tests with a
//! manual clock expire blobs as in memory; Redis key expiry reclaims the memory.
//!
//! # Budget
//!
//! No byte budget of its own: Redis's `maxmemory` is the budget, and a write Redis
//! refuses with OOM is [`BlobError::StoreFull`] (budget 0). `sweep` has nothing to do.
//!
//! # Per-sender limit
//!
//! Each sender's unexpired bytes are counted in two keys with the sender's key as hash
//! tag: `whispr:blobq:{<sender hex>}`, a sorted set of `<len>:<sha256>` scored by the
//! blob's expiry (relay clock), and `whispr:blobq:{<sender hex>}:bytes`, their sum.
//! Both expire with the sender's last blob. A put first runs [`COUNT`] on them (drop
//! what expired, refuse over `max_sender_bytes`, else add the blob), then the blob's own
//! script, and takes the count back ([`UNCOUNT`]) when the blob was not stored. The
//! blob and the count live in different slots, so they cannot change in one script:
//! a relay that dies between the two calls, or a failed take-back, leaves a sender
//! counted for bytes it does not hold until that entry's expiry (at most
//! `attachment_ttl_seconds`), and two racing uploads of one retry can leave one blob
//! uncounted. The limit is a fairness bound, so this small imprecision is accepted.

use async_trait::async_trait;
use axum::body::Bytes;
use redis::{RedisError, Script};
use std::sync::Arc;
use std::time::Duration;

use crate::redis_link::{RedisLink, RedisTarget};

use super::{Blob, BlobError, BlobId, BlobLimits, BlobMeta, BlobStore, PutOutcome};

/// KEYS: blob. ARGV: now, expires_at, meta, data, ttl_ms.
/// Returns the existing meta when an unexpired blob is there, else nil after storing.
const PUT: &str = r#"#!lua
local exp = redis.call('HGET', KEYS[1], 'exp')
if exp and tonumber(exp) > tonumber(ARGV[1]) then
  return redis.call('HGET', KEYS[1], 'meta')
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'meta', ARGV[3], 'data', ARGV[4], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return false
"#;

/// KEYS: the sender's blobs (sorted set), their byte sum. ARGV: now, len, member,
/// expires_at, limit. Drops the entries that expired by `now` from both, then counts
/// `member` (`<len>:<sha256>`) unless it is counted already.
/// Returns 1 when counted now, 0 when it was counted already, -1 when over `limit`.
const COUNT: &str = r#"#!lua
local now = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(gone) do
  used = used - tonumber(string.match(m, '^(%d+):'))
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
if used < 0 then used = 0 end
local answer
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  answer = 0
elseif used + tonumber(ARGV[2]) > tonumber(ARGV[5]) then
  answer = -1
else
  used = used + tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  answer = 1
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  local ttl = math.max(tonumber(last[2]) - now, 1)
  redis.call('SET', KEYS[2], used, 'PX', ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return answer
"#;

/// KEYS: as [`COUNT`]. ARGV: member, len. Takes back a count whose blob was not stored.
const UNCOUNT: &str = r#"#!lua flags=allow-oom
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('DECRBY', KEYS[2], ARGV[2]) <= 0 then
    redis.call('DEL', KEYS[2])
  end
end
return 0
"#;

/// A [`BlobStore`] on Redis (one server or a cluster: each blob is one key).
pub struct RedisBlobs {
    conn: RedisLink,
    put: Script,
    count: Script,
    uncount: Script,
    limits: BlobLimits,
}

fn key(id: &BlobId) -> String {
    crate::redis_keys::blob(id)
}

/// The keys of a sender's count: its blobs and their byte sum, one hash tag (one slot).
fn quota_keys(from: &str) -> [String; 2] {
    crate::redis_keys::blob_quota(from)
}

/// A blob's member in its sender's count.
fn quota_member(blob: &Blob) -> String {
    format!(
        "{}:{}",
        blob.data.len(),
        blob.meta.sha256.to_ascii_lowercase()
    )
}

/// Maps a Redis failure to the store's error, keeping Redis's words in it.
fn failed(e: RedisError) -> BlobError {
    if e.code() == Some("OOM") {
        tracing::warn!(error = %e, "redis is out of memory (maxmemory); refusing attachments");
        return BlobError::RedisFull;
    }
    BlobError::Unavailable(format!("redis: {e}"))
}

fn corrupt(what: &str) -> BlobError {
    BlobError::Unavailable(format!("redis returned an unexpected attachment: {what}"))
}

impl RedisBlobs {
    /// Connects to Redis (one server or a cluster, as the message store) on its own
    /// connection, so a large upload never queues the message store's commands behind
    /// it, and checks with PING; reconnects by itself later.
    pub async fn connect(target: &RedisTarget, limits: BlobLimits) -> Result<Arc<Self>, BlobError> {
        // Uploads carry up to `attachment_max_size_bytes`, so the response timeout is
        // longer than the message store's.
        let conn = RedisLink::connect_with_timeout(target, Duration::from_secs(30))
            .await
            .map_err(|e| BlobError::Unavailable(format!("cannot connect to redis: {e}")))?;
        let store = RedisBlobs {
            conn,
            put: Script::new(PUT),
            count: Script::new(COUNT),
            uncount: Script::new(UNCOUNT),
            limits,
        };
        store.check().await?;
        Ok(Arc::new(store))
    }
}

impl RedisBlobs {
    /// Counts `blob` against its sender's limit: `Ok(true)` when counted now (to take
    /// back if it is not stored), `Ok(false)` when it was counted already (a retry).
    async fn count(&self, blob: &Blob, now_ms: u64) -> Result<bool, BlobError> {
        let answer: i64 = self
            .count
            .key(&quota_keys(&blob.meta.from))
            .arg(now_ms)
            .arg(blob.data.len())
            .arg(quota_member(blob))
            .arg(blob.meta.expires_ms)
            .arg(self.limits.max_sender_bytes)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        match answer {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(BlobError::SenderFull {
                limit: self.limits.max_sender_bytes,
            }),
        }
    }

    /// Takes back a count whose blob was not stored. A failure leaves the count high
    /// until the sender's entry expires; it is logged, not answered.
    async fn uncount(&self, blob: &Blob) {
        let result: Result<i64, RedisError> = self
            .uncount
            .key(&quota_keys(&blob.meta.from))
            .arg(quota_member(blob))
            .arg(blob.data.len())
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not take back an attachment's count against its sender");
        }
    }

    /// The blob's own key: stored, or the record of the unexpired one already there.
    async fn put_blob(
        &self,
        id: &BlobId,
        blob: Blob,
        now_ms: u64,
    ) -> Result<PutOutcome, BlobError> {
        let meta = rmp_serde::to_vec_named(&blob.meta)
            .map_err(|e| BlobError::Unavailable(format!("encoding a blob record: {e}")))?;
        let ttl_ms = blob.meta.expires_ms.saturating_sub(now_ms).max(1);
        let existing: Option<Vec<u8>> = self
            .put
            .key(key(id))
            .arg(now_ms)
            .arg(blob.meta.expires_ms)
            .arg(meta)
            .arg(blob.data.as_ref())
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        let Some(existing) = existing else {
            return Ok(PutOutcome::Stored(blob.meta));
        };
        let old: BlobMeta =
            rmp_serde::from_slice(&existing).map_err(|_| corrupt("an undecodable record"))?;
        let old = Blob {
            meta: old,
            data: Bytes::new(),
        };
        if old.same_upload(&blob.meta) {
            Ok(PutOutcome::Existing(old.meta))
        } else {
            Err(BlobError::Taken)
        }
    }
}

#[async_trait]
impl BlobStore for RedisBlobs {
    async fn put(&self, blob: Blob, now_ms: u64) -> Result<PutOutcome, BlobError> {
        self.limits.check_size(blob.data.len() as u64)?;
        let id = blob
            .id()
            .ok_or_else(|| BlobError::Unavailable("a blob without a sha256 id".into()))?;
        let counted = self.count(&blob, now_ms).await?;
        // `Bytes` clones share the data; the copy is kept only to take the count back.
        let result = self.put_blob(&id, blob.clone(), now_ms).await;
        if counted && !matches!(result, Ok(PutOutcome::Stored(_))) {
            self.uncount(&blob).await;
        }
        result
    }

    async fn get(&self, id: &BlobId, now_ms: u64) -> Result<Option<Blob>, BlobError> {
        let (meta, data, exp): (Option<Vec<u8>>, Option<Vec<u8>>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(key(id))
                .arg("meta")
                .arg("data")
                .arg("exp")
                .query_async(&mut self.conn.clone())
                .await
                .map_err(failed)?;
        let (Some(meta), Some(data), Some(exp)) = (meta, data, exp) else {
            return Ok(None);
        };
        if exp <= now_ms {
            return Ok(None);
        }
        let meta: BlobMeta =
            rmp_serde::from_slice(&meta).map_err(|_| corrupt("an undecodable record"))?;
        Ok(Some(Blob {
            meta,
            data: Bytes::from(data),
        }))
    }

    async fn sweep(&self, _now_ms: u64) -> Result<u64, BlobError> {
        // Redis key expiry removes them; a get never answers an expired one.
        Ok(0)
    }

    async fn check(&self) -> Result<(), BlobError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt("PING did not answer PONG"))
        }
    }

    fn stored_bytes(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_tagged_by_the_id() {
        let id = BlobId::of(b"abc");
        assert_eq!(key(&id), format!("whispr:blob:{{{}}}", id.to_hex()));
    }
}
