//! The in-process blob store: a map from id to blob under one mutex, with a global
//! byte budget.
//!
//! Accounting: each blob costs its length plus its record's strings plus a fixed
//! [`OVERHEAD`] (map entry, `Arc`s, the record's numbers), counted when stored and
//! released when it expires; its length alone also counts against its sender's
//! `max_sender_bytes` until then. A put that does not fit first drops whatever has expired
//! (so an unswept expired blob never blocks an upload) and then, if it still does not
//! fit, is refused: unexpired blobs are never evicted to make room. Expired blobs are
//! dropped by the relay's periodic sweep, by a get that finds one, and by a put that
//! needs room. An index ordered by expiry makes each of those cost only what it drops,
//! so a stream of refused uploads to a full store does not scan every blob. The lock
//! is held only for map operations, never across an await.

use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Blob, BlobError, BlobId, BlobLimits, BlobStore, PutOutcome};

/// Bytes charged per blob besides its data and strings.
pub const OVERHEAD: usize = 256;

/// What a blob costs against the budget.
fn cost(blob: &Blob) -> usize {
    let m = &blob.meta;
    blob.data.len()
        + m.sha256.len()
        + m.name.len()
        + m.from.len()
        + m.to.len()
        + m.enc_pub.len()
        + OVERHEAD
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<BlobId, Arc<Blob>>,
    /// (expires_ms, id) of every blob in `blobs`.
    by_expiry: BTreeSet<(u64, BlobId)>,
    used: usize,
    /// Data bytes of every sender's blobs in `blobs`, by the sender's key (lowercase
    /// hex); a sender with none has no entry.
    by_sender: HashMap<String, usize>,
}

/// The key a blob is counted under in `by_sender`.
fn sender(blob: &Blob) -> String {
    blob.meta.from.to_ascii_lowercase()
}

impl Inner {
    fn insert(&mut self, id: BlobId, blob: Blob) {
        self.used += cost(&blob);
        *self.by_sender.entry(sender(&blob)).or_default() += blob.data.len();
        self.by_expiry.insert((blob.meta.expires_ms, id));
        self.blobs.insert(id, Arc::new(blob));
    }

    fn remove(&mut self, id: &BlobId) {
        if let Some(blob) = self.blobs.remove(id) {
            self.used -= cost(&blob);
            let key = sender(&blob);
            if let Some(held) = self.by_sender.get_mut(&key) {
                *held -= blob.data.len();
                if *held == 0 {
                    self.by_sender.remove(&key);
                }
            }
            self.by_expiry.remove(&(blob.meta.expires_ms, *id));
        }
    }

    /// Whether `blob` fits its sender's limit and the store's budget as things are.
    fn fits(&self, blob: &Blob, limits: &BlobLimits) -> Result<(), BlobError> {
        let held = self.by_sender.get(&sender(blob)).copied().unwrap_or(0);
        if held + blob.data.len() > limits.max_sender_bytes {
            return Err(BlobError::SenderFull {
                limit: limits.max_sender_bytes,
            });
        }
        if self.used + cost(blob) > limits.max_store_bytes {
            return Err(BlobError::StoreFull {
                budget: limits.max_store_bytes,
            });
        }
        Ok(())
    }

    fn drop_expired(&mut self, now_ms: u64) -> u64 {
        let mut dropped = 0;
        while let Some(&(expires_ms, id)) = self.by_expiry.first() {
            if expires_ms > now_ms {
                break;
            }
            self.remove(&id);
            dropped += 1;
        }
        dropped
    }
}

/// A [`BlobStore`] in this process; blobs end with it.
pub struct MemoryBlobs {
    limits: BlobLimits,
    inner: Mutex<Inner>,
}

impl MemoryBlobs {
    pub fn new(limits: BlobLimits) -> Arc<Self> {
        Arc::new(MemoryBlobs {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (every change is one
        // insert or remove with its accounting), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, blob: Blob, now_ms: u64) -> Result<PutOutcome, BlobError> {
        self.limits.check_size(blob.data.len() as u64)?;
        let id = blob
            .id()
            .ok_or_else(|| BlobError::Unavailable("a blob without a sha256 id".into()))?;
        let mut inner = self.lock();
        match inner.blobs.get(&id) {
            Some(old) if old.meta.expires_ms > now_ms => {
                return if old.same_upload(&blob.meta) {
                    Ok(PutOutcome::Existing(old.meta.clone()))
                } else {
                    Err(BlobError::Taken)
                };
            }
            Some(_) => inner.remove(&id),
            None => {}
        }
        if inner.fits(&blob, &self.limits).is_err() {
            inner.drop_expired(now_ms);
            inner.fits(&blob, &self.limits)?;
        }
        let meta = blob.meta.clone();
        inner.insert(id, blob);
        Ok(PutOutcome::Stored(meta))
    }

    async fn get(&self, id: &BlobId, now_ms: u64) -> Result<Option<Blob>, BlobError> {
        let mut inner = self.lock();
        match inner.blobs.get(id) {
            Some(blob) if blob.meta.expires_ms > now_ms => Ok(Some(Blob::clone(blob))),
            Some(_) => {
                inner.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn sweep(&self, now_ms: u64) -> Result<u64, BlobError> {
        Ok(self.lock().drop_expired(now_ms))
    }

    async fn check(&self) -> Result<(), BlobError> {
        Ok(())
    }

    fn stored_bytes(&self) -> Option<u64> {
        Some(self.lock().used as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BlobMeta, BlobOrigin};
    use super::*;
    use axum::body::Bytes;

    const LIMITS: BlobLimits = BlobLimits {
        max_blob_bytes: 1000,
        ttl_ms: 60_000,
        max_store_bytes: 3 * (1000 + OVERHEAD + 64 + 64 + 64),
        max_sender_bytes: 3 * (1000 + OVERHEAD + 64 + 64 + 64),
    };

    fn blob(data: &[u8], from: &str, to: &str, now_ms: u64) -> Blob {
        Blob {
            meta: BlobMeta {
                sha256: BlobId::of(data).to_hex(),
                name: String::new(),
                size: data.len() as u64,
                from: from.repeat(64),
                to: to.repeat(64),
                enc_pub: String::new(),
                created_ms: now_ms,
                expires_ms: now_ms + LIMITS.ttl_ms,
                origin: BlobOrigin::Native,
            },
            data: Bytes::copy_from_slice(data),
        }
    }

    fn full(n: u8) -> Vec<u8> {
        vec![n; 1000]
    }

    #[tokio::test]
    async fn budget_counts_every_blob_and_refuses_without_evicting() {
        let store = MemoryBlobs::new(LIMITS);
        let one = cost(&blob(&full(0), "a", "b", 0)) as u64;
        for n in 0..3 {
            let out = store.put(blob(&full(n), "a", "b", 0), 0).await.unwrap();
            assert!(matches!(out, PutOutcome::Stored(_)));
        }
        assert_eq!(store.stored_bytes(), Some(3 * one));
        assert_eq!(
            store.put(blob(&full(3), "a", "b", 0), 1).await,
            Err(BlobError::StoreFull {
                budget: LIMITS.max_store_bytes
            })
        );
        // Nothing was evicted to make room.
        for n in 0..3 {
            let id = BlobId::of(&full(n));
            assert!(store.get(&id, 1).await.unwrap().is_some());
        }
        // Once they expire, the refused upload fits, swept by the put itself.
        let later = LIMITS.ttl_ms;
        store
            .put(blob(&full(3), "a", "b", later), later)
            .await
            .unwrap();
        assert_eq!(store.stored_bytes(), Some(one));
    }

    #[tokio::test]
    async fn memory_blobs_pass_conformance() {
        use super::super::conformance::{run_all, LIMITS};
        run_all(MemoryBlobs::new(LIMITS)).await;
    }

    #[tokio::test]
    async fn expiry_releases_bytes_and_index_entries() {
        let store = MemoryBlobs::new(LIMITS);
        store.put(blob(b"x", "a", "b", 0), 0).await.unwrap();
        store.put(blob(b"y", "a", "b", 10), 10).await.unwrap();
        let ttl = LIMITS.ttl_ms;
        assert_eq!(store.get(&BlobId::of(b"x"), ttl).await.unwrap(), None);
        assert_eq!(store.sweep(ttl).await.unwrap(), 0, "the get dropped it");
        assert_eq!(store.sweep(ttl + 10).await.unwrap(), 1);
        assert_eq!(store.stored_bytes(), Some(0));
        assert!(store.lock().by_sender.is_empty(), "senders are forgotten");
        assert!(
            store.lock().by_expiry.is_empty(),
            "the index follows the map"
        );
    }
}
