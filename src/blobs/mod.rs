//! Attachments: ephemeral, content-addressed blobs that a sender uploads for one
//! recipient, who downloads them by their SHA-256 until they expire.
//!
//! This module owns storing, finding and expiring blobs ([`BlobStore`], with
//! [`MemoryBlobs`] and [`RedisBlobs`]). It does not check signatures, decide who may
//! download, or know any HTTP shape: `http::v1::attachments` and `http::blobs` do that
//! and hand a checked [`Blob`] to the store.
//!
//! Why content addressing: the id a v1 client gets back is the SHA-256 it computed, so
//! a retried upload is the same blob and is answered as such (idempotent), without a
//! second copy. Why blobs never leave early: a v1 client may download an attachment
//! twice (the JSON and the raw form), so a download does not consume it; blobs go only
//! by TTL, and a full store refuses new uploads rather than dropping unexpired ones.
//!
//! Three bounds keep one client from taking the attachment memory: the store's budget,
//! a per-sender budget of unexpired bytes (both enforced by the stores), and
//! [`Inflight`], the bytes held by requests in progress (enforced by the routes). Each
//! blob records the API that stored it ([`BlobOrigin`]) and only that API serves it.

pub mod conformance;
mod inflight;
pub(crate) mod limits;
mod memory;
mod redis;

use async_trait::async_trait;
use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

pub use inflight::{Inflight, InflightPermit};
pub use memory::MemoryBlobs;
pub use redis::RedisBlobs;

/// A blob's id: the SHA-256 of its bytes. Shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        BlobId(Sha256::digest(data).into())
    }

    /// Parses 64 hex characters (either case); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(BlobId(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

/// The API that stored a blob. Each API serves only its own blobs: the unauthenticated
/// v1 download (`?recipient=`) must never read a blob the signed native API stored, and
/// the native download, which promises "only `to` uploaded through `/v1/blobs`", does
/// not serve v1 blobs either. The same bytes uploaded through the other API while a blob
/// is held are [`BlobError::Taken`], so a re-upload can never move a blob across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobOrigin {
    /// Native `POST /v1/blobs` (signed).
    Native,
    /// Whispr v1 `POST /upload`. The default, so records written before the origin was
    /// kept (all v1 or native, indistinguishable) are served only to the weaker API's
    /// rules; a native client re-uploads after they expire.
    #[default]
    V1,
}

/// What the relay records about a blob besides its bytes. Keys are kept as the hex the
/// uploader gave (v1 answers them back verbatim); `to` and `from` are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub sha256: String,
    /// The file name the sender gave (v1 `name`), or empty.
    pub name: String,
    /// The size the sender declared (v1 `size`): the plaintext size in v1 clients,
    /// which need not be the stored length.
    pub size: u64,
    /// The sender's Ed25519 signing key, hex.
    pub from: String,
    /// The only key that may download it, hex.
    pub to: String,
    /// The sender's X25519 key (v1 `enc_pub`), or empty.
    pub enc_pub: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Which API stored it; only that API serves it.
    #[serde(default)]
    pub origin: BlobOrigin,
}

/// A blob: its record and its bytes (`Bytes`, so a download streams slices of it
/// without copying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub meta: BlobMeta,
    pub data: Bytes,
}

impl Blob {
    pub fn id(&self) -> Option<BlobId> {
        BlobId::from_hex(&self.meta.sha256)
    }

    /// Whether `other` is a retry of this upload: same sender, recipient and API. The
    /// bytes are the same by construction (same id).
    fn same_upload(&self, other: &BlobMeta) -> bool {
        self.meta.from.eq_ignore_ascii_case(&other.from)
            && self.meta.to.eq_ignore_ascii_case(&other.to)
            && self.meta.origin == other.origin
    }
}

/// What `put` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored.
    Stored(BlobMeta),
    /// The same sender had uploaded it for the same recipient; the earlier record is
    /// kept (its expiry does not move).
    Existing(BlobMeta),
}

impl PutOutcome {
    pub fn meta(&self) -> &BlobMeta {
        match self {
            PutOutcome::Stored(m) | PutOutcome::Existing(m) => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("the attachment is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: u64, max: usize },
    #[error("the relay's attachment store is at its byte budget of {budget} bytes; retry after older attachments expire")]
    StoreFull { budget: usize },
    /// Redis refused the upload because it reached its `maxmemory`.
    #[error("the relay's Redis is full (it reached its maxmemory): attachments are refused until older ones expire or recipients read their messages")]
    RedisFull,
    /// The sender's unexpired attachments would go over
    /// `max_attachment_bytes_per_sender` with this one.
    #[error("this sender key's unexpired attachments would exceed max_attachment_bytes_per_sender ({limit} bytes); retry after its older attachments expire")]
    SenderFull { limit: usize },
    /// The same bytes are held, unexpired, for another sender or recipient, or were
    /// stored through the other API ([`BlobOrigin`]). Blobs are content-addressed, so
    /// one id cannot name two uploads; clients encrypt per recipient, so this only
    /// happens when the same ciphertext is reused.
    #[error("an attachment with this sha256 is already held for another sender or recipient, or through the other attachment API")]
    Taken,
    #[error("attachment store unavailable: {0}")]
    Unavailable(String),
    /// The relay already holds `max_attachment_inflight_bytes` of attachments for
    /// requests in progress ([`Inflight`]); retry in a moment.
    #[error("the relay is moving its limit of {limit} attachment bytes at once (max_attachment_inflight_bytes); retry shortly")]
    Busy { limit: usize },
}

/// Where attachments wait. Times are the relay's clock (`now_ms`), never the backend's,
/// so both implementations expire alike under a manual test clock.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `blob` unless an unexpired blob with its id exists: a retry of the same
    /// upload is [`PutOutcome::Existing`], another upload of the same bytes is
    /// [`BlobError::Taken`]. A sender whose unexpired blobs would go over
    /// `max_sender_bytes` is [`BlobError::SenderFull`]; a full store is
    /// [`BlobError::StoreFull`]; nothing unexpired is ever dropped to make room.
    async fn put(&self, blob: Blob, now_ms: u64) -> Result<PutOutcome, BlobError>;

    /// The unexpired blob with this id, if any. Does not consume it.
    async fn get(&self, id: &BlobId, now_ms: u64) -> Result<Option<Blob>, BlobError>;

    /// Drops expired blobs; returns how many.
    async fn sweep(&self, now_ms: u64) -> Result<u64, BlobError>;

    /// Readiness: `Ok` when blobs can be stored and read.
    async fn check(&self) -> Result<(), BlobError>;

    /// Bytes currently counted against the budget, when the store keeps one (memory).
    fn stored_bytes(&self) -> Option<u64>;
}

/// A shared blob store handle.
pub type SharedBlobs = Arc<dyn BlobStore>;

/// What the attachment routes use: the store, and the relay-wide budget of attachment
/// bytes that requests in progress hold (`max_attachment_inflight_bytes`, [`Inflight`]),
/// kept together so that no route reaches the store without the budget beside it.
pub struct Attachments {
    store: SharedBlobs,
    inflight: Inflight,
    /// Counts the reservations refused (`whispr_blobs_busy_total`).
    busy: prometheus::IntCounter,
}

impl Attachments {
    pub fn new(
        store: SharedBlobs,
        max_inflight_bytes: usize,
        busy: prometheus::IntCounter,
    ) -> Self {
        Attachments {
            store,
            inflight: Inflight::new(max_inflight_bytes),
            busy,
        }
    }

    pub fn store(&self) -> &SharedBlobs {
        &self.store
    }

    /// Reserves `bytes` of the attachment bytes in flight for one request, or refuses
    /// at once ([`BlobError::Busy`]). Counts a refusal.
    pub fn reserve(&self, bytes: u64) -> Result<InflightPermit, BlobError> {
        self.inflight
            .try_reserve(bytes)
            .inspect_err(|_| self.busy.inc())
    }
}

/// Limits a blob store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLimits {
    /// Largest blob, in bytes.
    pub max_blob_bytes: usize,
    /// How long a blob is kept after its upload.
    pub ttl_ms: u64,
    /// Memory store only: the bytes all blobs may take together.
    pub max_store_bytes: usize,
    /// The bytes (data only) one sender's unexpired blobs may take together, so one key
    /// cannot spend the whole budget.
    pub max_sender_bytes: usize,
}

impl BlobLimits {
    /// Refuses a blob over the size limit (the stores check again; callers check first
    /// so the answer comes before the work).
    pub fn check_size(&self, size: u64) -> Result<(), BlobError> {
        if size > self.max_blob_bytes as u64 {
            return Err(BlobError::TooLarge {
                size,
                max: self.max_blob_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_an_origin_are_v1() {
        #[derive(Serialize)]
        struct Old {
            sha256: String,
            name: String,
            size: u64,
            from: String,
            to: String,
            enc_pub: String,
            created_ms: u64,
            expires_ms: u64,
        }
        let old = Old {
            sha256: BlobId::of(b"x").to_hex(),
            name: String::new(),
            size: 1,
            from: "a".repeat(64),
            to: "b".repeat(64),
            enc_pub: String::new(),
            created_ms: 1,
            expires_ms: 2,
        };
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let meta: BlobMeta = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(meta.origin, BlobOrigin::V1);
        let native = BlobMeta {
            origin: BlobOrigin::Native,
            ..meta
        };
        let bytes = rmp_serde::to_vec_named(&native).unwrap();
        assert_eq!(rmp_serde::from_slice::<BlobMeta>(&bytes).unwrap(), native);
    }

    #[test]
    fn ids_are_64_hex_of_the_sha256() {
        let id = BlobId::of(b"abc");
        assert_eq!(
            id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobId::from_hex(&id.to_hex().to_uppercase()), Some(id));
        assert_eq!(BlobId::from_hex("ab"), None);
        assert_eq!(BlobId::from_hex(&"zz".repeat(32)), None);
        assert_eq!(BlobId::from_hex(&"é".repeat(32)), None);
    }
}
