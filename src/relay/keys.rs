//! A cache of decompressed sender keys. Decompressing an Ed25519 point costs about a
//! fifth of a signature check, and a chat relay sees the same senders over and over.

use dashmap::DashMap;
use ed25519_dalek::VerifyingKey;

use crate::protocol::{ProtocolError, PublicKey};

/// Entries kept before the cache starts over (about 100 bytes each).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct SenderKeys {
    keys: DashMap<PublicKey, VerifyingKey>,
}

impl SenderKeys {
    /// The decompressed key; invalid or small-order keys are refused, never cached.
    pub fn get(&self, key: &PublicKey) -> Result<VerifyingKey, ProtocolError> {
        if let Some(k) = self.keys.get(key) {
            return Ok(*k);
        }
        let decompressed = key.verifying_key()?;
        if self.keys.len() >= CAPACITY {
            // Crude but bounded: a full cache starts over rather than tracking recency.
            self.keys.clear();
        }
        self.keys.insert(*key, decompressed);
        Ok(decompressed)
    }
}
