//! Signatures made the way RFC 8032 makes them, with torsion optionally added to `R` or
//! to the key `A`: what only a key's owner can make, and what the vectors, the property
//! tests and the benchmarks need to show that batch and single verification agree on
//! them. Behind the `craft` feature (tests and tools only): nothing here is needed to
//! verify, and it holds secret scalars in the clear.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use super::SMALL_ORDER;
use crate::keys::{PublicKey, Signature};

/// The eight points of small order, by index into the canonical encodings
/// (0: identity, 1: order 2, 2-3: order 4, 4-7: order 8).
pub fn small_order_point(i: usize) -> [u8; 32] {
    SMALL_ORDER[i]
}

/// An Ed25519 key with its scalar in the open, and optionally a torsion point added to
/// its public point (an `A` with a torsion component).
#[derive(Clone)]
pub struct CraftedKey {
    scalar: Scalar,
    prefix: [u8; 32],
    point: EdwardsPoint,
}

impl CraftedKey {
    /// The key RFC 8032 derives from `seed` (the same public key and signatures as
    /// `Identity::from_seed`).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let h = Sha512::digest(seed);
        let mut a: [u8; 32] = h[..32].try_into().expect("64-byte digest");
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let scalar = Scalar::from_bytes_mod_order(a);
        CraftedKey {
            scalar,
            prefix: h[32..].try_into().expect("64-byte digest"),
            point: ED25519_BASEPOINT_TABLE * &scalar,
        }
    }

    /// The same secret with small-order point `torsion` (see [`small_order_point`])
    /// added to the public point.
    pub fn with_torsion(mut self, torsion: usize) -> Self {
        self.point += point(&small_order_point(torsion));
        self
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.point.compress().to_bytes())
    }

    /// An RFC 8032 signature, with small-order point `r_torsion` added to `R` when set.
    /// `s = r + k·a` either way, so only the torsion parts of `R` and `A` keep it from
    /// satisfying the cofactorless equation.
    pub fn sign(&self, message: &[u8], r_torsion: Option<usize>) -> Signature {
        let r = wide_scalar(
            Sha512::new()
                .chain_update(self.prefix)
                .chain_update(message),
        );
        let mut big_r = ED25519_BASEPOINT_TABLE * &r;
        if let Some(t) = r_torsion {
            big_r += point(&small_order_point(t));
        }
        let r_bytes = big_r.compress().to_bytes();
        let k = wide_scalar(
            Sha512::new()
                .chain_update(r_bytes)
                .chain_update(self.public_key().as_bytes())
                .chain_update(message),
        );
        let s = r + k * self.scalar;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(sig)
    }
}

/// `signature` with `ℓ` added to its `s`: the same equation, a non-canonical scalar.
pub fn with_non_canonical_s(signature: &Signature) -> Signature {
    let mut sig = signature.to_bytes();
    let mut carry = 0u16;
    for (i, byte) in sig[32..].iter_mut().enumerate() {
        let sum = u16::from(*byte) + u16::from(super::ELL[i]) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    Signature::from_bytes(sig)
}

fn wide_scalar(h: Sha512) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn point(bytes: &[u8; 32]) -> EdwardsPoint {
    CompressedEdwardsY(*bytes)
        .decompress()
        .expect("a small-order point decompresses")
}
