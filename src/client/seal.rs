//! End-to-end encryption of chat messages: a libsodium sealed box (`crypto_box`) to the
//! recipient's X25519 key, derived from their Ed25519 identity.
//!
//! A user is addressed by one Ed25519 public key: the relay routes by it, signatures are
//! checked with it, and the encryption key is its Montgomery form (RFC 7748 birational
//! map; the secret side is the clamped scalar of the Ed25519 seed, exactly what
//! libsodium's `crypto_sign_ed25519_sk_to_curve25519` computes). No cryptography is
//! written here: the conversion is `ed25519-dalek`'s, the box is `crypto_box`'s.
//!
//! The plaintext inside the box is a small JSON object, `{"v":1,"from":HEX,"text":...}`,
//! so later versions can add members (readers ignore unknown ones). `from` repeats the
//! sender's Ed25519 key *inside* the box: a sealed box is anonymous, so without it
//! anyone could re-sign someone else's ciphertext as their own; the reader checks that
//! it equals the envelope's signed sender.
//!
//! Owns: payload format, sealing, opening. Does not: sign envelopes or talk to a relay.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::protocol::{Identity, KeyField, PublicKey};

/// The version of the plaintext format this code writes.
pub const PAYLOAD_VERSION: u32 = 1;

/// A decrypted chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plaintext {
    /// Format version; readers refuse versions they do not know.
    pub v: u32,
    /// The sender's Ed25519 public key, bound inside the ciphertext.
    pub from: PublicKey,
    /// The message text.
    pub text: String,
}

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the recipient key is not a usable Ed25519 public key: {0}")]
    InvalidRecipient(String),
    #[error("cannot decrypt: the message is not for this key or was altered")]
    Decrypt,
    #[error("decrypted, but the contents are not a whispr message: {0}")]
    Payload(String),
    #[error("message format version {0} is newer than this client understands")]
    UnsupportedVersion(u32),
    #[error("the message claims to be from {inside} but was signed by {signed}")]
    SenderMismatch { inside: String, signed: String },
}

/// The X25519 public key of an Ed25519 identity key. Refuses keys that are not curve
/// points or have small order (sealing to those would leak the message to anyone).
pub fn encryption_key(recipient: &PublicKey) -> Result<crypto_box::PublicKey, SealError> {
    let key = VerifyingKey::from_bytes(recipient.as_bytes())
        .map_err(|_| SealError::InvalidRecipient("not a point on the Ed25519 curve".into()))?;
    if key.is_weak() {
        return Err(SealError::InvalidRecipient(
            "the key has small order".into(),
        ));
    }
    Ok(crypto_box::PublicKey::from(key.to_montgomery().to_bytes()))
}

/// The X25519 secret key of an identity.
fn decryption_key(identity: &Identity) -> crypto_box::SecretKey {
    crypto_box::SecretKey::from(SigningKey::from_bytes(&identity.seed()).to_scalar_bytes())
}

/// Seals `text` from `sender` to `recipient`: the envelope body to sign and send.
pub fn seal_text(
    sender: &Identity,
    recipient: &PublicKey,
    text: &str,
) -> Result<Vec<u8>, SealError> {
    let key = encryption_key(recipient)?;
    let plaintext = serde_json::to_vec(&Plaintext {
        v: PAYLOAD_VERSION,
        from: sender.public_key(),
        text: text.to_string(),
    })
    .map_err(|e| SealError::Payload(e.to_string()))?;
    key.seal(&mut rand::rngs::OsRng, &plaintext)
        .map_err(|_| SealError::Payload("encryption failed".into()))
}

/// Opens a body sealed to `identity` and checks it was written by `signed_sender` (the
/// envelope's sender, whose signature the caller has verified).
pub fn open(
    identity: &Identity,
    signed_sender: &PublicKey,
    body: &[u8],
) -> Result<Plaintext, SealError> {
    let bytes = decryption_key(identity)
        .unseal(body)
        .map_err(|_| SealError::Decrypt)?;
    let plaintext: Plaintext =
        serde_json::from_slice(&bytes).map_err(|e| SealError::Payload(e.to_string()))?;
    if plaintext.v != PAYLOAD_VERSION {
        return Err(SealError::UnsupportedVersion(plaintext.v));
    }
    if plaintext.from != *signed_sender {
        return Err(SealError::SenderMismatch {
            inside: plaintext.from.to_hex(),
            signed: signed_sender.to_hex(),
        });
    }
    Ok(plaintext)
}

/// Parses a recipient given as 64 hex characters and checks it can be sealed to.
pub fn parse_recipient(hex: &str) -> Result<PublicKey, SealError> {
    let key = PublicKey::from_hex(hex.trim(), KeyField::Recipient)
        .map_err(|e| SealError::InvalidRecipient(e.to_string()))?;
    encryption_key(&key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::from_seed([1; 32])
    }

    fn bob() -> Identity {
        Identity::from_seed([2; 32])
    }

    #[test]
    fn round_trip() {
        let body = seal_text(&alice(), &bob().public_key(), "hello, bob").expect("seal");
        let opened = open(&bob(), &alice().public_key(), &body).expect("open");
        assert_eq!(opened.text, "hello, bob");
        assert_eq!(opened.from, alice().public_key());
        assert_eq!(opened.v, 1);
    }

    #[test]
    fn the_derived_secret_matches_the_derived_public_key() {
        let derived = decryption_key(&bob()).public_key();
        let converted = encryption_key(&bob().public_key()).expect("key");
        assert_eq!(derived.as_bytes(), converted.as_bytes());
    }

    #[test]
    fn sealing_is_randomised() {
        let a = seal_text(&alice(), &bob().public_key(), "same").expect("seal");
        let b = seal_text(&alice(), &bob().public_key(), "same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn the_wrong_recipient_cannot_open() {
        let body = seal_text(&alice(), &bob().public_key(), "for bob only").expect("seal");
        let carol = Identity::from_seed([3; 32]);
        assert_eq!(
            open(&carol, &alice().public_key(), &body),
            Err(SealError::Decrypt)
        );
    }

    #[test]
    fn a_tampered_body_does_not_open() {
        let body = seal_text(&alice(), &bob().public_key(), "original").expect("seal");
        for i in [0, 32, body.len() - 1] {
            let mut tampered = body.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                open(&bob(), &alice().public_key(), &tampered),
                Err(SealError::Decrypt),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&bob(), &alice().public_key(), &body[..20]),
            Err(SealError::Decrypt)
        );
    }

    #[test]
    fn a_resigned_ciphertext_is_caught() {
        // Carol takes Alice's ciphertext and signs an envelope with it as her own.
        let body = seal_text(&alice(), &bob().public_key(), "from alice").expect("seal");
        let carol = Identity::from_seed([3; 32]);
        assert!(matches!(
            open(&bob(), &carol.public_key(), &body),
            Err(SealError::SenderMismatch { .. })
        ));
    }

    #[test]
    fn unknown_versions_and_foreign_plaintexts_are_refused() {
        let key = encryption_key(&bob().public_key()).expect("key");
        let from = alice().public_key().to_hex();
        let v2 = format!(r#"{{"v":2,"from":"{from}","text":"x"}}"#);
        let body = key
            .seal(&mut rand::rngs::OsRng, v2.as_bytes())
            .expect("seal");
        assert_eq!(
            open(&bob(), &alice().public_key(), &body),
            Err(SealError::UnsupportedVersion(2))
        );
        let body = key
            .seal(&mut rand::rngs::OsRng, b"plain bytes")
            .expect("seal");
        assert!(matches!(
            open(&bob(), &alice().public_key(), &body),
            Err(SealError::Payload(_))
        ));
    }

    #[test]
    fn extra_members_are_ignored_for_forward_compatibility() {
        let key = encryption_key(&bob().public_key()).expect("key");
        let from = alice().public_key().to_hex();
        let json = format!(r#"{{"v":1,"from":"{from}","text":"hi","reply_to":"abc"}}"#);
        let body = key
            .seal(&mut rand::rngs::OsRng, json.as_bytes())
            .expect("seal");
        let opened = open(&bob(), &alice().public_key(), &body).expect("open");
        assert_eq!(opened.text, "hi");
    }

    #[test]
    fn bad_recipient_keys_are_refused_with_a_reason() {
        assert!(parse_recipient("zz").is_err());
        assert!(parse_recipient(&"ab".repeat(31)).is_err());
        // The identity point: valid encoding, small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_recipient(&hex::encode(identity)).is_err());
        let ok = parse_recipient(&bob().public_key().to_hex()).expect("valid key");
        assert_eq!(ok, bob().public_key());
    }
}
