//! Helpers shared by the two vector test suites, `proto/tests/vectors.rs` and
//! `tests/it/vectors.rs` (included by both with `#[path]`, like `vector_files.rs`):
//! hex and seeds from the files, error codes by name, and the exact-encoding check.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt::Debug;
use whispr_proto::{Codec, Encoded, ErrorCode, Identity};

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in a vector ({e}): {s}"))
}

pub fn seed(s: &str) -> Identity {
    Identity::from_seed(unhex(s).try_into().expect("a seed is 32 bytes"))
}

pub fn code(s: &str) -> ErrorCode {
    serde_json::from_value(serde_json::Value::from(s))
        .unwrap_or_else(|e| panic!("unknown error code {s}: {e}"))
}

/// Decodes both encodings to `expected` and encodes `expected` to exactly both.
pub fn check_encodings<T>(what: &str, json: &str, msgpack_hex: &str, expected: &T)
where
    T: DeserializeOwned + serde::Serialize + PartialEq + Debug,
{
    let msgpack = unhex(msgpack_hex);
    let from_json: T = Codec::Json
        .decode(json.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: JSON: {e}"));
    assert_eq!(
        &from_json, expected,
        "{what}: JSON decodes to another value"
    );
    let from_msgpack: T = Codec::MsgPack
        .decode(&msgpack)
        .unwrap_or_else(|e| panic!("{what}: MessagePack: {e}"));
    assert_eq!(
        &from_msgpack, expected,
        "{what}: MessagePack decodes to another value"
    );
    assert_eq!(
        Codec::Json.encode(expected).unwrap(),
        Encoded::Text(json.to_string()),
        "{what}: JSON encoding differs"
    );
    assert_eq!(
        hex::encode(Codec::MsgPack.encode(expected).unwrap().into_bytes()),
        msgpack_hex,
        "{what}: MessagePack encoding differs"
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encodings {
    pub json: String,
    pub msgpack_hex: String,
}
