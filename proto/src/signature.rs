//! Which Ed25519 signatures the protocol accepts, one at a time or in batches, with one
//! verdict either way (PROTOCOL.md §2.2).
//!
//! A signature `(R, s)` by key `A` over message `M` is accepted when:
//! 1. the strict checks hold: `A` and `R` are canonical encodings of curve points, `s` is
//!    a canonical scalar (`s < ℓ`), and neither `A` nor `R` has small order;
//! 2. the cofactored equation holds: `[8]([s]B - [k]A - R) = 0`, `k = SHA-512(R ‖ A ‖ M)`
//!    (ZIP-215, as in the `ed25519-zebra` crate, which computes it).
//!
//! Why not `verify_strict`'s cofactorless equation `[s]B - [k]A = R`: a batch check
//! with random weights is only sound for the cofactored one. Batched cofactorless checks
//! (ed25519-dalek's `verify_batch`) pass a signature whose `R` carries a torsion
//! component with probability up to 1/2, so a sender could retry until the batch took
//! what single verification refuses. With the cofactored equation a batch passes exactly
//! when every signature in it passes alone (up to the 2^-128 chance of the random
//! weights), so [`verify_batch`] and [`SignatureCheck::verify`] agree by construction
//! ("Taming the many EdDSAs", Chalkias et al., 2020).
//!
//! What changes against `verify_strict`: a signature is now also accepted when `[s]B -
//! [k]A - R` is a nonzero torsion point. For an honest signer (`A = [a]B`, `R = [r]B`,
//! both in the prime-order subgroup) that difference is always zero, so honest
//! signatures get the same verdict; it can only be nonzero when `R` or `A` has a torsion
//! component, and only the holder of `A`'s secret scalar can make such a signature (it
//! needs `a`). It is a second valid signature that only the key's owner can produce, as
//! harmless as ciphertext its recipient cannot decrypt: nobody else can forge one, nor
//! turn an honest signature into another valid one.
//!
//! The strict checks are byte comparisons (no point arithmetic), so they cost nothing
//! next to the equation: `R` is decompressed once, by the equation.
//!
//! A single signature is checked by `ed25519-zebra`. The batch equation is written here
//! over curve25519-dalek, term for term the one `ed25519_zebra::batch::Verifier` computes
//! (`batch_equation_is_ed25519_zebras` checks the two agree), for one reason: the crate
//! takes keys as bytes and decompresses each distinct key of every batch again, while
//! the relay has them decompressed already ([`SenderKey`], cached per sender). With
//! distinct senders that is one decompression in two, about a fifth of a batch.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_zebra::{VerificationKey, VerificationKeyBytes};
use rand::RngCore;
use sha2::{Digest, Sha512};

use super::keys::{PublicKey, Signature};
use super::ProtocolError;

/// A sender key that passed the strict checks, decompressed once for many signatures
/// (decompression is about a fifth of a verification; the relay caches these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderKey {
    key: PublicKey,
    point: VerificationKey,
    /// `A` itself, for the batch equation (`point` keeps its own, negated, inside).
    a: EdwardsPoint,
}

impl SenderKey {
    /// Refuses a key that is not the canonical encoding of a curve point, or has small
    /// order (it would "verify" signatures nobody made).
    pub fn new(key: &PublicKey) -> Result<Self, ProtocolError> {
        let bytes = key.as_bytes();
        let point = (is_canonical_point(bytes))
            .then(|| VerificationKey::try_from(VerificationKeyBytes::from(*bytes)).ok())
            .flatten()
            .ok_or_else(|| bad_signature("public key is not a valid Ed25519 point"))?;
        if is_small_order(bytes) {
            return Err(bad_signature("public key has small order"));
        }
        let a = CompressedEdwardsY(*bytes)
            .decompress()
            .ok_or_else(|| bad_signature("public key is not a valid Ed25519 point"))?;
        Ok(SenderKey {
            key: *key,
            point,
            a,
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// One signature, checked alone: the strict checks, then the cofactored equation.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), ProtocolError> {
        if !strict_signature_encoding(signature) {
            return Err(does_not_verify());
        }
        self.point
            .verify(&zebra_signature(signature), message)
            .map_err(|_| does_not_verify())
    }
}

/// One signature to check: the key, the signed bytes and the signature.
#[derive(Clone, Debug)]
pub struct SignatureCheck {
    pub key: SenderKey,
    pub message: Vec<u8>,
    pub signature: Signature,
}

impl SignatureCheck {
    pub fn verify(&self) -> Result<(), ProtocolError> {
        self.key.verify(&self.message, &self.signature)
    }
}

/// The verdict on each check, in order, exactly as [`SignatureCheck::verify`] would give
/// it: the checks that pass the strict encodings are verified in one cofactored batch
/// equation; when that fails, each is verified alone, so one bad signature is refused
/// and the others in its batch are not.
pub fn verify_batch(checks: &[SignatureCheck]) -> Vec<Result<(), ProtocolError>> {
    let mut verdicts: Vec<Result<(), ProtocolError>> = checks
        .iter()
        .map(|c| {
            strict_signature_encoding(&c.signature)
                .then_some(())
                .ok_or_else(does_not_verify)
        })
        .collect();
    let candidates: Vec<usize> = (0..checks.len()).filter(|&i| verdicts[i].is_ok()).collect();
    if candidates.len() >= 2 && batch_equation_holds(candidates.iter().map(|&i| &checks[i])) {
        return verdicts;
    }
    for i in candidates {
        verdicts[i] = checks[i].verify();
    }
    verdicts
}

/// The cofactored batch equation alone, over checks that already passed the strict
/// encodings. `true` means every one of them verifies alone (with probability 1 - 2^-128).
///
/// With random 128-bit weights `z_i` and `k_i = SHA-512(R_i ‖ A_i ‖ M_i)`:
/// `[8]([-Σ z_i s_i]B + Σ [z_i]R_i + Σ_A [Σ_{i: A_i = A} z_i k_i]A) = 0`, the terms of one
/// key folded into one (as `ed25519_zebra::batch` does), with `A` from the cache.
fn batch_equation_holds<'a>(checks: impl Iterator<Item = &'a SignatureCheck>) -> bool {
    let mut rng = rand::thread_rng();
    let mut b_coeff = Scalar::ZERO;
    let mut scalars: Vec<Scalar> = Vec::new();
    let mut points: Vec<EdwardsPoint> = Vec::new();
    // Where each key's folded coefficient sits in `scalars`: a batch holds few keys, so a
    // scan beats hashing.
    let mut keys: Vec<(PublicKey, usize)> = Vec::new();
    for c in checks {
        let bytes = c.signature.as_bytes();
        let r_bytes: [u8; 32] = bytes[..32].try_into().expect("32 of 64 bytes");
        let s_bytes: [u8; 32] = bytes[32..].try_into().expect("32 of 64 bytes");
        let (Some(r), Some(s)) = (
            CompressedEdwardsY(r_bytes).decompress(),
            Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)),
        ) else {
            return false;
        };
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r_bytes)
                .chain_update(c.key.key.as_bytes())
                .chain_update(&c.message),
        );
        let mut weight = [0u8; 16];
        rng.fill_bytes(&mut weight);
        let z = Scalar::from(u128::from_le_bytes(weight));
        b_coeff -= z * s;
        scalars.push(z);
        points.push(r);
        match keys.iter().find(|(key, _)| *key == c.key.key) {
            Some(&(_, at)) => scalars[at] += z * k,
            None => {
                keys.push((c.key.key, scalars.len()));
                scalars.push(z * k);
                points.push(c.key.a);
            }
        }
    }
    scalars.push(b_coeff);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// The strict checks on the signature's own bytes: `R` canonical and not of small order,
/// `s` canonical. (`verify_strict` refused exactly these, and still does.)
fn strict_signature_encoding(signature: &Signature) -> bool {
    let bytes = signature.as_bytes();
    let r: &[u8; 32] = bytes[..32].try_into().expect("32 of 64 bytes");
    let s: &[u8; 32] = bytes[32..].try_into().expect("32 of 64 bytes");
    is_canonical_point(r) && !is_small_order(r) && is_canonical_scalar(s)
}

fn zebra_signature(signature: &Signature) -> ed25519_zebra::Signature {
    ed25519_zebra::Signature::from_bytes(signature.as_bytes())
}

/// The field prime p = 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The group order ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Little-endian `a < b`.
fn less_than(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().rev().lt(b.iter().rev())
}

fn is_canonical_scalar(s: &[u8; 32]) -> bool {
    less_than(s, &ELL)
}

/// A canonical point encoding: `y < p`, and no sign bit on `x = 0` (only `y = ±1` have
/// `x = 0`). Whether it is a point at all is decompression's question.
fn is_canonical_point(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    let sign = bytes[31] & 0x80 != 0;
    let mut minus_one = P;
    minus_one[0] -= 1;
    let mut one = [0u8; 32];
    one[0] = 1;
    less_than(&y, &P) && !(sign && (y == one || y == minus_one))
}

/// The canonical encodings of the eight points of small order (the torsion subgroup
/// E[8]); `small_order_table_is_the_torsion_subgroup` proves the list complete.
const SMALL_ORDER: [[u8; 32]; 8] = [
    // The identity (0, 1), order 1.
    hex32("0100000000000000000000000000000000000000000000000000000000000000"),
    // (0, -1), order 2.
    hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    // (±sqrt(-1), 0), order 4.
    hex32("0000000000000000000000000000000000000000000000000000000000000000"),
    hex32("0000000000000000000000000000000000000000000000000000000000000080"),
    // The four points of order 8.
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
];

/// Small order, for a canonical encoding (a non-canonical one is refused before).
fn is_small_order(bytes: &[u8; 32]) -> bool {
    SMALL_ORDER.contains(bytes)
}

const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

fn bad_signature(detail: &str) -> ProtocolError {
    ProtocolError::BadSignature {
        detail: detail.into(),
    }
}

fn does_not_verify() -> ProtocolError {
    bad_signature("signature does not verify")
}

#[cfg(any(test, feature = "craft"))]
pub mod craft;

#[cfg(test)]
mod tests;
