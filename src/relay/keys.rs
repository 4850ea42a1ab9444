//! A cache of checked, decompressed sender keys. Decompressing an Ed25519 point costs
//! about a fifth of a signature check, and a chat relay sees the same senders over and
//! over.

use dashmap::DashMap;

use crate::protocol::{ProtocolError, PublicKey, SenderKey};

/// Entries kept before the cache starts over (about 200 bytes each).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct SenderKeys {
    keys: DashMap<PublicKey, SenderKey>,
}

impl SenderKeys {
    /// The checked key; non-canonical, invalid or small-order keys are refused, never
    /// cached.
    pub fn get(&self, key: &PublicKey) -> Result<SenderKey, ProtocolError> {
        if let Some(k) = self.keys.get(key) {
            return Ok(*k);
        }
        let checked = key.sender_key()?;
        if self.keys.len() >= CAPACITY {
            // Crude but bounded: a full cache starts over rather than tracking recency.
            self.keys.clear();
        }
        self.keys.insert(*key, checked);
        Ok(checked)
    }
}
