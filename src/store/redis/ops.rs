//! The operations the store batches (see `writer`): what each sends, in the order its
//! script reads its arguments (`scripts`: `INSERT` and `READS`).

use redis::Cmd;

use super::new_epoch;
use super::scripts::{Script, Scripts};
use super::writer::Op;
use crate::protocol::{Cursor, InboxId};

/// Messages in one insert call at most.
pub const INSERT_BUDGET: usize = 256;
/// Messages one reads call may return at most (a read weighs its limit): bounds the
/// reply Redis builds and the relay parses at once. A read asking for more goes alone.
pub const READ_BUDGET: usize = 1024;

/// One message to store, with everything the insert script needs.
pub struct Insert {
    pub inbox: InboxId,
    pub keep_ms: u64,
    pub id: String,
    pub forget_at: u64,
    pub now_ms: u64,
    pub expires_at: u64,
    pub cap: usize,
    pub payload: Vec<u8>,
    /// On Redis's clock: a call Redis runs later stores nothing of this message.
    pub deadline: i64,
}

impl Op for Insert {
    fn script(scripts: &Scripts) -> &Script {
        &scripts.insert
    }

    fn inbox(&self) -> &InboxId {
        &self.inbox
    }

    fn args(&self, call: &mut Cmd) {
        call.arg(new_epoch())
            .arg(self.keep_ms)
            .arg(&self.id)
            .arg(self.forget_at)
            .arg(self.now_ms)
            .arg(self.expires_at)
            .arg(self.cap)
            .arg(&self.payload)
            .arg(self.deadline);
    }

    fn weight(&self) -> usize {
        1
    }
}

/// A read of an inbox (with an acknowledgement to apply first, when a session acks and
/// reads on), or an acknowledgement alone.
pub struct Read {
    pub inbox: InboxId,
    pub keep_ms: u64,
    pub kind: ReadKind,
}

pub enum ReadKind {
    Fetch {
        now_ms: u64,
        after: Option<Cursor>,
        limit: usize,
        ack: Option<Cursor>,
    },
    Ack {
        through: Cursor,
    },
}

/// A cursor's two arguments: its epoch ('' for none) and seq.
fn cursor(call: &mut Cmd, c: Option<Cursor>) {
    call.arg(c.map(|c| c.epoch.to_string()).unwrap_or_default())
        .arg(c.map_or(0, |c| c.seq));
}

impl Op for Read {
    fn script(scripts: &Scripts) -> &Script {
        &scripts.reads
    }

    fn inbox(&self) -> &InboxId {
        &self.inbox
    }

    fn args(&self, call: &mut Cmd) {
        call.arg(new_epoch()).arg(self.keep_ms);
        match self.kind {
            ReadKind::Fetch {
                now_ms,
                after,
                limit,
                ack,
            } => {
                call.arg("f").arg(now_ms);
                cursor(call, after);
                // Lua numbers are doubles: a larger LIMIT would not print as an integer.
                call.arg(limit.min(u32::MAX as usize));
                cursor(call, ack);
            }
            ReadKind::Ack { through } => {
                call.arg("a").arg("").arg("").arg(0).arg(0);
                cursor(call, Some(through));
            }
        }
    }

    fn weight(&self) -> usize {
        match self.kind {
            ReadKind::Fetch { limit, .. } => limit.max(1),
            ReadKind::Ack { .. } => 1,
        }
    }
}
