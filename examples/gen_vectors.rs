//! Generates the protocol v1 test vectors in `proto/vectors/`.
//!
//! Everything is derived from fixed Ed25519 seeds, fixed timestamps and a fixed nonce
//! through the crate's public API (`whispr::protocol`), so the output is deterministic
//! (Ed25519 signatures are deterministic) and a rerun reproduces the committed files
//! byte for byte. Before writing, every vector is checked against the implementation,
//! so a file is never written with a vector the relay would disagree with.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run --example gen_vectors            # writes proto/vectors/*.json
//! cargo run --example gen_vectors -- DIR     # writes into DIR instead
//! ```
//!
//! Each file's vectors are built in `gen_vectors/` (envelopes, auth, frames).
//! `tests/it/vectors.rs` reads the committed files and checks the implementation against
//! them; it never regenerates them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::Verifier;
use serde::Serialize;
use std::error::Error;
use std::path::{Path, PathBuf};

use whispr::error::{close_code, http_status};
use whispr::protocol::{
    auth_signing_bytes, check_timestamp, http_signing_bytes, message_id, signing_bytes,
    verify_auth, ClientFrame, Codec, Cursor, Envelope, ErrorCode, GapReason, HttpAuth, Identity,
    KeyField, ProtocolError, PublicKey, ServerFrame, WireEnvelope,
};
use whispr::testing::session::{decode_frame, Frame, Unauthenticated};

#[path = "gen_vectors/auth.rs"]
mod auth;
#[path = "gen_vectors/envelopes.rs"]
mod envelopes;
#[path = "gen_vectors/frames.rs"]
mod frames;

const GENERATOR: &str = "cargo run --example gen_vectors";
/// The relay's default `max_clock_skew_seconds` (300), in milliseconds.
const MAX_SKEW_MS: u64 = 300_000;
/// 2023-11-14T22:13:20Z: the base of every timestamp in the vectors.
const T0: u64 = 1_700_000_000_000;
/// An inbox epoch: any value in [1, 2^53).
const EPOCH: u64 = 1_234_567_890_123;
/// The largest epoch a relay may pick: 2^53 - 1.
const MAX_EPOCH: u64 = (1 << 53) - 1;
/// The relay's default `ws_max_inflight`.
const WINDOW: u32 = 256;
/// A frame size limit for the negative frame vectors (any value works).
const MAX_FRAME_BYTES: usize = 89_432;
/// The group order L of Ed25519, little-endian (for the non-canonical S vector).
const ORDER_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn alice() -> Identity {
    Identity::from_seed([0x01; 32])
}

fn bob() -> Identity {
    Identity::from_seed([0x02; 32])
}

fn carol() -> Identity {
    Identity::from_seed([0x03; 32])
}

/// The fixed challenge nonce: bytes 0x00, 0x01, ..., 0x1f.
fn nonce() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// A vector file: what it pins, how to regenerate it, and the vectors.
#[derive(Serialize)]
pub struct VectorFile<T> {
    description: &'static str,
    generator: &'static str,
    vectors: Vec<T>,
}

/// One value in both encodings: the exact JSON text and the MessagePack bytes in hex.
#[derive(Serialize)]
pub struct Encodings {
    json: String,
    msgpack_hex: String,
}

fn encodings<T: Serialize>(value: &T) -> Encodings {
    let json = match Codec::Json.encode(value).expect("JSON encoding") {
        whispr::protocol::Encoded::Text(t) => t,
        whispr::protocol::Encoded::Binary(_) => unreachable!("JSON is text"),
    };
    let msgpack = Codec::MsgPack
        .encode(value)
        .expect("MessagePack encoding")
        .into_bytes();
    Encodings {
        json,
        msgpack_hex: hex::encode(msgpack),
    }
}

/// Compact JSON of any value (for the negative vectors, which are not frames).
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON")
}

/// Asserts that both encodings of a frame decode to `expected`.
fn assert_round_trip<T>(enc: &Encodings, expected: &T)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let from_json: T = Codec::Json
        .decode(enc.json.as_bytes())
        .expect("JSON decodes");
    let from_msgpack: T = Codec::MsgPack
        .decode(&hex::decode(&enc.msgpack_hex).expect("hex"))
        .expect("MessagePack decodes");
    assert_eq!(&from_json, expected);
    assert_eq!(&from_msgpack, expected);
}

// ---------------------------------------------------------------------------------

fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), Box<dyn Error>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/vectors"),
    };
    std::fs::create_dir_all(&dir)?;
    write(&dir, "envelopes.json", &envelopes::envelopes())?;
    write(&dir, "auth.json", &auth::auth())?;
    write(&dir, "http.json", &auth::http())?;
    write(&dir, "frames.json", &frames::frames())?;
    write(&dir, "clock_skew.json", &frames::clock_skew())?;
    write(
        &dir,
        "negative_envelopes.json",
        &envelopes::negative_envelopes(),
    )?;
    write(&dir, "torsion.json", &envelopes::torsion_envelopes())?;
    write(&dir, "negative_auth.json", &auth::negative_auth())?;
    write(&dir, "negative_http.json", &auth::negative_http())?;
    write(&dir, "negative_frames.json", &frames::negative_frames())?;
    write(&dir, "errors.json", &frames::errors())?;
    Ok(())
}
