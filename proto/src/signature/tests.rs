use curve25519_dalek::edwards::CompressedEdwardsY;
use proptest::prelude::*;

use super::craft::{small_order_point, with_non_canonical_s, CraftedKey};
use super::*;
use crate::keys::Identity;

/// ed25519-dalek's `verify_strict`, the rule before ZIP-215: the reference for every
/// signature without torsion.
fn verify_strict(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()).is_ok_and(|k| {
        k.verify_strict(
            message,
            &ed25519_dalek::Signature::from_bytes(signature.as_bytes()),
        )
        .is_ok()
    })
}

fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    key.verify(message, signature).is_ok()
}

#[test]
fn small_order_table_is_the_torsion_subgroup() {
    // Eight distinct canonical encodings of points of small order: E[8] has exactly
    // eight elements, so the table holds every one of them.
    let mut points = Vec::new();
    for bytes in SMALL_ORDER {
        let point = CompressedEdwardsY(bytes).decompress().expect("a point");
        assert!(point.is_small_order());
        assert_eq!(point.compress().to_bytes(), bytes, "canonical");
        assert!(!points.contains(&point));
        points.push(point);
    }
    assert_eq!(points.len(), 8);
}

#[test]
fn crafted_keys_sign_like_rfc_8032() {
    let seed = [7u8; 32];
    let crafted = CraftedKey::from_seed(seed);
    let identity = Identity::from_seed(seed);
    assert_eq!(crafted.public_key(), identity.public_key());
    assert_eq!(crafted.sign(b"m", None), identity.sign(b"m"));
}

#[test]
fn small_order_keys_and_r_are_refused_like_verify_strict() {
    let honest = CraftedKey::from_seed([1; 32]);
    for i in 0..8 {
        let key = PublicKey::from_bytes(small_order_point(i));
        assert!(key.sender_key().is_err(), "small-order key {i}");
        // R of small order, any s: refused by both rules.
        let mut sig = honest.sign(b"m", None).to_bytes();
        sig[..32].copy_from_slice(&small_order_point(i));
        let sig = Signature::from_bytes(sig);
        assert!(!verify(&honest.public_key(), b"m", &sig));
        assert!(!verify_strict(&honest.public_key(), b"m", &sig));
    }
}

#[test]
fn non_canonical_encodings_are_refused() {
    let key = CraftedKey::from_seed([2; 32]);
    let sig = key.sign(b"m", None);
    assert!(!verify(
        &key.public_key(),
        b"m",
        &with_non_canonical_s(&sig)
    ));
    // The sign bit on x = 0 (y = 1 and y = -1), and y >= p: never canonical.
    for i in [0, 1] {
        let mut bytes = small_order_point(i);
        bytes[31] |= 0x80;
        assert!(!is_canonical_point(&bytes));
    }
    for low in 0xedu8..=0xff {
        let mut y = P;
        y[0] = low;
        assert!(!is_canonical_point(&y), "y = p + {}", low - 0xed);
    }
    let mut below = P;
    below[0] = 0xec;
    assert!(is_canonical_point(&below));
}

#[test]
fn torsion_on_r_or_a_is_what_changes() {
    let mut torsion_r_strict_refused = 0;
    for t in 1..8 {
        let key = CraftedKey::from_seed([3; 32]);
        let sig = key.sign(b"m", Some(t));
        assert!(verify(&key.public_key(), b"m", &sig), "torsion {t} on R");
        torsion_r_strict_refused += usize::from(!verify_strict(&key.public_key(), b"m", &sig));

        let key = CraftedKey::from_seed([4; 32]).with_torsion(t);
        let sig = key.sign(b"m", None);
        assert!(verify(&key.public_key(), b"m", &sig), "torsion {t} on A");
    }
    // Every torsion point added to R makes verify_strict refuse.
    assert_eq!(torsion_r_strict_refused, 7);
}

/// What a property case signs, and how it spoils it.
#[derive(Clone, Copy, Debug)]
enum Case {
    Honest,
    FlipSignatureBit(u16),
    FlipMessageBit(u8),
    NonCanonicalS,
    SmallOrderR(u8),
    NonCanonicalR(u8),
    TorsionR(u8),
    TorsionA(u8),
    TorsionBoth(u8, u8),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        4 => Just(Case::Honest),
        2 => (0u16..512).prop_map(Case::FlipSignatureBit),
        1 => any::<u8>().prop_map(Case::FlipMessageBit),
        1 => Just(Case::NonCanonicalS),
        1 => (0u8..8).prop_map(Case::SmallOrderR),
        1 => (0u8..19).prop_map(Case::NonCanonicalR),
        1 => (1u8..8).prop_map(Case::TorsionR),
        1 => (1u8..8).prop_map(Case::TorsionA),
        1 => (1u8..8, 1u8..8).prop_map(|(a, r)| Case::TorsionBoth(a, r)),
    ]
}

/// A signed message per case: the key, the message it is checked against, the signature,
/// and whether it has torsion (the only signatures whose verdict may differ from
/// `verify_strict`'s).
fn make(seed: u8, case: Case) -> (PublicKey, Vec<u8>, Signature, bool) {
    let message = vec![seed; 40];
    let key = CraftedKey::from_seed([seed; 32]);
    let (key, mut checked, mut sig, torsion) = match case {
        Case::TorsionA(t) => {
            let key = key.with_torsion(t.into());
            let sig = key.sign(&message, None);
            (key, message.clone(), sig, true)
        }
        Case::TorsionBoth(a, r) => {
            let key = key.with_torsion(a.into());
            let sig = key.sign(&message, Some(r.into()));
            (key, message.clone(), sig, true)
        }
        Case::TorsionR(t) => {
            let sig = key.sign(&message, Some(t.into()));
            (key, message.clone(), sig, true)
        }
        _ => {
            let sig = key.sign(&message, None);
            (key, message.clone(), sig, false)
        }
    };
    match case {
        Case::FlipSignatureBit(bit) => {
            let mut b = sig.to_bytes();
            b[usize::from(bit / 8)] ^= 1 << (bit % 8);
            sig = Signature::from_bytes(b);
        }
        Case::FlipMessageBit(bit) => checked[usize::from(bit) % 40] ^= 1 << (bit % 8),
        Case::NonCanonicalS => sig = with_non_canonical_s(&sig),
        Case::SmallOrderR(i) => {
            let mut b = sig.to_bytes();
            b[..32].copy_from_slice(&small_order_point(i.into()));
            sig = Signature::from_bytes(b);
        }
        Case::NonCanonicalR(low) => {
            // y = p + low: a non-canonical encoding of y = low (a point or not).
            let mut b = sig.to_bytes();
            let mut y = P;
            y[0] = 0xed + low;
            b[..32].copy_from_slice(&y);
            sig = Signature::from_bytes(b);
        }
        _ => {}
    }
    (key.public_key(), checked, sig, torsion)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over batches of honest and malformed signatures (about 8,000 in all): the batch
    /// verdict of each equals its single verdict, and without torsion both equal
    /// `verify_strict`'s.
    #[test]
    fn batch_and_single_verdicts_agree(cases in prop::collection::vec((any::<u8>(), case()), 1..64)) {
        let mut checks = Vec::new();
        let mut expected = Vec::new();
        for (seed, case) in cases {
            let (key, message, signature, torsion) = make(seed, case);
            let single = verify(&key, &message, &signature);
            if !torsion {
                prop_assert_eq!(single, verify_strict(&key, &message, &signature), "{:?}", case);
            } else if matches!(case, Case::TorsionR(_) | Case::TorsionA(_) | Case::TorsionBoth(..)) {
                prop_assert!(single, "an owner's torsion signature verifies: {:?}", case);
            }
            if let Ok(key) = key.sender_key() {
                checks.push(SignatureCheck { key, message, signature });
                expected.push(single);
            }
        }
        let batch: Vec<bool> = verify_batch(&checks).iter().map(Result::is_ok).collect();
        prop_assert_eq!(batch, expected);
    }
}

#[test]
fn one_bad_signature_is_refused_alone() {
    let mut checks: Vec<SignatureCheck> = (0..16u8)
        .map(|i| {
            let (key, message, signature, _) = make(i, Case::Honest);
            SignatureCheck {
                key: key.sender_key().unwrap(),
                message,
                signature,
            }
        })
        .collect();
    checks[5].message[0] ^= 1;
    let verdicts = verify_batch(&checks);
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(v.is_ok(), i != 5, "check {i}");
    }
}

/// `ed25519-zebra`'s own batch verifier over the same checks: the oracle for ours.
fn zebra_batch_holds(checks: &[&SignatureCheck]) -> bool {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for c in checks {
        let key = VerificationKeyBytes::from(*c.key.public_key().as_bytes());
        batch.queue((key, zebra_signature(&c.signature), &c.message));
    }
    batch.verify(rand::rngs::OsRng).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The batch equation over cached keys is `ed25519_zebra::batch`'s: over batches of
    /// honest, torsion and malformed signatures that pass the strict encodings (so the
    /// equation decides), with keys repeated (seeds from a small range), both hold or
    /// fail together; and a batch of honest and torsion signatures alone holds (a batch
    /// equation that always failed would pass the verdict test above, since every
    /// failed batch is checked one by one).
    #[test]
    fn batch_equation_is_ed25519_zebras(cases in prop::collection::vec((0u8..6, case()), 2..32)) {
        let mut checks = Vec::new();
        for (seed, case) in cases {
            let (key, message, signature, _) = make(seed, case);
            if let Ok(key) = key.sender_key() {
                if strict_signature_encoding(&signature) {
                    checks.push((SignatureCheck { key, message, signature }, case));
                }
            }
        }
        let all: Vec<&SignatureCheck> = checks.iter().map(|(c, _)| c).collect();
        prop_assert_eq!(batch_equation_holds(all.iter().copied()), zebra_batch_holds(&all));
        let good: Vec<&SignatureCheck> = checks
            .iter()
            .filter(|(_, case)| matches!(case, Case::Honest | Case::TorsionR(_) | Case::TorsionA(_) | Case::TorsionBoth(..)))
            .map(|(c, _)| c)
            .collect();
        prop_assert!(batch_equation_holds(good.iter().copied()), "{} good checks", good.len());
    }
}
