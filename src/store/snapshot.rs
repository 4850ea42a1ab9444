//! The memory store's optional snapshot: written once at graceful shutdown, read once at
//! start and then deleted. Deleting it on load matters: if the relay later crashes, an
//! old snapshot must not come back, because its epochs would be reused with sequence
//! numbers that clients have already moved past.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

use super::StoreError;
use crate::protocol::{Envelope, InboxId, MessageId, PublicKey};

const VERSION: u32 = 1;

impl InboxSnapshot {
    pub fn inbox(&self) -> InboxId {
        if self.whispr_v1 {
            InboxId::WhisprV1(self.key)
        } else {
            InboxId::Native(self.key)
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub inboxes: Vec<InboxSnapshot>,
}

#[derive(Serialize, Deserialize)]
pub struct InboxSnapshot {
    pub key: PublicKey,
    /// A Whispr v1 inbox (named by its derived key) rather than `key`'s native one.
    #[serde(default)]
    pub whispr_v1: bool,
    pub epoch: u64,
    pub head: u64,
    pub lost_through: u64,
    pub acked_through: u64,
    pub touched_ms: u64,
    pub messages: Vec<MessageSnapshot>,
    /// Remembered ids and when to forget them (dedupe survives the restart).
    pub recent: Vec<(MessageId, u64)>,
}

#[derive(Serialize, Deserialize)]
pub struct MessageSnapshot {
    pub seq: u64,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    pub envelope: Envelope,
}

fn failed(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Snapshot(format!("{what} {}: {e}", path.display()))
}

impl Snapshot {
    pub fn new(inboxes: Vec<InboxSnapshot>) -> Self {
        Snapshot {
            version: VERSION,
            inboxes,
        }
    }

    /// Reads and removes the snapshot at `path`; `None` when there is none.
    pub fn take(path: &Path) -> Result<Option<Snapshot>, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(path, "cannot read snapshot", e)),
        };
        let snapshot: Snapshot = rmp_serde::from_slice(&bytes)
            .map_err(|e| failed(path, "corrupt snapshot (move it away to start empty)", e))?;
        if snapshot.version != VERSION {
            return Err(failed(
                path,
                "unsupported snapshot version in",
                snapshot.version,
            ));
        }
        std::fs::remove_file(path).map_err(|e| failed(path, "cannot remove loaded snapshot", e))?;
        Ok(Some(snapshot))
    }

    /// Writes atomically: a temporary file, fsync, rename.
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        let bytes =
            rmp_serde::to_vec_named(self).map_err(|e| failed(path, "cannot encode snapshot", e))?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| failed(&tmp, "cannot create", e))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| failed(&tmp, "cannot write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| failed(path, "cannot rename snapshot to", e))
    }
}
