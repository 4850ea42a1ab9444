//! Every frame of protocol v1, in both directions, and the typed error codes.
//!
//! Frames are internally tagged by `type`. The same definitions serve JSON (text
//! frames) and MessagePack (binary frames, maps with the same field names).

use serde::{Deserialize, Serialize, Serializer};
use std::sync::Arc;

use super::bytes::{b64_bytes, hex_bytes};
use super::envelope::{Envelope, WireEnvelope};
use super::keys::{KeyField, MessageId, PublicKey};

/// A position in one inbox: the epoch it belongs to and the last sequence number seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Answer to `challenge`: proves possession of `key`.
    Auth {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
        timestamp: u64,
        #[serde(with = "b64_bytes")]
        signature: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<Cursor>,
    },
    /// Submit an envelope. `ref` is echoed in the answer so clients can pipeline.
    Send {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        envelope: WireEnvelope,
    },
    /// Cumulative acknowledgement: every delivered message with `seq` at or below this
    /// one is processed and may be deleted.
    Ack { seq: u64 },
    /// Any other `type`: answered with an `unknown_frame` error.
    #[serde(other)]
    Unknown,
}

/// Why the relay reports a gap before the next deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Messages after the client's cursor expired (TTL) before they were acknowledged.
    Expired,
    /// The cursor's epoch is not the inbox's: the inbox history was lost or reset.
    EpochChanged,
}

/// Frames the relay sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session.
    Challenge {
        #[serde(with = "hex_bytes")]
        nonce: Vec<u8>,
        /// The `host[:port]` the relay believes it is reached at; the client signs the
        /// origin it dialled and should refuse to answer if these differ.
        origin: String,
        timestamp: u64,
    },
    /// Authentication succeeded. `window` is the number of unacknowledged deliveries
    /// the relay sends before it waits for an `ack`.
    Ready {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
        epoch: u64,
        window: u32,
    },
    /// Messages after the client's cursor were lost. The client's cursor moves to
    /// `(epoch, seq)`; the deliveries that follow come after it.
    Gap {
        epoch: u64,
        seq: u64,
        reason: GapReason,
    },
    /// One message. Stored messages carry `seq`; ephemeral ones do not.
    Deliver {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        id: MessageId,
        envelope: Arc<Envelope>,
    },
    /// The backlog that was queued at authentication time has been sent.
    Synced { epoch: u64, seq: u64 },
    /// A `send` was stored (or was already stored: `duplicate`), or, for an ephemeral
    /// envelope, pushed to `online` recipient sessions.
    Accepted {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        id: MessageId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        online: Option<bool>,
    },
    /// A typed error. With `ref`, it answers that `send`.
    Error {
        code: ErrorCode,
        detail: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        /// Milliseconds to wait before retrying (rate limits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Machine-readable error codes, shared by WebSocket error frames and HTTP bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Malformed,
    UnknownFrame,
    UnsupportedMediaType,
    InvalidKey,
    BadSignature,
    StaleTimestamp,
    TooLarge,
    Unauthorized,
    Forbidden,
    AuthRequired,
    AlreadyAuthenticated,
    NotFound,
    MethodNotAllowed,
    CursorAhead,
    RateLimited,
    TooManyConnections,
    InboxFull,
    StoreFull,
    Unavailable,
    Internal,
    /// A request body did not arrive within its deadline (an upload).
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownFrame => "unknown_frame",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::CursorAhead => "cursor_ahead",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::InboxFull => "inbox_full",
            ErrorCode::StoreFull => "store_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
        }
    }
}

/// A message id is hex in JSON and 32 raw bytes in MessagePack.
impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hex_bytes::serialize(self.as_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = hex_bytes::deserialize(d)?;
        MessageId::from_slice(&bytes)
            .ok_or_else(|| serde::de::Error::custom("message id must be 32 bytes"))
    }
}

/// A public key is hex in JSON and 32 raw bytes in MessagePack.
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hex_bytes::serialize(self.as_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = hex_bytes::deserialize(d)?;
        PublicKey::from_slice(&bytes, KeyField::Key).map_err(serde::de::Error::custom)
    }
}

/// Borrowing view used to serialise an [`Envelope`] without copying its body.
#[derive(Serialize)]
struct WireEnvelopeRef<'a> {
    #[serde(with = "hex_bytes")]
    recipient: &'a [u8],
    #[serde(with = "hex_bytes")]
    sender: &'a [u8],
    timestamp: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
    #[serde(with = "b64_bytes")]
    body: &'a [u8],
    #[serde(with = "b64_bytes")]
    signature: &'a [u8],
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireEnvelopeRef {
            recipient: self.recipient.as_bytes(),
            sender: self.sender.as_bytes(),
            timestamp: self.timestamp,
            ephemeral: self.ephemeral,
            body: &self.body,
            signature: self.signature.as_bytes(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireEnvelope::deserialize(d)?;
        Envelope::try_from(wire).map_err(serde::de::Error::custom)
    }
}
