//! The operations the store batches (see `writer`): what each sends, in the order its
//! script reads its arguments (`scripts`: `INSERT` and `READS`).

use redis::Cmd;

use super::new_epoch;
use super::scripts::{Script, Scripts};
use super::writer::Op;
use crate::protocol::{Cursor, InboxId};

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
    /// Messages in one insert call at most.
    const BUDGET: usize = 256;

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
    /// Messages one reads call may return at most (a read weighs its limit): bounds the
    /// reply Redis builds and the relay parses at once. A read asking for more goes alone.
    const BUDGET: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    /// The scripts read nine arguments per operation (`INSERT`, `READS`): an operation
    /// that sent another number would shift every later operation's arguments.
    fn args_of(op: &impl Op) -> Vec<String> {
        let mut call = redis::cmd("X");
        op.args(&mut call);
        call.args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => panic!("only plain arguments"),
            })
            .collect()
    }

    #[test]
    fn every_operation_sends_the_nine_arguments_its_script_reads_in_order() {
        let inbox: InboxId = Identity::generate().public_key().into();
        let c = |epoch, seq| Cursor { epoch, seq };
        let read = |kind| Read {
            inbox,
            keep_ms: 77,
            kind,
        };
        let fetch = args_of(&read(ReadKind::Fetch {
            now_ms: 1000,
            after: Some(c(5, 6)),
            limit: 10,
            ack: Some(c(5, 4)),
        }));
        assert_eq!(fetch[1..], ["77", "f", "1000", "5", "6", "10", "5", "4"]);
        let alone = args_of(&read(ReadKind::Fetch {
            now_ms: 1000,
            after: None,
            limit: usize::MAX,
            ack: None,
        }));
        assert_eq!(
            alone[1..],
            ["77", "f", "1000", "", "0", "4294967295", "", "0"]
        );
        let ack = args_of(&read(ReadKind::Ack { through: c(5, 4) }));
        assert_eq!(ack[1..], ["77", "a", "", "", "0", "0", "5", "4"]);
        let insert = args_of(&Insert {
            inbox,
            keep_ms: 77,
            id: "ab".into(),
            forget_at: 2,
            now_ms: 3,
            expires_at: 4,
            cap: 5,
            payload: b"p".to_vec(),
            deadline: 6,
        });
        assert_eq!(insert[1..], ["77", "ab", "2", "3", "4", "5", "p", "6"]);
        for args in [fetch, alone, ack, insert] {
            assert_eq!(args.len(), 9);
            assert!(
                args[0].parse::<u64>().is_ok_and(|e| e >= 1),
                "a new epoch first"
            );
        }
    }
}
