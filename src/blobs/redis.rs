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

use async_trait::async_trait;
use axum::body::Bytes;
use redis::{RedisError, Script};
use std::sync::Arc;
use std::time::Duration;

use crate::redis_link::{RedisLink, RedisTarget};

use super::{Blob, BlobError, BlobId, BlobLimits, BlobMeta, BlobStore, PutOutcome};

/// KEYS: blob. ARGV: now, expires_at, meta, data, ttl_ms.
/// Returns the existing meta when an unexpired blob is there, else nil after storing.
const PUT: &str = r#"
local exp = redis.call('HGET', KEYS[1], 'exp')
if exp and tonumber(exp) > tonumber(ARGV[1]) then
  return redis.call('HGET', KEYS[1], 'meta')
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'meta', ARGV[3], 'data', ARGV[4], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return false
"#;

/// A [`BlobStore`] on Redis (one server or a cluster: each blob is one key).
pub struct RedisBlobs {
    conn: RedisLink,
    put: Script,
    limits: BlobLimits,
}

fn key(id: &BlobId) -> String {
    format!("whispr:blob:{{{id}}}")
}

/// Maps a Redis failure to the store's error, keeping Redis's words in it.
fn failed(e: RedisError) -> BlobError {
    if e.code() == Some("OOM") {
        tracing::warn!(error = %e, "redis is out of memory (maxmemory); refusing attachments");
        return BlobError::StoreFull { budget: 0 };
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
            limits,
        };
        store.check().await?;
        Ok(Arc::new(store))
    }
}

#[async_trait]
impl BlobStore for RedisBlobs {
    async fn put(&self, blob: Blob, now_ms: u64) -> Result<PutOutcome, BlobError> {
        self.limits.check_size(blob.data.len() as u64)?;
        let id = blob
            .id()
            .ok_or_else(|| BlobError::Unavailable("a blob without a sha256 id".into()))?;
        let meta = rmp_serde::to_vec_named(&blob.meta)
            .map_err(|e| BlobError::Unavailable(format!("encoding a blob record: {e}")))?;
        let ttl_ms = blob.meta.expires_ms.saturating_sub(now_ms).max(1);
        let existing: Option<Vec<u8>> = self
            .put
            .key(key(&id))
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
