//! Criterion micro-benchmarks of the relay's hot path: decode + verify an envelope,
//! store insert / replay / ack, and frame encoding in both codecs.
//! Run: `cargo bench --bench hot_path`. Figures and the machine: BENCHMARKS.md.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use std::sync::Arc;
use whispr::protocol::{Codec, Cursor, Envelope, Identity, ServerFrame, WireEnvelope};
use whispr::testing::store::{MemoryStore, MessageStore, StoreLimits};

const NOW: u64 = 1_800_000_000_000;

fn envelopes(n: usize, size: usize) -> Vec<Envelope> {
    let alice = Identity::generate();
    let bob = Identity::generate().public_key();
    (0..n)
        .map(|i| {
            let mut body = vec![7u8; size];
            body[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Envelope::seal(&alice, bob, NOW, false, body)
        })
        .collect()
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    let envs = envelopes(256, 256);
    let json: Vec<Vec<u8>> = envs
        .iter()
        .map(|e| serde_json::to_vec(&WireEnvelope::from(e)).unwrap())
        .collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_json+verify_strict", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % json.len();
            let wire: WireEnvelope = Codec::Json.decode(&json[i]).unwrap();
            black_box(Envelope::try_from(wire).unwrap().verify(NOW, 1000).unwrap());
        })
    });
    // Batched verification (ed25519-dalek `verify_batch`): what adopting it would buy.
    let messages: Vec<Vec<u8>> = envs.iter().map(|e| e.signing_bytes()).collect();
    let sigs: Vec<DalekSignature> = envs
        .iter()
        .map(|e| DalekSignature::from_bytes(e.signature.as_bytes()))
        .collect();
    let keys: Vec<VerifyingKey> = envs
        .iter()
        .map(|e| VerifyingKey::from_bytes(e.sender.as_bytes()).unwrap())
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    g.throughput(Throughput::Elements(256));
    g.bench_function("verify_batch_256", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &keys).unwrap())
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let limits = StoreLimits {
        max_messages_per_inbox: 1_000_000,
        message_ttl_ms: 3_600_000,
        dedupe_window_ms: 600_000,
        max_store_bytes: 8 << 30,
    };
    let verified: Vec<_> = envelopes(1000, 256)
        .into_iter()
        .map(|e| e.verify(NOW, 1000).unwrap())
        .collect();
    let inbox = *verified[0].recipient();
    let mut g = c.benchmark_group("memory_store");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("insert_1000", |b| {
        b.iter_batched(
            || MemoryStore::new(limits),
            |store| {
                rt.block_on(async {
                    for v in &verified {
                        store.insert(v, NOW).await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    let filled = MemoryStore::new(limits);
    rt.block_on(async {
        for v in &verified {
            filled.insert(v, NOW).await.unwrap();
        }
    });
    let epoch = rt
        .block_on(filled.fetch(&inbox.into(), None, 1, NOW))
        .unwrap()
        .epoch;
    g.throughput(Throughput::Elements(256));
    g.bench_function("replay_256_after_cursor", |b| {
        b.iter(|| {
            rt.block_on(filled.fetch(&inbox.into(), Some(Cursor { epoch, seq: 500 }), 256, NOW))
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("insert_then_ack_1000", |b| {
        b.iter_batched(
            || MemoryStore::new(limits),
            |store| {
                rt.block_on(async {
                    for v in &verified {
                        store.insert(v, NOW).await.unwrap();
                    }
                    let epoch = store
                        .fetch(&inbox.into(), None, 1, NOW)
                        .await
                        .unwrap()
                        .epoch;
                    for seq in 1..=1000 {
                        store
                            .ack(&inbox.into(), Cursor { epoch, seq })
                            .await
                            .unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_deliver");
    for size in [64usize, 1024, 16 * 1024] {
        let env = envelopes(1, size).pop().unwrap();
        let frame = ServerFrame::Deliver {
            seq: Some(42),
            id: env.id(),
            envelope: Arc::new(env),
        };
        g.throughput(Throughput::Bytes(size as u64));
        for codec in [Codec::Json, Codec::MsgPack] {
            g.bench_with_input(
                BenchmarkId::new(format!("{codec:?}"), size),
                &frame,
                |b, f| b.iter(|| black_box(codec.encode(f).unwrap())),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, verify, store, encode);
criterion_main!(benches);
