//! Every Redis key and pub/sub channel name the relay uses, in one place: the schema is
//! written down here once, and the modules that use Redis (the store, the rate limits,
//! the attachments, the cross-node wake-ups, the signalling rooms) build their names
//! only through these functions.
//!
//! # Schema
//!
//! Every name starts with `whispr:` and carries a Redis Cluster hash tag (`{…}`): the
//! keys one script touches share a tag, so they share a slot, and different inboxes,
//! senders and rooms spread over the slots. `<inbox>`, `<sender>` are public keys in
//! lowercase hex; `<sha256>` is hex.
//!
//! | name                               | kind         | owner            | what                                      |
//! |------------------------------------|--------------|------------------|-------------------------------------------|
//! | `whispr:{<inbox>}:meta`            | hash         | `store::redis`   | `epoch`, `head`, `lost`, `acked`, `run`, `n`, `h` |
//! | `whispr:{<inbox>}:queue`           | sorted set   | `store::redis`   | `<seq> <expires-at> <payload>` scored by seq |
//! | `whispr:{<inbox>}:ids`             | sorted set   | `store::redis`   | message id hex scored by forget-at        |
//! | `whispr:{<inbox>}:q`, `:m`, `:exp` | (legacy)     | `store::redis`   | an earlier schema's queue, migrated into `queue` by the first insert, read or sweep of the inbox |
//! | `whispr:v1:{<inbox>}:<part>`       | as above     | `store::redis`   | the same keys of a Whispr v1 inbox        |
//! | `whispr:rl:s:{<sender>}`           | string       | `relay::ratelimit` | a sender's GCRA theoretical arrival time (µs) |
//! | `whispr:rl:ip:{<ip>}`              | string       | `relay::ratelimit` | a client IP's GCRA theoretical arrival time |
//! | `whispr:blob:{<sha256>}`           | hash         | `blobs::redis`   | one attachment: `meta`, `data`, `exp`     |
//! | `whispr:blobq:{<sender>}`          | sorted set   | `blobs::redis`   | a sender's blobs (`<len>:<sha256>`) by expiry |
//! | `whispr:blobq:{<sender>}:bytes`    | string       | `blobs::redis`   | their byte sum                            |
//! | `whispr:{<inbox>}:takeover`        | hash         | `notify`         | the last takeover number given out: `order`, `owner`; expires an hour after |
//! | `whispr:{<inbox>}:n`               | channel      | `notify`         | wake-ups and takeovers of an inbox        |
//! | `whispr:{<inbox>}:e`               | channel      | `notify`         | ephemeral envelopes for an inbox's session |
//! | `whispr:signal:{<sha256 of call id>}` | channel   | `signal::redis`  | one signalling room                       |
//!
//! Native and v1 inboxes never share a key (`whispr:{` vs `whispr:v1:{`), so no native
//! envelope can land where a v1 reader looks. An inbox's channels carry its hash tag
//! too, so on a cluster a sharded subscription lives on the inbox's own master. What
//! each key holds, its atomicity and its life are documented by its owner's module.

use std::net::IpAddr;

use crate::protocol::{InboxId, KeyField, PublicKey};

/// The three keys of an inbox, in the order every store script takes them.
pub const INBOX_PARTS: [&str; 3] = ["meta", "queue", "ids"];

/// Where relays before the single `queue` kept an inbox's messages (seqs, payloads,
/// expiries). The store's scripts migrate them into `queue` (they name them from
/// `meta`'s key, in the same slot); the sweep finds inboxes still holding them by `m`.
pub const LEGACY_PARTS: [&str; 3] = ["q", "m", "exp"];

/// Where each inbox namespace's keys start.
const NATIVE_PREFIX: &str = "whispr:{";
const WHISPR_V1_PREFIX: &str = "whispr:v1:{";

/// One key of an inbox (`part` one of [`INBOX_PARTS`]): the key's hex in braces is the
/// hash tag, so every key of an inbox is in one slot.
pub fn inbox(inbox: &InboxId, part: &str) -> String {
    inbox_stem(inbox) + part
}

/// The keys of an inbox in [`INBOX_PARTS`]'s order, its hex written once: every store
/// script call names all of them.
pub fn inbox_all(inbox: &InboxId) -> [String; 3] {
    let stem = inbox_stem(inbox);
    INBOX_PARTS.map(|part| format!("{stem}{part}"))
}

/// What every key of an inbox starts with, up to the part.
fn inbox_stem(inbox: &InboxId) -> String {
    let prefix = match inbox {
        InboxId::Native(_) => NATIVE_PREFIX,
        InboxId::WhisprV1(_) => WHISPR_V1_PREFIX,
    };
    format!("{prefix}{}}}:", inbox.key().to_hex())
}

/// The inbox one of its keys belongs to, e.g. `whispr:v1:{ab12..}:exp`.
pub fn inbox_of(key: &str) -> Option<InboxId> {
    let (make, rest): (fn(PublicKey) -> InboxId, &str) = match key.strip_prefix(WHISPR_V1_PREFIX) {
        Some(rest) => (InboxId::WhisprV1, rest),
        None => (InboxId::Native, key.strip_prefix(NATIVE_PREFIX)?),
    };
    let hex = rest.split_once('}')?.0;
    Some(make(PublicKey::from_hex(hex, KeyField::Recipient).ok()?))
}

/// `SCAN` patterns for the key `part` of every inbox of both namespaces.
pub fn inbox_patterns(part: &str) -> [String; 2] {
    [
        format!("{NATIVE_PREFIX}*}}:{part}"),
        format!("{WHISPR_V1_PREFIX}*}}:{part}"),
    ]
}

/// The rate-limit bucket of a client IP; its own hash tag, so buckets spread over a
/// cluster.
pub fn ip_bucket(ip: IpAddr) -> String {
    format!("whispr:rl:ip:{{{ip}}}")
}

/// The rate-limit bucket of a sender key.
pub fn sender_bucket(sender: &PublicKey) -> String {
    format!("whispr:rl:s:{{{}}}", sender.to_hex())
}

/// An attachment's hash, by its id (SHA-256 hex).
pub fn blob(id: &impl std::fmt::Display) -> String {
    format!("whispr:blob:{{{id}}}")
}

/// A sender's attachment count: its blobs and their byte sum, one hash tag (one slot).
pub fn blob_quota(sender_hex: &str) -> [String; 2] {
    let from = sender_hex.to_ascii_lowercase();
    [
        format!("whispr:blobq:{{{from}}}"),
        format!("whispr:blobq:{{{from}}}:bytes"),
    ]
}

/// Which of an inbox's two pub/sub channels a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxChannel {
    /// `:n`: wake-ups and takeovers.
    Wake,
    /// `:e`: ephemeral envelopes.
    Ephemeral,
}

/// An inbox's pub/sub channel.
pub fn inbox_channel(key: &PublicKey, which: InboxChannel) -> String {
    let suffix = match which {
        InboxChannel::Wake => "n",
        InboxChannel::Ephemeral => "e",
    };
    format!("{NATIVE_PREFIX}{}}}:{suffix}", key.to_hex())
}

/// Where the takeover numbers of an inbox's sessions are given out (the inbox's hash
/// tag: the same slot as its channel).
pub fn takeover_order(key: &PublicKey) -> String {
    format!("{NATIVE_PREFIX}{}}}:takeover", key.to_hex())
}

/// The inbox and kind of an inbox channel's name.
pub fn parse_inbox_channel(channel: &str) -> Option<(PublicKey, InboxChannel)> {
    let rest = channel.strip_prefix(NATIVE_PREFIX)?;
    let (hex, which) = match rest.split_once("}:")? {
        (hex, "n") => (hex, InboxChannel::Wake),
        (hex, "e") => (hex, InboxChannel::Ephemeral),
        _ => return None,
    };
    let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
    Some((PublicKey::from_bytes(bytes), which))
}

/// A signalling room's channel, by the SHA-256 (hex) of its call id: any call id becomes
/// a fixed-length name that cannot smuggle in a hash tag of its own.
pub fn signal_room(call_digest_hex: &str) -> String {
    format!("whispr:signal:{{{call_digest_hex}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys_share_one_hash_tag_and_the_namespaces_never_meet() {
        let key_bytes = PublicKey::from_bytes([7; 32]);
        let hex = key_bytes.to_hex();
        let native = InboxId::Native(key_bytes);
        let v1 = InboxId::WhisprV1(key_bytes);
        assert_eq!(inbox(&native, "meta"), format!("whispr:{{{hex}}}:meta"));
        assert_eq!(inbox(&v1, "meta"), format!("whispr:v1:{{{hex}}}:meta"));
        for part in INBOX_PARTS.into_iter().chain(LEGACY_PARTS) {
            assert_eq!(inbox_of(&inbox(&native, part)), Some(native));
            assert_eq!(inbox_of(&inbox(&v1, part)), Some(v1));
            assert_ne!(inbox(&native, part), inbox(&v1, part));
        }
        for id in [native, v1] {
            assert_eq!(inbox_all(&id), INBOX_PARTS.map(|part| inbox(&id, part)));
        }
        assert_eq!(inbox_of("other:key"), None);
        assert_eq!(inbox_of("whispr:{nothex}:q"), None);
        assert_eq!(
            inbox_patterns("q"),
            ["whispr:{*}:q".to_owned(), "whispr:v1:{*}:q".to_owned()]
        );
    }

    #[test]
    fn channels_parse_back_and_other_names_do_not() {
        let key = PublicKey::from_bytes([9; 32]);
        for which in [InboxChannel::Wake, InboxChannel::Ephemeral] {
            let name = inbox_channel(&key, which);
            assert_eq!(parse_inbox_channel(&name), Some((key, which)));
            // The channel and the inbox's store keys share the hash tag.
            assert_eq!(
                name.split_once('}').map(|s| s.0),
                inbox(&InboxId::Native(key), "q")
                    .split_once('}')
                    .map(|s| s.0)
            );
        }
        assert_eq!(parse_inbox_channel("whispr:{zz}:n"), None);
        assert_eq!(
            parse_inbox_channel(&format!("whispr:{{{}}}:x", key.to_hex())),
            None
        );
        assert_eq!(signal_room("ab"), "whispr:signal:{ab}");
    }

    #[test]
    fn buckets_and_blobs_carry_their_own_hash_tags() {
        let key = PublicKey::from_bytes([1; 32]);
        assert_eq!(
            ip_bucket("10.0.0.1".parse().unwrap()),
            "whispr:rl:ip:{10.0.0.1}"
        );
        assert_eq!(
            sender_bucket(&key),
            format!("whispr:rl:s:{{{}}}", key.to_hex())
        );
        assert_eq!(blob(&"ab"), "whispr:blob:{ab}");
        assert_eq!(
            blob_quota("AB"),
            [
                "whispr:blobq:{ab}".to_owned(),
                "whispr:blobq:{ab}:bytes".to_owned()
            ]
        );
    }
}
