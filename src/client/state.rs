//! What a reader remembers between deliveries and between runs: its cursor in the inbox
//! and the ids of the messages it processed recently.
//!
//! The cursor is what the relay needs to resume without redelivering (and presenting it
//! acknowledges through it). The recent ids are what makes delivery exactly-once for the
//! user: the relay may deliver a message twice (after a takeover, an epoch change, or a
//! crash between processing and acknowledging), and only the id tells. The set is
//! bounded: it covers the redeliveries that happen in practice, not a sender replaying
//! a message days later (the relay's own deduplication covers that within an epoch).
//!
//! [`InboxState`] is pure; [`StateFile`] stores it as JSON, replaced atomically.

use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::protocol::{Cursor, MessageId};

/// How many processed ids a reader remembers.
pub const RECENT_IDS: usize = 512;

/// A bounded set of message ids: inserting past the capacity forgets the oldest.
#[derive(Clone, Debug, Default)]
pub struct RecentIds {
    order: VecDeque<MessageId>,
    set: HashSet<MessageId>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            order: VecDeque::with_capacity(capacity),
            set: HashSet::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`, forgetting the oldest id when full.
    pub fn insert(&mut self, id: MessageId) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &MessageId> {
        self.order.iter()
    }
}

/// A reader's position: cursor plus recently processed ids.
#[derive(Clone, Debug)]
pub struct InboxState {
    cursor: Option<Cursor>,
    recent: RecentIds,
}

impl Default for InboxState {
    fn default() -> Self {
        InboxState {
            cursor: None,
            recent: RecentIds::new(RECENT_IDS),
        }
    }
}

impl InboxState {
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Whether a message with this id was processed already.
    pub fn is_duplicate(&self, id: &MessageId) -> bool {
        self.recent.contains(id)
    }

    /// Records that the message `id` (stored as `seq` of `epoch`, or ephemeral when
    /// `seq` is `None`) was processed. The cursor never moves backwards within an epoch.
    pub fn processed(&mut self, epoch: u64, seq: Option<u64>, id: MessageId) {
        self.recent.insert(id);
        if let Some(seq) = seq {
            self.advance(Cursor { epoch, seq });
        }
    }

    /// Moves the cursor to `cursor` if it is ahead (or of another epoch).
    pub fn advance(&mut self, cursor: Cursor) {
        match self.cursor {
            Some(c) if c.epoch == cursor.epoch && c.seq >= cursor.seq => {}
            _ => self.cursor = Some(cursor),
        }
    }

    /// Takes the position the relay reported with a gap, as the protocol asks.
    pub fn adopt(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
    }

    /// After `ready`: a reader without a cursor stands at `{epoch, 0}` from now on, so
    /// that a later loss of the inbox can be reported to it (PROTOCOL.md 13.3).
    pub fn on_ready(&mut self, epoch: u64) {
        if self.cursor.is_none() {
            self.cursor = Some(Cursor { epoch, seq: 0 });
        }
    }
}

/// The on-disk form of an [`InboxState`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRecord {
    version: u32,
    cursor: Option<Cursor>,
    #[serde(default)]
    recent_ids: Vec<MessageId>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} the cursor file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cursor file {} is corrupt ({detail}); delete it to start over (queued messages are then shown again)", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

/// A file holding an [`InboxState`], replaced atomically (write, then rename) so a
/// crash leaves either the old or the new state, never half of one.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or a fresh one when the file does not exist yet.
    pub fn load(&self) -> Result<InboxState, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(InboxState::default()),
            Err(source) => return Err(self.io("read", source)),
        };
        let record: StateRecord =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
        let mut state = InboxState {
            cursor: record.cursor,
            ..InboxState::default()
        };
        for id in record.recent_ids {
            state.recent.insert(id);
        }
        Ok(state)
    }

    pub fn save(&self, state: &InboxState) -> Result<(), StateError> {
        let record = StateRecord {
            version: 1,
            cursor: state.cursor,
            recent_ids: state.recent.iter().copied().collect(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        let tmp = super::keyfile::sibling(&self.path, ".tmp");
        std::fs::write(&tmp, bytes).map_err(|e| self.io("write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io("replace", e))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StateError {
        StateError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId::from_bytes([n; 32])
    }

    #[test]
    fn recent_ids_forget_the_oldest_past_capacity() {
        let mut recent = RecentIds::new(3);
        for n in 1..=4 {
            recent.insert(id(n));
        }
        assert!(!recent.contains(&id(1)));
        assert!(recent.contains(&id(2)) && recent.contains(&id(4)));
        recent.insert(id(4));
        assert_eq!(recent.iter().count(), 3);
    }

    #[test]
    fn the_cursor_moves_forward_only_within_an_epoch() {
        let mut state = InboxState::default();
        state.on_ready(7);
        assert_eq!(state.cursor(), Some(Cursor { epoch: 7, seq: 0 }));
        state.processed(7, Some(5), id(5));
        state.processed(7, Some(3), id(3));
        assert_eq!(state.cursor(), Some(Cursor { epoch: 7, seq: 5 }));
        state.processed(7, None, id(9));
        assert_eq!(state.cursor(), Some(Cursor { epoch: 7, seq: 5 }));
        assert!(state.is_duplicate(&id(3)) && state.is_duplicate(&id(9)));
        state.adopt(Cursor { epoch: 8, seq: 0 });
        assert_eq!(state.cursor(), Some(Cursor { epoch: 8, seq: 0 }));
        state.on_ready(9);
        assert_eq!(state.cursor(), Some(Cursor { epoch: 8, seq: 0 }));
    }

    #[test]
    fn the_file_round_trips_and_a_missing_file_is_a_fresh_state() {
        let dir = std::env::temp_dir().join(format!(
            "whispr-state-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = StateFile::new(dir.join("key.cursor"));
        assert!(file.load().expect("load").cursor().is_none());
        let mut state = InboxState::default();
        state.processed(3, Some(4), id(4));
        file.save(&state).expect("save");
        let loaded = file.load().expect("load");
        assert_eq!(loaded.cursor(), Some(Cursor { epoch: 3, seq: 4 }));
        assert!(loaded.is_duplicate(&id(4)));
        std::fs::write(file.path(), "{").expect("corrupt");
        assert!(matches!(file.load(), Err(StateError::Corrupt { .. })));
    }
}
