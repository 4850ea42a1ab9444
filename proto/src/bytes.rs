//! Byte fields on the wire: hex or base64 text in JSON, raw `bin` in MessagePack.
//!
//! Serialisation follows the serializer's `is_human_readable()` flag (JSON: text,
//! MessagePack: bin). Deserialisation accepts either form, because serde's buffering
//! of internally tagged enums hides the flag from us; the length checks that give a
//! typed error live in the domain types, not here.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// How a byte field is spelled in text encodings.
#[derive(Clone, Copy)]
enum TextForm {
    Hex,
    Base64,
}

fn serialize<S: Serializer>(bytes: &[u8], form: TextForm, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        match form {
            TextForm::Hex => s.serialize_str(&hex::encode(bytes)),
            TextForm::Base64 => s.serialize_str(&BASE64.encode(bytes)),
        }
    } else {
        s.serialize_bytes(bytes)
    }
}

struct BytesVisitor(TextForm);

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            TextForm::Hex => f.write_str("a lowercase hex string or MessagePack bin"),
            TextForm::Base64 => f.write_str("a standard base64 string or MessagePack bin"),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        match self.0 {
            TextForm::Hex => hex::decode(v).map_err(|e| E::custom(format!("invalid hex: {e}"))),
            TextForm::Base64 => BASE64
                .decode(v)
                .map_err(|e| E::custom(format!("invalid base64: {e}"))),
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

/// `#[serde(with = "hex_bytes")]`: hex in JSON, bin in MessagePack.
pub mod hex_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        super::serialize(v, TextForm::Hex, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesVisitor(TextForm::Hex))
    }
}

/// `#[serde(with = "b64_bytes")]`: base64 in JSON, bin in MessagePack.
pub mod b64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        super::serialize(v, TextForm::Base64, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesVisitor(TextForm::Base64))
    }
}
