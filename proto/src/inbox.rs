//! Which inbox a stored message lives in.
//!
//! Native inboxes and Whispr v1 inboxes are two namespaces, and this type is the only way
//! to name either: a store keys them apart, so nothing sent to one can ever be read from
//! the other. A native envelope's recipient is any 32 bytes its sender chose, including
//! the derived key of a v1 inbox; it still lands in the *native* inbox of those bytes,
//! which no v1 reader looks at. Only `whispr_v1::SendV1::verify` builds a
//! [`VerifiedEnvelope`](super::VerifiedEnvelope) for a v1 inbox.

use std::fmt;

use super::whispr_v1::inbox_key;
use super::PublicKey;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InboxId {
    /// The inbox of a recipient key: native sends, read by the key's owner.
    Native(PublicKey),
    /// A Whispr v1 inbox, named by the derived key of its v1 recipient
    /// ([`InboxId::whispr_v1`]).
    WhisprV1(PublicKey),
}

impl InboxId {
    /// The v1 inbox of the v1 recipient key `to`.
    pub fn whispr_v1(to: &PublicKey) -> Self {
        InboxId::WhisprV1(inbox_key(to))
    }

    /// The key the inbox is named by (the recipient's, or a v1 inbox's derived key).
    pub fn key(&self) -> &PublicKey {
        match self {
            InboxId::Native(key) | InboxId::WhisprV1(key) => key,
        }
    }

    pub fn is_whispr_v1(&self) -> bool {
        matches!(self, InboxId::WhisprV1(_))
    }
}

impl From<PublicKey> for InboxId {
    /// A key names its own native inbox; a v1 inbox needs [`InboxId::whispr_v1`].
    fn from(key: PublicKey) -> Self {
        InboxId::Native(key)
    }
}

impl fmt::Display for InboxId {
    /// The key's short form, with `v1:` before a v1 inbox's.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            InboxId::Native(key) => write!(f, "{key}"),
            InboxId::WhisprV1(key) => write!(f, "v1:{key}"),
        }
    }
}

impl fmt::Debug for InboxId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "InboxId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_namespaces_never_compare_equal() {
        let to = PublicKey::from_bytes([3; 32]);
        let v1 = InboxId::whispr_v1(&to);
        // The forgery: a native envelope addressed to the derived key.
        let forged = InboxId::Native(*v1.key());
        assert_ne!(v1, forged);
        assert_eq!(v1.key(), forged.key());
        assert!(v1.is_whispr_v1() && !forged.is_whispr_v1());
        assert_eq!(InboxId::from(to), InboxId::Native(to));
        assert!(v1.to_string().starts_with("v1:"));
    }
}
