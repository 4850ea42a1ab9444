//! The checks of `proto/vectors/` that need the server: sign-in through the session's
//! `Unauthenticated` state (auth.json, negative_auth.json), envelopes inside `send`
//! frames and malformed frames through the session's decoder, HTTP statuses of refused
//! signed requests, and every error and close code against `whispr::error`. The
//! protocol's own checks (envelopes, signed requests, frames, clock skew, torsion) are in
//! `proto/tests/vectors.rs`; the loader and helpers are shared with it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;

use whispr::error::{close_code, http_status};
use whispr::protocol::{
    auth_signing_bytes, verify_auth, ClientFrame, Codec, Cursor, Envelope, ErrorCode, HttpAuth,
    ServerFrame, Signature, WireEnvelope,
};
use whispr::testing::session::{auth_refusal, decode_frame, Frame, Unauthenticated};

use crate::vector_checks::{check_encodings, code, seed, unhex, Encodings};
use crate::vector_files::{load, vectors_dir, VectorFile};

// ---------------------------------------------------------------------------------
// auth.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthVector {
    name: String,
    description: String,
    seed_hex: String,
    key_hex: String,
    origin: String,
    challenge: ChallengeFrame,
    timestamp: u64,
    cursor: Option<CursorValue>,
    signing_bytes_hex: String,
    signature_hex: String,
    signature_base64: String,
    auth: Encodings,
    ready: ReadyFrame,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeFrame {
    nonce_hex: String,
    timestamp: u64,
    json: String,
    msgpack_hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyFrame {
    epoch: u64,
    window: u32,
    json: String,
    msgpack_hex: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct CursorValue {
    epoch: u64,
    seq: u64,
}

#[test]
fn auth() {
    let file: VectorFile<AuthVector> = load("auth.json");
    for v in &file.vectors {
        let name = v.name.as_str();
        assert!(!v.description.is_empty(), "{name}: description");
        let identity = seed(&v.seed_hex);
        let key = identity.public_key();
        assert_eq!(key.to_hex(), v.key_hex, "{name}: key from seed");
        let nonce: [u8; 32] = unhex(&v.challenge.nonce_hex)
            .try_into()
            .expect("32-byte nonce");
        check_encodings(
            &format!("{name} challenge"),
            &v.challenge.json,
            &v.challenge.msgpack_hex,
            &ServerFrame::Challenge {
                nonce: nonce.to_vec(),
                origin: v.origin.clone(),
                timestamp: v.challenge.timestamp,
            },
        );

        let bytes = auth_signing_bytes(&nonce, &key, v.timestamp, &v.origin);
        assert_eq!(
            hex::encode(&bytes),
            v.signing_bytes_hex,
            "{name}: signing bytes"
        );
        let mut spec = b"whispr-auth-v1\x00".to_vec();
        spec.extend_from_slice(&nonce);
        spec.extend_from_slice(&unhex(&v.key_hex));
        spec.extend_from_slice(&v.timestamp.to_be_bytes());
        spec.extend_from_slice(v.origin.as_bytes());
        assert_eq!(
            spec, bytes,
            "{name}: signing bytes do not follow the documented layout"
        );

        let sig_bytes = unhex(&v.signature_hex);
        assert_eq!(
            BASE64.encode(&sig_bytes),
            v.signature_base64,
            "{name}: signature base64"
        );
        let signature = Signature::from_slice(&sig_bytes).unwrap();
        assert_eq!(identity.sign(&bytes), signature, "{name}: signature");
        verify_auth(
            &nonce,
            &key,
            v.timestamp,
            &v.origin,
            &signature,
            v.timestamp,
            300_000,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));

        let cursor = v.cursor.map(|c| Cursor {
            epoch: c.epoch,
            seq: c.seq,
        });
        let frame = ClientFrame::Auth {
            key: key.as_bytes().to_vec(),
            timestamp: v.timestamp,
            signature: sig_bytes,
            cursor,
        };
        check_encodings(
            &format!("{name} auth"),
            &v.auth.json,
            &v.auth.msgpack_hex,
            &frame,
        );
        let state = Unauthenticated {
            nonce,
            origin: v.origin.clone(),
        };
        // The session reads the frame as the relay decodes it from the wire.
        let decoded = decode_frame(Codec::Json, v.auth.json.as_bytes(), 1 << 20)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ok = state
            .on_frame(decoded, v.timestamp, 300_000)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (ok.key, ok.cursor),
            (key, cursor),
            "{name}: what auth establishes"
        );

        assert!(
            (1..1u64 << 53).contains(&v.ready.epoch),
            "{name}: epochs are in [1, 2^53)"
        );
        check_encodings(
            &format!("{name} ready"),
            &v.ready.json,
            &v.ready.msgpack_hex,
            &ServerFrame::Ready {
                key: key.as_bytes().to_vec(),
                epoch: v.ready.epoch,
                window: v.ready.window,
            },
        );
    }
}

// ---------------------------------------------------------------------------------
// negative_envelopes.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NegativeEnvelope {
    name: String,
    description: String,
    json: String,
    now_ms: u64,
    max_skew_ms: u64,
    #[serde(default)]
    lax_verify_accepts: Option<bool>,
    error: String,
}

#[test]
fn negative_envelopes() {
    let file: VectorFile<NegativeEnvelope> = load("negative_envelopes.json");
    for v in &file.vectors {
        // The relay's order: decode, key and signature lengths, strict signature, clock.
        let result = Codec::Json
            .decode::<WireEnvelope>(v.json.as_bytes())
            .and_then(Envelope::try_from)
            .and_then(|e| e.verify(v.now_ms, v.max_skew_ms));
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", v.name));
        assert_eq!(err.code(), code(&v.error), "{}: {err}", v.name);
        assert!(!v.description.is_empty(), "{}: description", v.name);
        if v.lax_verify_accepts.is_some() {
            assert_eq!(
                err.code(),
                ErrorCode::BadSignature,
                "{}: lax_verify_accepts is about signatures",
                v.name
            );
        }
        // Inside a send frame the same envelope gets the same answer.
        let frame = format!(r#"{{"type":"send","ref":1,"envelope":{}}}"#, v.json);
        let in_frame = decode_frame(Codec::Json, frame.as_bytes(), 1 << 20).and_then(|f| match f {
            Frame::Send { envelope, .. } => {
                Envelope::try_from(envelope)?.verify(v.now_ms, v.max_skew_ms)
            }
            other => panic!("{}: decoded as {other:?}", v.name),
        });
        assert_eq!(
            in_frame.err().map(|e| e.code()),
            Some(err.code()),
            "{}: inside a send frame",
            v.name
        );
    }
}

// ---------------------------------------------------------------------------------
// negative_auth.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NegativeAuth {
    name: String,
    description: String,
    nonce_hex: String,
    origin: String,
    now_ms: u64,
    max_skew_ms: u64,
    json: String,
    error: String,
    close_code: u16,
}

#[test]
fn negative_auth() {
    let file: VectorFile<NegativeAuth> = load("negative_auth.json");
    for v in &file.vectors {
        let state = Unauthenticated {
            nonce: unhex(&v.nonce_hex).try_into().expect("32-byte nonce"),
            origin: v.origin.clone(),
        };
        let err = decode_frame(Codec::Json, v.json.as_bytes(), 1 << 20)
            .and_then(|f| state.on_frame(f, v.now_ms, v.max_skew_ms))
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", v.name));
        // The session answers a missing auth with `auth_required`, anything else with
        // the error's own code, then closes with 4003.
        let sent = match auth_refusal(&err) {
            ServerFrame::Error { code, .. } => code,
            other => panic!("{}: answered {other:?}", v.name),
        };
        assert_eq!(sent, code(&v.error), "{}: {err}", v.name);
        assert!(!v.description.is_empty(), "{}: description", v.name);
        assert_eq!(v.close_code, close_code::AUTH_FAILED, "{}", v.name);
    }
}

// ---------------------------------------------------------------------------------
// negative_http.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NegativeHttp {
    name: String,
    description: String,
    method: String,
    path_and_query: String,
    origin: String,
    now_ms: u64,
    max_skew_ms: u64,
    authorization: String,
    cause: String,
    error: String,
    http_status: u16,
}

#[test]
fn negative_http() {
    let file: VectorFile<NegativeHttp> = load("negative_http.json");
    for v in &file.vectors {
        let err = HttpAuth::parse(&v.authorization)
            .and_then(|a| {
                a.verify(
                    &v.origin,
                    &v.method,
                    &v.path_and_query,
                    v.now_ms,
                    v.max_skew_ms,
                )
            })
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", v.name));
        assert_eq!(err.code(), code(&v.cause), "{}: {err}", v.name);
        assert!(!v.description.is_empty(), "{}: description", v.name);
        assert_eq!(code(&v.error), ErrorCode::Unauthorized, "{}", v.name);
        assert_eq!(
            http_status(code(&v.error)).as_u16(),
            v.http_status,
            "{}",
            v.name
        );
    }
}

// ---------------------------------------------------------------------------------
// negative_frames.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NegativeFrame {
    name: String,
    description: String,
    codec: String,
    json: Option<String>,
    msgpack_hex: Option<String>,
    max_frame_bytes: usize,
    error: String,
}

#[test]
fn negative_frames() {
    let file: VectorFile<NegativeFrame> = load("negative_frames.json");
    for v in &file.vectors {
        let (codec, bytes) = match (v.codec.as_str(), &v.json, &v.msgpack_hex) {
            ("json", Some(j), None) => (Codec::Json, j.as_bytes().to_vec()),
            ("msgpack", None, Some(h)) => (Codec::MsgPack, unhex(h)),
            _ => panic!("{}: codec and data do not match", v.name),
        };
        let err = decode_frame(codec, &bytes, v.max_frame_bytes)
            .err()
            .unwrap_or_else(|| panic!("{}: decoded", v.name));
        assert_eq!(err.code(), code(&v.error), "{}: {err}", v.name);
        assert!(!v.description.is_empty(), "{}: description", v.name);
    }
}

// ---------------------------------------------------------------------------------
// errors.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsFile {
    description: String,
    generator: String,
    error_codes: Vec<ErrorCodeEntry>,
    close_codes: Vec<CloseCodeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorCodeEntry {
    code: String,
    http_status: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseCodeEntry {
    name: String,
    code: u16,
}

/// A position per error code; the match makes a new variant a compile error here, so
/// the vectors and the spec cannot silently miss it.
fn ordinal(code: ErrorCode) -> usize {
    match code {
        ErrorCode::Malformed => 0,
        ErrorCode::UnknownFrame => 1,
        ErrorCode::UnsupportedMediaType => 2,
        ErrorCode::InvalidKey => 3,
        ErrorCode::BadSignature => 4,
        ErrorCode::StaleTimestamp => 5,
        ErrorCode::TooLarge => 6,
        ErrorCode::Unauthorized => 7,
        ErrorCode::Forbidden => 8,
        ErrorCode::AuthRequired => 9,
        ErrorCode::AlreadyAuthenticated => 10,
        ErrorCode::NotFound => 11,
        ErrorCode::MethodNotAllowed => 12,
        ErrorCode::CursorAhead => 13,
        ErrorCode::RateLimited => 14,
        ErrorCode::TooManyConnections => 15,
        ErrorCode::InboxFull => 16,
        ErrorCode::StoreFull => 17,
        ErrorCode::Unavailable => 18,
        ErrorCode::Internal => 19,
        ErrorCode::Timeout => 20,
    }
}

#[test]
fn error_and_close_codes() {
    let text = std::fs::read_to_string(vectors_dir().join("errors.json")).unwrap();
    let file: ErrorsFile = serde_json::from_str(&text).unwrap();
    assert!(!file.description.is_empty());
    assert_eq!(file.generator, "cargo run --example gen_vectors");
    let mut seen = BTreeSet::new();
    for e in &file.error_codes {
        let c = code(&e.code);
        assert_eq!(c.as_str(), e.code);
        assert_eq!(http_status(c).as_u16(), e.http_status, "{}", e.code);
        assert!(seen.insert(ordinal(c)), "{} listed twice", e.code);
    }
    assert_eq!(
        seen,
        (0..=20).collect(),
        "errors.json lists every error code"
    );

    let mut names = BTreeSet::new();
    for c in &file.close_codes {
        let expected = match c.name.as_str() {
            "going_away" => close_code::GOING_AWAY,
            "protocol_error" => close_code::PROTOCOL_ERROR,
            "invalid_payload" => close_code::INVALID_PAYLOAD,
            "too_big" => close_code::TOO_BIG,
            "internal_error" => close_code::INTERNAL_ERROR,
            "replaced" => close_code::REPLACED,
            "slow_consumer" => close_code::SLOW_CONSUMER,
            "auth_failed" => close_code::AUTH_FAILED,
            "auth_timeout" => close_code::AUTH_TIMEOUT,
            "ping_timeout" => close_code::PING_TIMEOUT,
            "unavailable" => close_code::UNAVAILABLE,
            "epoch_changed" => close_code::RESYNC,
            "bad_signatures" => close_code::BAD_SIGNATURES,
            other => panic!("unknown close code name {other}"),
        };
        assert_eq!(c.code, expected, "{}", c.name);
        assert!(names.insert(c.name.clone()), "{} listed twice", c.name);
    }
    assert_eq!(names.len(), 13, "errors.json lists every close code");
}
