//! Protocol v1 wire format: keys, envelopes, signing bytes, frames and codecs.
//!
//! Pure: no I/O, no clock (callers pass `now`), no async. Everything a client in another
//! language needs is specified in `proto/PROTOCOL.md` and pinned by `proto/vectors/`.

mod auth;
mod bytes;
mod codec;
mod envelope;
mod frames;
mod inbox;
mod keys;
pub mod signature;
pub mod whispr_v1;

pub use auth::{auth_signing_bytes, http_signing_bytes, verify_auth, HttpAuth, NONCE_LEN};
pub use codec::{
    Codec, Encoded, CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK,
};
pub use envelope::{
    check_timestamp, message_id, signing_bytes, verify_envelopes, Envelope, EnvelopeCheck,
    SignedEnvelope, VerifiedEnvelope, WireEnvelope,
};
pub use frames::{ClientFrame, Cursor, ErrorCode, GapReason, ServerFrame};
pub use inbox::InboxId;
pub use keys::{Identity, KeyField, MessageId, PublicKey, Signature};
pub use signature::SenderKey;

/// The protocol version served under `/v1`.
pub const PROTOCOL_VERSION: &str = "whispr.v1";

/// What can be wrong with bytes a peer sent, before any state is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Malformed(String),
    #[error("unknown frame type (expected auth, send or ack)")]
    UnknownFrame,
    #[error("invalid {field} key: {detail}")]
    InvalidKey { field: KeyField, detail: String },
    #[error("invalid signature: {detail}")]
    BadSignature { detail: String },
    #[error("timestamp is {skew_ms} ms away from the relay's clock (allowed: {max_skew_ms} ms)")]
    StaleTimestamp { skew_ms: u64, max_skew_ms: u64 },
    #[error("{size} bytes is over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("{detail}")]
    Unauthorized { detail: String },
    #[error("internal encoding error: {0}")]
    Internal(String),
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed(_) => ErrorCode::Malformed,
            ProtocolError::UnknownFrame => ErrorCode::UnknownFrame,
            ProtocolError::InvalidKey { .. } => ErrorCode::InvalidKey,
            ProtocolError::BadSignature { .. } => ErrorCode::BadSignature,
            ProtocolError::StaleTimestamp { .. } => ErrorCode::StaleTimestamp,
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::Unauthorized { .. } => ErrorCode::Unauthorized,
            ProtocolError::Internal(_) => ErrorCode::Internal,
        }
    }
}
