//! `whispr bench --verify-ceiling`: how many signatures this machine can verify per
//! second, measured in the same run as the relay's max rate, so the relay's rate reads
//! as a ratio to a ceiling taken under the same load on the box (other processes, CPU
//! frequency) rather than as a bare number.
//!
//! Six figures, each over the same pre-signed envelopes (256-byte bodies, as many
//! sender keys as the run has senders, decompressed once, as the relay caches them; a
//! batch decompresses each distinct key in it once more, so the sender count matters
//! to the batched figures): ed25519-dalek's
//! `verify_strict` (the rule before ZIP-215, the reference), the protocol's
//! single verification (strict encodings + the cofactored equation) and its batched
//! verification (`verify_batch`, batches of `BATCH`), each on one thread and on one
//! thread per core.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::signature::{verify_batch, SignatureCheck};
use crate::protocol::{signing_bytes, Identity};

/// Signatures per batch in the batched figures (the relay's default `verify_max_batch`).
pub const BATCH: usize = 64;

/// Signatures per second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ceiling {
    pub threads: usize,
    pub verify_strict_one_core: f64,
    pub verify_strict_all_cores: f64,
    pub single_one_core: f64,
    pub single_all_cores: f64,
    pub batch_one_core: f64,
    pub batch_all_cores: f64,
}

#[derive(Clone, Copy)]
enum Method {
    VerifyStrict,
    Single,
    Batch,
}

/// Measures each figure for about `each` (the six take six times that), over envelopes
/// from `senders` keys.
pub fn measure(each: Duration, senders: usize) -> Ceiling {
    let checks = sample(1024, senders.clamp(1, 256));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rate = |method, threads| rate(&checks, method, threads, each);
    Ceiling {
        threads,
        verify_strict_one_core: rate(Method::VerifyStrict, 1),
        verify_strict_all_cores: rate(Method::VerifyStrict, threads),
        single_one_core: rate(Method::Single, 1),
        single_all_cores: rate(Method::Single, threads),
        batch_one_core: rate(Method::Batch, 1),
        batch_all_cores: rate(Method::Batch, threads),
    }
}

fn sample(n: usize, senders: usize) -> Vec<SignatureCheck> {
    let recipient = Identity::from_seed([0xee; 32]).public_key();
    (0..n)
        .map(|i| {
            let sender = Identity::from_seed([(i % senders) as u8; 32]);
            let key = sender.public_key();
            let message = signing_bytes(&recipient, &key, i as u64, false, &[i as u8; 256]);
            SignatureCheck {
                key: key.sender_key().expect("a generated key"),
                signature: sender.sign(&message),
                message,
            }
        })
        .collect()
}

/// Signatures verified per second by `threads` threads running `method` for `each`.
fn rate(checks: &[SignatureCheck], method: Method, threads: usize, each: Duration) -> f64 {
    let strict: Vec<(ed25519_dalek::VerifyingKey, ed25519_dalek::Signature)> = checks
        .iter()
        .map(|c| {
            (
                ed25519_dalek::VerifyingKey::from_bytes(c.key.public_key().as_bytes())
                    .expect("a generated key"),
                ed25519_dalek::Signature::from_bytes(c.signature.as_bytes()),
            )
        })
        .collect();
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    // At least one round per thread, however late it was scheduled.
                    let mut done = 0u64;
                    loop {
                        done += match method {
                            Method::VerifyStrict => {
                                for ((key, sig), c) in strict.iter().zip(checks).take(BATCH) {
                                    assert!(key.verify_strict(&c.message, sig).is_ok());
                                }
                                BATCH as u64
                            }
                            Method::Single => {
                                for c in checks.iter().take(BATCH) {
                                    assert!(c.verify().is_ok());
                                }
                                BATCH as u64
                            }
                            Method::Batch => {
                                let verdicts = verify_batch(&checks[..BATCH]);
                                assert!(verdicts.iter().all(Result::is_ok));
                                BATCH as u64
                            }
                        };
                        if start.elapsed() >= each {
                            break done;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker"))
            .sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_measured() {
        let c = measure(Duration::from_millis(5), 8);
        for rate in [
            c.verify_strict_one_core,
            c.verify_strict_all_cores,
            c.single_one_core,
            c.single_all_cores,
            c.batch_one_core,
            c.batch_all_cores,
        ] {
            assert!(rate > 0.0);
        }
        assert!(c.threads >= 1);
    }
}
