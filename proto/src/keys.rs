//! Identities, signatures and message ids: fixed-size byte strings with strict parsing.

use ed25519_dalek::{Signer, SigningKey};
use std::fmt;

use super::signature::SenderKey;
use super::ProtocolError;

/// An Ed25519 public key: a user's identity and the address of their inbox.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

/// SHA-256 of an envelope's signing bytes: the content address of a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 32]);

/// Which field a key came from, so an error can say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyField {
    Recipient,
    Sender,
    Key,
}

impl fmt::Display for KeyField {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            KeyField::Recipient => "recipient",
            KeyField::Sender => "sender",
            KeyField::Key => "key",
        })
    }
}

impl PublicKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Parses a key from wire bytes, naming the field in the error.
    pub fn from_slice(bytes: &[u8], field: KeyField) -> Result<Self, ProtocolError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| ProtocolError::InvalidKey {
            field,
            detail: format!("expected 32 bytes, got {}", bytes.len()),
        })?;
        Ok(PublicKey(arr))
    }

    /// Parses 64 hex characters (the form used in URLs, headers and the CLI).
    pub fn from_hex(s: &str, field: KeyField) -> Result<Self, ProtocolError> {
        let bytes = hex::decode(s).map_err(|e| ProtocolError::InvalidKey {
            field,
            detail: format!("not hex: {e}"),
        })?;
        Self::from_slice(&bytes, field)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }

    /// The key checked and decompressed for verifying (refusing non-canonical encodings,
    /// invalid and small-order points). Decompression is a fifth of a verification, so
    /// the relay caches the result per sender.
    pub fn sender_key(&self) -> Result<SenderKey, ProtocolError> {
        SenderKey::new(self)
    }

    /// Verifies one signature by this key under the protocol's rules (PROTOCOL.md §2.2,
    /// `signature.rs`): strict encodings, no small-order `A` or `R`, and the cofactored
    /// equation, the one batches use too.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), ProtocolError> {
        self.sender_key()?.verify(message, signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    /// The first 8 bytes in hex: enough to correlate logs, short enough to read.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl Signature {
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Signature(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| ProtocolError::BadSignature {
            detail: format!("expected 64 bytes, got {}", bytes.len()),
        })?;
        Ok(Signature(arr))
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Signatures are never logged; Debug shows that one is present, nothing more.
        f.write_str("Signature(..)")
    }
}

impl MessageId {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MessageId(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(MessageId)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A secret Ed25519 key held by a client. The relay itself never holds one.
pub struct Identity(SigningKey);

impl Identity {
    pub fn generate() -> Self {
        Identity(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Identity(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Identity({:?})", self.public_key())
    }
}

/// Lowercase hex of 32 bytes. `hex::encode` collects an iterator of `char`s, one push
/// at a time; with a key or id hexed for every Redis key of every store call, that was
/// 4.5% of the relay's CPU on Redis (`perf`, BENCHMARKS.md). `encode_to_slice` is a table
/// lookup per byte.
fn hex32(bytes: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(bytes, &mut out).expect("64 bytes hold the hex of 32");
    String::from_utf8(out.to_vec()).expect("hex is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_is_lowercase_hex_of_every_byte() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8 ^ 0xa5);
        assert_eq!(hex32(&bytes), hex::encode(bytes));
        assert_eq!(hex32(&[0xff; 32]), "ff".repeat(32));
    }
}
