//! The behaviour every `BlobStore` must show, as one suite run against each backend
//! (the memory store's unit tests; the Redis store's integration tests). Budget
//! accounting is the memory store's own (Redis's budget is `maxmemory`) and is tested
//! there.

use axum::body::Bytes;
use rand::RngCore;

use super::{Blob, BlobError, BlobId, BlobLimits, BlobMeta, BlobOrigin, PutOutcome, SharedBlobs};

/// Limits used by the suite.
pub const LIMITS: BlobLimits = BlobLimits {
    max_blob_bytes: 4096,
    ttl_ms: 60_000,
    max_store_bytes: 1 << 20,
    max_sender_bytes: 4 * 4096,
};

const NOW: u64 = 1_800_000_000_000;

/// A blob of `data` from `from` to `to` (each a hex digit repeated into a key), put at
/// `now_ms`. Random data keeps the suite's ids apart on a shared backend.
pub fn blob(data: &[u8], from: &str, to: &str, now_ms: u64) -> Blob {
    Blob {
        meta: BlobMeta {
            sha256: BlobId::of(data).to_hex(),
            name: "file.bin".into(),
            size: data.len() as u64,
            from: from.repeat(64),
            to: to.repeat(64),
            enc_pub: "e".repeat(64),
            created_ms: now_ms,
            expires_ms: now_ms + LIMITS.ttl_ms,
            origin: BlobOrigin::Native,
        },
        data: Bytes::copy_from_slice(data),
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

/// Runs every check on `store`, which must use [`LIMITS`].
pub async fn run_all(store: SharedBlobs) {
    store.check().await.expect("store answers");
    round_trip_without_consuming(&store).await;
    retries_are_idempotent_and_others_refused(&store).await;
    expiry_by_the_callers_clock(&store).await;
    oversized_is_refused(&store).await;
    a_senders_unexpired_bytes_are_capped(&store).await;
}

async fn round_trip_without_consuming(store: &SharedBlobs) {
    let data = random(LIMITS.max_blob_bytes);
    let put = blob(&data, "a", "b", NOW);
    let out = store.put(put.clone(), NOW).await.unwrap();
    assert_eq!(out, PutOutcome::Stored(put.meta.clone()));
    let id = BlobId::of(&data);
    for _ in 0..2 {
        assert_eq!(store.get(&id, NOW + 1).await.unwrap(), Some(put.clone()));
    }
    let empty = blob(b"", "a", "b", NOW);
    store.put(empty.clone(), NOW).await.unwrap();
    assert_eq!(
        store.get(&BlobId::of(b""), NOW).await.unwrap(),
        Some(empty),
        "an empty blob is a blob"
    );
    assert_eq!(store.get(&BlobId::of(&random(8)), NOW).await.unwrap(), None);
}

async fn retries_are_idempotent_and_others_refused(store: &SharedBlobs) {
    let data = random(100);
    let first = store.put(blob(&data, "a", "b", NOW), NOW).await.unwrap();
    let later = NOW + 5_000;
    let again = store
        .put(blob(&data, "a", "b", later), later)
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::Existing(first.meta().clone()));
    assert_eq!(
        again.meta().expires_ms,
        NOW + LIMITS.ttl_ms,
        "a retry keeps the expiry"
    );
    for (from, to) in [("a", "c"), ("c", "b")] {
        assert_eq!(
            store.put(blob(&data, from, to, later), later).await,
            Err(BlobError::Taken),
            "{from} -> {to}"
        );
    }
    let mut other_api = blob(&data, "a", "b", later);
    other_api.meta.origin = BlobOrigin::V1;
    assert_eq!(
        store.put(other_api, later).await,
        Err(BlobError::Taken),
        "the same upload through the other API"
    );
    let kept = store.get(&BlobId::of(&data), later).await.unwrap().unwrap();
    assert_eq!(kept.meta, *first.meta());
}

async fn expiry_by_the_callers_clock(store: &SharedBlobs) {
    let data = random(100);
    let id = BlobId::of(&data);
    store.put(blob(&data, "a", "b", NOW), NOW).await.unwrap();
    let end = NOW + LIMITS.ttl_ms;
    assert!(store.get(&id, end - 1).await.unwrap().is_some());
    assert_eq!(
        store.get(&id, end).await.unwrap(),
        None,
        "gone at its expiry"
    );
    store.sweep(end).await.unwrap();
    assert_eq!(store.get(&id, end).await.unwrap(), None);
    // Once expired, the same bytes can be uploaded again, by anyone.
    let out = store.put(blob(&data, "c", "d", end), end).await.unwrap();
    assert!(matches!(out, PutOutcome::Stored(_)), "{out:?}");
    let got = store.get(&id, end + 1).await.unwrap().unwrap();
    assert_eq!(got.meta.to, "d".repeat(64));
}

async fn oversized_is_refused(store: &SharedBlobs) {
    let data = random(LIMITS.max_blob_bytes + 1);
    assert_eq!(
        store.put(blob(&data, "a", "b", NOW), NOW).await,
        Err(BlobError::TooLarge {
            size: data.len() as u64,
            max: LIMITS.max_blob_bytes
        })
    );
    assert_eq!(store.get(&BlobId::of(&data), NOW).await.unwrap(), None);
}

async fn a_senders_unexpired_bytes_are_capped(store: &SharedBlobs) {
    let sender = hex::encode(random(32));
    let from = |data: &[u8], now_ms: u64| {
        let mut b = blob(data, "a", "b", now_ms);
        b.meta.from = sender.clone();
        b
    };
    let first = random(4096);
    for data in [first.clone(), random(4096), random(4096), random(4096)] {
        let out = store.put(from(&data, NOW), NOW).await.unwrap();
        assert!(matches!(out, PutOutcome::Stored(_)), "{out:?}");
    }
    let limit = LIMITS.max_sender_bytes;
    assert_eq!(
        store.put(from(&random(1), NOW + 1), NOW + 1).await,
        Err(BlobError::SenderFull { limit }),
        "a byte over the sender's limit"
    );
    let again = store.put(from(&first, NOW + 1), NOW + 1).await.unwrap();
    assert!(
        matches!(again, PutOutcome::Existing(_)),
        "a retry is not new bytes: {again:?}"
    );
    let other = store
        .put(blob(&random(10), "f", "b", NOW + 1), NOW + 1)
        .await;
    assert!(matches!(other, Ok(PutOutcome::Stored(_))), "{other:?}");
    // Refused bytes were not counted, and expired ones are released.
    let end = NOW + LIMITS.ttl_ms;
    for _ in 0..4 {
        let out = store.put(from(&random(4096), end), end).await.unwrap();
        assert!(matches!(out, PutOutcome::Stored(_)), "{out:?}");
    }
    assert_eq!(
        store.put(from(&random(1), end), end).await,
        Err(BlobError::SenderFull { limit })
    );
}
