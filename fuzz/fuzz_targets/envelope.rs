//! Envelopes through `verify` (`proto/src/envelope.rs`).
//!
//! Two halves. Decoded input (JSON or MessagePack): the verdict must not depend on the
//! encoding, a verified envelope re-encodes (both codecs) to bytes that decode and
//! verify again with the same id, that id is SHA-256 of the signing bytes, and
//! ed25519-dalek's own strict check agrees except where PROTOCOL.md 2.2 says it may not
//! (ZIP-215: R or the key has a torsion component, so only the accepting side differs). Constructed input (a seed and a body from
//! the fuzzer): what `Envelope::seal` signs verifies after a trip through either
//! codec, and a change to any one signed byte does not.
#![no_main]

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use whispr::protocol::{Codec, Envelope, Identity, PublicKey, Signature, WireEnvelope};

const CODECS: [Codec; 2] = [Codec::Json, Codec::MsgPack];

/// Verify with the clock at the envelope's own time, so only the signature decides.
fn verdict(e: &Envelope) -> Result<whispr::protocol::MessageId, String> {
    e.clone()
        .verify(e.timestamp, 0)
        .map(|v| v.id())
        .map_err(|err| err.to_string())
}

/// Whether `bytes` decode to a point with a torsion component (not in the prime-order
/// subgroup): the only case where ZIP-215 and `verify_strict` may disagree.
fn has_torsion(bytes: &[u8; 32]) -> bool {
    CompressedEdwardsY(*bytes)
        .decompress()
        .is_some_and(|p| !p.is_torsion_free())
}

fn reencoded(e: &Envelope, codec: Codec) -> Envelope {
    let bytes = codec.encode(e).expect("encodes").into_bytes();
    let wire: WireEnvelope = codec.decode(&bytes).expect("reads its own encoding");
    Envelope::try_from(wire).expect("lengths survive")
}

fn decoded(data: &[u8]) {
    for codec in CODECS {
        let Ok(wire) = codec.decode::<WireEnvelope>(data) else {
            continue;
        };
        let Ok(envelope) = Envelope::try_from(wire) else {
            continue;
        };
        let first = verdict(&envelope);
        for other in CODECS {
            let again = reencoded(&envelope, other);
            assert_eq!(again, envelope, "{other:?} changed the envelope");
            assert_eq!(verdict(&again), first, "{other:?} changed the verdict");
        }
        let dalek = VerifyingKey::from_bytes(envelope.sender.as_bytes()).and_then(|k| {
            let sig = DalekSignature::from_bytes(envelope.signature.as_bytes());
            k.verify_strict(&envelope.signing_bytes(), &sig).map(|()| k)
        });
        match &first {
            Ok(id) => {
                match dalek {
                    Ok(key) => assert!(!key.is_weak(), "a small-order key verified"),
                    Err(_) => {
                        let r: [u8; 32] = envelope.signature.as_bytes()[..32].try_into().unwrap();
                        assert!(
                            has_torsion(envelope.sender.as_bytes()) || has_torsion(&r),
                            "accepted a signature verify_strict refuses, with no torsion in R or A"
                        );
                    }
                }
                let digest: [u8; 32] = Sha256::digest(envelope.signing_bytes()).into();
                assert_eq!(id.as_bytes(), &digest);
            }
            // Ours is stricter (small-order keys), never laxer.
            Err(_) => assert!(dalek.map_or(true, |k| k.is_weak())),
        }
    }
}

fn constructed(data: &[u8]) {
    if data.len() < 43 {
        return;
    }
    let (seed, rest) = data.split_at(32);
    let (recipient_seed, rest) = rest.split_at(1);
    let (ts, rest) = rest.split_at(8);
    let (flip, body) = rest.split_at(2);
    let identity = Identity::from_seed(seed.try_into().unwrap());
    let recipient = PublicKey::from_bytes([recipient_seed[0]; 32]);
    let timestamp = u64::from_be_bytes(ts.try_into().unwrap());
    let ephemeral = flip[0] & 1 == 1;
    let sealed = Envelope::seal(&identity, recipient, timestamp, ephemeral, body.to_vec());
    let id = verdict(&sealed).expect("a sealed envelope verifies");
    for codec in CODECS {
        assert_eq!(verdict(&reencoded(&sealed, codec)), Ok(id));
    }
    // One changed byte anywhere in what is signed, or in the signature, is refused.
    let mut tampered = sealed.clone();
    let at = usize::from(flip[1]);
    match at % 4 {
        0 if !body.is_empty() => tampered.body[at % body.len()] ^= 0x80,
        1 => tampered.timestamp ^= 1 << (at % 64),
        2 => tampered.ephemeral = !tampered.ephemeral,
        _ => {
            let mut sig = tampered.signature.to_bytes();
            sig[at % 64] ^= 1;
            tampered.signature = Signature::from_slice(&sig).unwrap();
        }
    }
    if tampered != sealed {
        assert!(verdict(&tampered).is_err(), "a tampered envelope verified");
    }
}

fuzz_target!(|data: &[u8]| {
    decoded(data);
    constructed(data);
});
