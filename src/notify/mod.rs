//! Cross-node wake-ups and takeovers over Redis pub/sub; built only when the store is
//! Redis, so every node sees the same inboxes.
//!
//! Each inbox has one channel, `whispr:{<inbox hex>}:n` (the inbox's hash tag, like its
//! store keys). A node subscribes to it while a local session for that inbox is
//! registered, and unsubscribes when the session leaves; there is no global channel that
//! every node filters. Two payloads travel on it:
//! - `w <node>`: "the inbox has new stored messages" (published by the relay on `<node>`
//!   after a store insert); any other node receiving it calls `Registry::notify` (the
//!   sending node woke its own session already).
//! - `t <node> <session> <order>`: a session on `<node>` took the inbox over; `<order>`
//!   is the session's number in the inbox's takeover order, given once by Redis (a
//!   script that takes the number and publishes in one step, `redis.rs`) and repeated
//!   unchanged. Of two sessions on two nodes the lower number closes; a node hearing an
//!   older session's takeover announces its own again, so the older one's node hears it
//!   even if it missed it. Arrival order and repeats do not matter.
//!
//! Whispr v1 sockets (many per key, no takeover) subscribe to their derived inbox's
//! channel too, for wake-ups only (`Command::Watch`). A third payload, `e <base64>`,
//! carries an ephemeral envelope to the node holding the recipient's session, on
//! `whispr:{<inbox hex>}:e` (published directly by the relay, whose answer `online` is
//! Redis's subscriber count; the receiving node verifies the envelope again). v1 sender
//! copies stay on their node.
//!
//! Pub/sub is at-most-once: a wake-up published while a node is reconnecting is lost.
//! Sessions read from the store, so nothing is lost, only late: after every reconnect
//! the node wakes all its local sessions, and [`catch_up`] wakes each of them once every
//! `ws_catch_up_seconds` in any case, a slice at a time.
//!
//! Two parts, a pure core beside a thin shell:
//! - `core`: [`Core`], the protocol: subscriptions wanted, takeover ordering (numbers,
//!   echoed / pending / stale), re-announcing, what a message asks for. Events in, [`Action`]s
//!   out; unit-tested without Redis.
//! - `redis`: the connection loops (one Redis: `SUBSCRIBE` on a RESP2 pub/sub
//!   connection; Redis Cluster: sharded `SSUBSCRIBE` on a RESP3 cluster connection),
//!   which feed the core and perform its actions; the catch-up timer; the publish of an
//!   ephemeral envelope.
//!
//! The registry never awaits: it sends its own `registry::Command`s on an unbounded
//! channel to the task here, which owns the pub/sub connection, and publishes through a
//! second task with its own connection (a subscribed connection cannot publish). The
//! registry does not import this module; this module imports the registry.

mod core;
mod redis;

pub use self::core::ephemeral_payload;
pub use self::redis::{catch_up, publish_ephemeral, start, Verifier};

use crate::protocol::PublicKey;
use crate::redis_keys;

/// The Redis channel carrying `key`'s wake-ups and takeovers.
pub fn channel(key: &PublicKey) -> String {
    redis_keys::inbox_channel(key, redis_keys::InboxChannel::Wake)
}

/// The Redis channel carrying ephemeral envelopes for `key`'s native session. Apart
/// from `channel` so that only nodes with a native session subscribe to it, and the
/// subscriber count a publish returns means "a session is there" (v1 sockets listen
/// for wake-ups only).
pub fn ephemeral_channel(key: &PublicKey) -> String {
    redis_keys::inbox_channel(key, redis_keys::InboxChannel::Ephemeral)
}

/// Which of an inbox's channels a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `:n`: wake-ups and takeovers.
    Notify,
    /// `:e`: ephemeral envelopes.
    Ephemeral,
}

fn key_of(channel: &str) -> Option<(PublicKey, Kind)> {
    let (key, which) = redis_keys::parse_inbox_channel(channel)?;
    let kind = match which {
        redis_keys::InboxChannel::Wake => Kind::Notify,
        redis_keys::InboxChannel::Ephemeral => Kind::Ephemeral,
    };
    Some((key, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    #[test]
    fn channel_names_carry_the_inbox_hash_tag_and_parse_back() {
        let key = Identity::generate().public_key();
        let name = channel(&key);
        assert_eq!(name, format!("whispr:{{{}}}:n", key.to_hex()));
        assert_eq!(key_of(&name), Some((key, Kind::Notify)));
        assert_eq!(
            key_of(&ephemeral_channel(&key)),
            Some((key, Kind::Ephemeral))
        );
        assert_eq!(key_of("whispr:{zz}:n"), None);
        assert_eq!(key_of(&format!("whispr:{{{}}}:x", key.to_hex())), None);
    }
}
