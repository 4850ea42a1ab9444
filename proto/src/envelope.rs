//! The signed envelope, its canonical signing bytes, its id, and verification.
//!
//! `WireEnvelope` is what the codecs read and write; `Envelope` is the same data with
//! every length checked; `VerifiedEnvelope` can only be built by [`Envelope::verify`] (or its split form,
//! [`Envelope::signature_check`] then [`verify_envelopes`] or [`EnvelopeCheck::verify`]),
//! so the relay's write path cannot be handed a message whose signature or timestamp
//! was not checked.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bytes::{b64_bytes, hex_bytes};
use super::keys::{KeyField, MessageId, PublicKey, Signature};
use super::signature::{verify_batch, SenderKey, SignatureCheck};
use super::{InboxId, ProtocolError};

/// Domain separation tag that starts every envelope's signing bytes.
pub const ENVELOPE_DOMAIN: &[u8] = b"whispr-envelope-v1\0";

/// Bit 0 of the flags byte: online-only message, never queued.
const FLAG_EPHEMERAL: u8 = 0x01;

/// An envelope as it appears inside frames and HTTP bodies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEnvelope {
    #[serde(with = "hex_bytes")]
    pub recipient: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub sender: Vec<u8>,
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    #[serde(with = "b64_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "b64_bytes")]
    pub signature: Vec<u8>,
}

/// An envelope whose fields have the right lengths (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub recipient: PublicKey,
    pub sender: PublicKey,
    pub timestamp: u64,
    pub ephemeral: bool,
    pub body: Vec<u8>,
    pub signature: Signature,
}

/// An envelope whose signature verified (PROTOCOL.md §2.2) and whose timestamp was inside the
/// clock-skew window when it was checked. Only [`Envelope::verify`] makes one, and
/// `whispr_v1::SendV1::verify` for a Whispr v1 message (its v1 signature checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEnvelope {
    envelope: Envelope,
    id: MessageId,
    /// Where it is stored: set here, by whichever check built it.
    inbox: InboxId,
}

impl TryFrom<WireEnvelope> for Envelope {
    type Error = ProtocolError;

    fn try_from(w: WireEnvelope) -> Result<Self, ProtocolError> {
        Ok(Envelope {
            recipient: PublicKey::from_slice(&w.recipient, KeyField::Recipient)?,
            sender: PublicKey::from_slice(&w.sender, KeyField::Sender)?,
            timestamp: w.timestamp,
            ephemeral: w.ephemeral,
            body: w.body,
            signature: Signature::from_slice(&w.signature)?,
        })
    }
}

impl From<&Envelope> for WireEnvelope {
    fn from(e: &Envelope) -> Self {
        WireEnvelope {
            recipient: e.recipient.as_bytes().to_vec(),
            sender: e.sender.as_bytes().to_vec(),
            timestamp: e.timestamp,
            ephemeral: e.ephemeral,
            body: e.body.clone(),
            signature: e.signature.as_bytes().to_vec(),
        }
    }
}

/// The exact bytes an envelope's signature covers:
/// `"whispr-envelope-v1\0" || recipient(32) || sender(32) || timestamp(u64 BE) || flags(u8) || body`.
/// Every field before the body has a fixed length, so the encoding is unambiguous.
pub fn signing_bytes(
    recipient: &PublicKey,
    sender: &PublicKey,
    timestamp: u64,
    ephemeral: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_DOMAIN.len() + 32 + 32 + 8 + 1 + body.len());
    out.extend_from_slice(ENVELOPE_DOMAIN);
    out.extend_from_slice(recipient.as_bytes());
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.push(if ephemeral { FLAG_EPHEMERAL } else { 0 });
    out.extend_from_slice(body);
    out
}

/// The message id: SHA-256 of the signing bytes, not of the signature, so every valid
/// signature of the same signing bytes names the same message (the store dedupes by id).
pub fn message_id(signing_bytes: &[u8]) -> MessageId {
    MessageId::from_bytes(Sha256::digest(signing_bytes).into())
}

impl Envelope {
    /// Builds and signs an envelope (client side).
    pub fn seal(
        identity: &super::Identity,
        recipient: PublicKey,
        timestamp: u64,
        ephemeral: bool,
        body: Vec<u8>,
    ) -> Envelope {
        let sender = identity.public_key();
        let bytes = signing_bytes(&recipient, &sender, timestamp, ephemeral, &body);
        Envelope {
            recipient,
            sender,
            timestamp,
            ephemeral,
            body,
            signature: identity.sign(&bytes),
        }
    }

    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(
            &self.recipient,
            &self.sender,
            self.timestamp,
            self.ephemeral,
            &self.body,
        )
    }

    pub fn id(&self) -> MessageId {
        message_id(&self.signing_bytes())
    }

    /// Verifies the signature (PROTOCOL.md §2.2), then the timestamp against `now_ms`
    /// within `max_skew_ms` either way. Old envelopes are refused so that a captured one
    /// cannot be replayed once the relay no longer remembers its id.
    pub fn verify(self, now_ms: u64, max_skew_ms: u64) -> Result<VerifiedEnvelope, ProtocolError> {
        let key = self.sender.sender_key()?;
        self.signature_check(key)
            .verify()?
            .check_timestamp(now_ms, max_skew_ms)
    }

    /// The envelope with what its signature check needs, to verify it alone
    /// ([`EnvelopeCheck::verify`]) or in a batch ([`verify_envelopes`]). `sender_key`
    /// must be the checked key of `self.sender` ([`PublicKey::sender_key`]; the relay
    /// caches it).
    pub fn signature_check(self, sender_key: SenderKey) -> EnvelopeCheck {
        debug_assert_eq!(sender_key.public_key(), &self.sender);
        let check = SignatureCheck {
            key: sender_key,
            message: self.signing_bytes(),
            signature: self.signature,
        };
        EnvelopeCheck {
            envelope: self,
            check,
        }
    }
}

/// An envelope whose signature is still to be checked.
#[derive(Clone, Debug)]
pub struct EnvelopeCheck {
    envelope: Envelope,
    check: SignatureCheck,
}

/// An envelope whose signature verified; its timestamp is still to be checked, so that a
/// stale timestamp under a good signature is told apart from a bad signature.
#[derive(Debug)]
pub struct SignedEnvelope(EnvelopeCheck);

impl EnvelopeCheck {
    pub fn sender(&self) -> &PublicKey {
        &self.envelope.sender
    }

    pub fn verify(self) -> Result<SignedEnvelope, ProtocolError> {
        self.check.verify()?;
        Ok(SignedEnvelope(self))
    }
}

/// Verifies many envelopes in one batch equation, with the verdict each would get alone
/// ([`crate::signature::verify_batch`]): one bad signature is refused, the others pass.
pub fn verify_envelopes(checks: Vec<EnvelopeCheck>) -> Vec<Result<SignedEnvelope, ProtocolError>> {
    let (envelopes, checks): (Vec<Envelope>, Vec<SignatureCheck>) =
        checks.into_iter().map(|c| (c.envelope, c.check)).unzip();
    let verdicts = verify_batch(&checks);
    envelopes
        .into_iter()
        .zip(checks)
        .zip(verdicts)
        .map(|((envelope, check), verdict)| {
            verdict.map(|()| SignedEnvelope(EnvelopeCheck { envelope, check }))
        })
        .collect()
}

impl SignedEnvelope {
    pub fn check_timestamp(
        self,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<VerifiedEnvelope, ProtocolError> {
        let EnvelopeCheck { envelope, check } = self.0;
        check_timestamp(envelope.timestamp, now_ms, max_skew_ms)?;
        Ok(VerifiedEnvelope {
            id: message_id(&check.message),
            inbox: InboxId::Native(envelope.recipient),
            envelope,
        })
    }
}

/// Refuses timestamps further than `max_skew_ms` from `now_ms` in either direction.
pub fn check_timestamp(timestamp: u64, now_ms: u64, max_skew_ms: u64) -> Result<(), ProtocolError> {
    let skew = now_ms.abs_diff(timestamp);
    if skew > max_skew_ms {
        return Err(ProtocolError::StaleTimestamp {
            skew_ms: skew,
            max_skew_ms,
        });
    }
    Ok(())
}

impl VerifiedEnvelope {
    /// Wraps a Whispr v1 message whose v1 signature `whispr_v1::SendV1::verify` has just
    /// checked strictly. Private to `protocol`, so that function stays the only other
    /// door to the store besides [`Envelope::verify`].
    pub(super) fn from_whispr_v1(envelope: Envelope, id: MessageId) -> Self {
        let inbox = InboxId::WhisprV1(envelope.recipient);
        VerifiedEnvelope {
            envelope,
            id,
            inbox,
        }
    }

    /// The inbox it is stored in: native for [`Envelope::verify`], a v1 inbox only for a
    /// Whispr v1 message.
    pub fn inbox(&self) -> InboxId {
        self.inbox
    }

    pub fn id(&self) -> MessageId {
        self.id
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn recipient(&self) -> &PublicKey {
        &self.envelope.recipient
    }

    pub fn sender(&self) -> &PublicKey {
        &self.envelope.sender
    }

    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }
}
