//! The two encodings of every frame and body: JSON and MessagePack.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ProtocolError;

/// WebSocket subprotocol for JSON text frames.
pub const SUBPROTOCOL_JSON: &str = "whispr.v1.json";
/// WebSocket subprotocol for MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "whispr.v1.msgpack";
/// HTTP Content-Type for MessagePack bodies (`application/x-msgpack` is accepted too).
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A frame encoding, chosen once per session (subprotocol) or per request (Content-Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Json,
    MsgPack,
}

/// An encoded frame: JSON travels in text frames, MessagePack in binary frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    Text(String),
    Binary(Vec<u8>),
}

impl Encoded {
    pub fn len(&self) -> usize {
        match self {
            Encoded::Text(s) => s.len(),
            Encoded::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Encoded::Text(s) => s.into_bytes(),
            Encoded::Binary(b) => b,
        }
    }
}

impl Codec {
    /// Picks the codec for a WebSocket subprotocol name.
    pub fn from_subprotocol(name: &str) -> Option<Codec> {
        match name {
            SUBPROTOCOL_JSON => Some(Codec::Json),
            SUBPROTOCOL_MSGPACK => Some(Codec::MsgPack),
            _ => None,
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => SUBPROTOCOL_JSON,
            Codec::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Picks the codec for an HTTP Content-Type (parameters such as charset ignored).
    /// `None` means the media type is not supported.
    pub fn from_content_type(value: &str) -> Option<Codec> {
        let media = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            CONTENT_TYPE_JSON => Some(Codec::Json),
            CONTENT_TYPE_MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(Codec::MsgPack)
            }
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => CONTENT_TYPE_JSON,
            Codec::MsgPack => CONTENT_TYPE_MSGPACK,
        }
    }

    /// Encodes a value. Serialising our own frame types cannot fail in practice; if it
    /// ever did, it is a bug, reported as `Internal` rather than a panic.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Encoded, ProtocolError> {
        match self {
            Codec::Json => serde_json::to_string(value)
                .map(Encoded::Text)
                .map_err(|e| ProtocolError::Internal(e.to_string())),
            Codec::MsgPack => rmp_serde::to_vec_named(value)
                .map(Encoded::Binary)
                .map_err(|e| ProtocolError::Internal(e.to_string())),
        }
    }

    /// Decodes a value; any syntax or shape error is `Malformed` with serde's message.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, ProtocolError> {
        match self {
            Codec::Json => serde_json::from_slice(bytes)
                .map_err(|e| ProtocolError::Malformed(format!("invalid JSON: {e}"))),
            Codec::MsgPack => {
                // Like JSON, one value and nothing after it: `from_slice` would ignore
                // trailing bytes, so a frame could carry data no reader looked at.
                let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
                let value = T::deserialize(&mut de)
                    .map_err(|e| ProtocolError::Malformed(format!("invalid MessagePack: {e}")))?;
                let trailing = (bytes.len() as u64).saturating_sub(de.position());
                if trailing > 0 {
                    return Err(ProtocolError::Malformed(format!(
                        "invalid MessagePack: {trailing} trailing bytes after the value"
                    )));
                }
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_are_malformed_in_both_codecs() {
        let ack = serde_json::json!({"type": "ack", "seq": 2});
        let mut msgpack = Codec::MsgPack.encode(&ack).unwrap().into_bytes();
        assert!(Codec::MsgPack.decode::<serde_json::Value>(&msgpack).is_ok());
        msgpack.push(0x00);
        let err = Codec::MsgPack
            .decode::<serde_json::Value>(&msgpack)
            .unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
        assert!(Codec::Json
            .decode::<serde_json::Value>(br#"{"type":"ack","seq":2} x"#)
            .is_err());
    }
}
