//! The Whispr v1 message format (the Python server's `POST /send` body), and the one
//! place where such a message becomes a [`VerifiedEnvelope`].
//!
//! v1 signs only the ciphertext, with the sender's Ed25519 key, and addresses inboxes by
//! the recipient's X25519 key. To share the store and the write path with the native
//! protocol without ever mixing the two, a v1 message is wrapped in an internal envelope:
//! its recipient is [`inbox_key`] (SHA-256 of a domain tag and `to`, so no v1 key can
//! name a native inbox), its body is the whole v1 message as JSON ([`StoredV1`]), and its
//! id is [`message_id`] over (to, from_, signature, message), so a resend is a duplicate.
//! Pure: no I/O; callers pass the time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::envelope::{Envelope, VerifiedEnvelope};
use super::keys::{KeyField, MessageId, PublicKey, Signature};
use super::ProtocolError;

/// Domain tag of the derived v1 inbox key.
const INBOX_DOMAIN: &[u8] = b"whispr-v1-inbox\0";
/// Domain tag of a v1 message id.
const ID_DOMAIN: &[u8] = b"whispr-v1-message\0";

/// The body of `POST /send`, field for field (`from_` as the Python client names it).
#[derive(Debug, Clone, Deserialize)]
pub struct SendV1 {
    pub to: String,
    pub from_: String,
    pub enc_pub: String,
    pub message: String,
    pub signature: String,
    #[serde(default)]
    pub timestamp: Option<f64>,
}

/// What the store keeps for a v1 message: the fields v1 readers get back, plus when the
/// relay received it and the message id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredV1 {
    pub to: String,
    pub from: String,
    pub enc_pub: String,
    pub message: String,
    pub signature: String,
    /// The sender's timestamp, or the relay's receive time when the sender gave none.
    pub timestamp: f64,
    pub received_ms: u64,
    pub id: String,
}

/// The internal inbox of the X25519 key `to`: `SHA-256("whispr-v1-inbox\0" || to)`.
/// Finding a `to` whose inbox is a given native key would need a SHA-256 preimage, and
/// a native reader would need the secret key of a hash output.
pub fn inbox_key(to: &PublicKey) -> PublicKey {
    let mut h = Sha256::new();
    h.update(INBOX_DOMAIN);
    h.update(to.as_bytes());
    PublicKey::from_bytes(h.finalize().into())
}

/// The id of a v1 message: the same (to, from_, signature, message) is the same message.
pub fn message_id(
    to: &PublicKey,
    from: &PublicKey,
    signature: &Signature,
    message: &[u8],
) -> MessageId {
    let mut h = Sha256::new();
    h.update(ID_DOMAIN);
    h.update(to.as_bytes());
    h.update(from.as_bytes());
    h.update(signature.as_bytes());
    h.update(message);
    MessageId::from_bytes(h.finalize().into())
}

/// Parses a v1 key: 64 hex characters.
pub fn parse_key(hex: &str, field: KeyField) -> Result<PublicKey, ProtocolError> {
    PublicKey::from_hex(hex, field)
}

/// 64 hex characters: a 32-byte key as v1 writes it.
fn is_hex_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn bad_signature(detail: &str) -> ProtocolError {
    ProtocolError::BadSignature {
        detail: detail.into(),
    }
}

impl SendV1 {
    /// Verifies the v1 signature strictly (by `from_`, over the base64-decoded message;
    /// weak keys and malleable signatures refused) and wraps the message for the store.
    /// This is the only way a v1 message becomes a [`VerifiedEnvelope`].
    pub fn verify(
        self,
        now_ms: u64,
        max_message_bytes: usize,
    ) -> Result<VerifiedEnvelope, ProtocolError> {
        let to = parse_key(&self.to, KeyField::Recipient)?;
        let from = PublicKey::from_hex(&self.from_, KeyField::Sender)
            .map_err(|_| bad_signature("from_ is not a 64-hex Ed25519 key"))?;
        if !is_hex_key(&self.enc_pub) {
            return Err(ProtocolError::InvalidKey {
                field: KeyField::Key,
                detail: "enc_pub must be 64 hex characters (the sender's X25519 key)".into(),
            });
        }
        let message = STANDARD
            .decode(&self.message)
            .map_err(|_| bad_signature("message is not base64"))?;
        // Nothing a reader could open: the smallest sealed box is 48 bytes.
        if message.is_empty() {
            return Err(ProtocolError::Malformed(
                "message decodes to zero bytes".into(),
            ));
        }
        if message.len() > max_message_bytes {
            return Err(ProtocolError::TooLarge {
                size: message.len(),
                max: max_message_bytes,
            });
        }
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|_| bad_signature("signature is not base64"))
            .and_then(|s| Signature::from_slice(&s))?;
        from.verify(&message, &signature)?;

        let id = message_id(&to, &from, &signature, &message);
        let stored = StoredV1 {
            to: to.to_hex(),
            from: from.to_hex(),
            enc_pub: self.enc_pub,
            message: self.message,
            signature: self.signature,
            timestamp: self
                .timestamp
                .filter(|t| t.is_finite())
                .unwrap_or(now_ms as f64 / 1000.0),
            received_ms: now_ms,
            id: id.to_hex(),
        };
        let body =
            serde_json::to_vec(&stored).map_err(|e| ProtocolError::Internal(e.to_string()))?;
        let envelope = Envelope {
            recipient: inbox_key(&to),
            sender: from,
            timestamp: now_ms,
            ephemeral: false,
            body,
            signature,
        };
        Ok(VerifiedEnvelope::from_whispr_v1(envelope, id))
    }
}

impl StoredV1 {
    /// Reads a stored v1 message back and checks it again: it must be addressed to `to`,
    /// signed by its `from` (the internal envelope's sender) over its message. Anything
    /// else found in a v1 inbox (a native envelope someone addressed to the derived key)
    /// is refused, so v1 readers only ever see v1 messages their senders signed.
    pub fn open(envelope: &Envelope, to: &PublicKey) -> Option<StoredV1> {
        let stored: StoredV1 = serde_json::from_slice(&envelope.body).ok()?;
        let from = PublicKey::from_hex(&stored.from, KeyField::Sender).ok()?;
        if stored.to != to.to_hex() || from != envelope.sender {
            return None;
        }
        let message = STANDARD.decode(&stored.message).ok()?;
        let signature = Signature::from_slice(&STANDARD.decode(&stored.signature).ok()?).ok()?;
        from.verify(&message, &signature).ok()?;
        Some(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn signed(from: &Identity, to: &PublicKey, message: &[u8]) -> SendV1 {
        SendV1 {
            to: to.to_hex(),
            from_: from.public_key().to_hex(),
            enc_pub: "ab".repeat(32),
            message: STANDARD.encode(message),
            signature: STANDARD.encode(from.sign(message).to_bytes()),
            timestamp: Some(1.5),
        }
    }

    #[test]
    fn verified_v1_message_round_trips_in_its_own_inbox() {
        let alice = Identity::generate();
        let to = PublicKey::from_bytes([7; 32]);
        let v = signed(&alice, &to, b"sealed").verify(2000, 100).unwrap();
        assert_eq!(*v.recipient(), inbox_key(&to));
        assert_ne!(*v.recipient(), to, "never the raw key");
        let stored = StoredV1::open(v.envelope(), &to).unwrap();
        assert_eq!(stored.timestamp, 1.5);
        assert_eq!(stored.id, v.id().to_hex());
        assert!(StoredV1::open(v.envelope(), &PublicKey::from_bytes([8; 32])).is_none());
    }

    #[test]
    fn same_message_same_id_whatever_the_timestamp() {
        let alice = Identity::generate();
        let to = PublicKey::from_bytes([7; 32]);
        let mut again = signed(&alice, &to, b"m");
        again.timestamp = None;
        let a = signed(&alice, &to, b"m").verify(1, 100).unwrap();
        let b = again.verify(2, 100).unwrap();
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn the_stored_timestamp_reads_back_exactly() {
        // Found by fuzzing: serde_json's default float parsing read the stored
        // `-1.2e221` back as `-1.1999999999999999e221`, so readers saw another
        // timestamp than the sender gave.
        let alice = Identity::generate();
        let to = PublicKey::from_bytes([7; 32]);
        for t in [
            -12e220,
            0.1 + 0.2,
            1_700_000_000.123_456_7,
            f64::MIN_POSITIVE,
        ] {
            let mut m = signed(&alice, &to, b"m");
            m.timestamp = Some(t);
            let v = m.verify(1, 100).unwrap();
            let stored = StoredV1::open(v.envelope(), &to).unwrap();
            assert_eq!(stored.timestamp.to_bits(), t.to_bits(), "{t:e}");
        }
    }

    #[test]
    fn bad_signatures_and_sizes_are_refused() {
        let alice = Identity::generate();
        let to = PublicKey::from_bytes([7; 32]);
        let mut forged = signed(&alice, &to, b"m");
        forged.message = STANDARD.encode(b"n");
        assert!(matches!(
            forged.verify(1, 100),
            Err(ProtocolError::BadSignature { .. })
        ));
        let mut weak = signed(&alice, &to, b"m");
        weak.from_ = "00".repeat(32);
        assert!(weak.verify(1, 100).is_err());
        assert!(matches!(
            signed(&alice, &to, &[0; 101]).verify(1, 100),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
