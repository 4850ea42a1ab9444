//! The protocol test vectors in `proto/vectors/` against the implementation.
//!
//! Every vector file is read and checked: signing bytes (also rebuilt here from the
//! layout in `proto/PROTOCOL.md`), strict verification, message ids, exact JSON and
//! MessagePack encodings in both directions, and the error code of every negative
//! vector. The files come from `cargo run --example gen_vectors`; this module only reads
//! them, so a change to the wire format fails here until the vectors (and the spec) are
//! deliberately regenerated.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use whispr::error::{close_code, http_status};
use whispr::protocol::{
    auth_signing_bytes, check_timestamp, http_signing_bytes, message_id, signing_bytes,
    verify_auth, ClientFrame, Codec, Cursor, Encoded, Envelope, ErrorCode, GapReason, HttpAuth,
    Identity, MessageId, ServerFrame, Signature, WireEnvelope,
};
use whispr::testing::session::{auth_refusal, decode_frame, Frame, Unauthenticated};

use crate::vector_files::{load, vectors_dir, VectorFile};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in a vector ({e}): {s}"))
}

fn seed(s: &str) -> Identity {
    Identity::from_seed(unhex(s).try_into().expect("a seed is 32 bytes"))
}

fn code(s: &str) -> ErrorCode {
    serde_json::from_value(serde_json::Value::from(s))
        .unwrap_or_else(|e| panic!("unknown error code {s}: {e}"))
}

/// Decodes both encodings to `expected` and encodes `expected` to exactly both.
fn check_encodings<T>(what: &str, json: &str, msgpack_hex: &str, expected: &T)
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

// ---------------------------------------------------------------------------------
// envelopes.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeVector {
    name: String,
    description: String,
    sender_seed_hex: String,
    sender_hex: String,
    recipient_seed_hex: String,
    recipient_hex: String,
    timestamp: u64,
    ephemeral: bool,
    body_hex: String,
    body_base64: String,
    signing_bytes_hex: String,
    signature_hex: String,
    signature_base64: String,
    id_hex: String,
    envelope: Encodings,
    send: RefFrame,
    accepted: AcceptedFrame,
    deliver: DeliverFrame,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Encodings {
    json: String,
    msgpack_hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefFrame {
    #[serde(rename = "ref")]
    reference: u64,
    json: String,
    msgpack_hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptedFrame {
    #[serde(rename = "ref")]
    reference: u64,
    duplicate: bool,
    online: Option<bool>,
    json: String,
    msgpack_hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverFrame {
    seq: Option<u64>,
    json: String,
    msgpack_hex: String,
}

/// The envelope signing bytes, written out from the spec rather than through the crate.
fn spec_envelope_bytes(
    recipient: &[u8],
    sender: &[u8],
    timestamp: u64,
    ephemeral: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut out = b"whispr-envelope-v1\x00".to_vec();
    out.extend_from_slice(recipient);
    out.extend_from_slice(sender);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.push(u8::from(ephemeral));
    out.extend_from_slice(body);
    out
}

#[test]
fn envelopes() {
    let file: VectorFile<EnvelopeVector> = load("envelopes.json");
    for v in &file.vectors {
        let name = v.name.as_str();
        assert!(!v.description.is_empty(), "{name}: description");
        let (sender, recipient) = (seed(&v.sender_seed_hex), seed(&v.recipient_seed_hex));
        assert_eq!(
            sender.public_key().to_hex(),
            v.sender_hex,
            "{name}: sender key from seed"
        );
        assert_eq!(
            recipient.public_key().to_hex(),
            v.recipient_hex,
            "{name}: recipient key from seed"
        );
        let body = unhex(&v.body_hex);
        assert_eq!(BASE64.encode(&body), v.body_base64, "{name}: body base64");

        let expected_bytes = unhex(&v.signing_bytes_hex);
        let bytes = signing_bytes(
            &recipient.public_key(),
            &sender.public_key(),
            v.timestamp,
            v.ephemeral,
            &body,
        );
        assert_eq!(
            hex::encode(&bytes),
            v.signing_bytes_hex,
            "{name}: signing bytes"
        );
        assert_eq!(
            spec_envelope_bytes(
                &unhex(&v.recipient_hex),
                &unhex(&v.sender_hex),
                v.timestamp,
                v.ephemeral,
                &body
            ),
            expected_bytes,
            "{name}: signing bytes do not follow the documented layout"
        );

        let sig_bytes = unhex(&v.signature_hex);
        assert_eq!(
            BASE64.encode(&sig_bytes),
            v.signature_base64,
            "{name}: signature base64"
        );
        let signature = Signature::from_slice(&sig_bytes).unwrap();
        assert_eq!(
            sender.sign(&bytes),
            signature,
            "{name}: Ed25519 signatures are deterministic"
        );
        sender
            .public_key()
            .verify(&bytes, &signature)
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let id = message_id(&bytes);
        assert_eq!(id.to_hex(), v.id_hex, "{name}: id");
        assert_eq!(
            hex::encode(Sha256::digest(&expected_bytes)),
            v.id_hex,
            "{name}: id is SHA-256 of the signing bytes"
        );

        let envelope = Envelope {
            recipient: recipient.public_key(),
            sender: sender.public_key(),
            timestamp: v.timestamp,
            ephemeral: v.ephemeral,
            body: body.clone(),
            signature,
        };
        let verified = envelope
            .clone()
            .verify(v.timestamp, 300_000)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.id(), id, "{name}: verified id");

        let wire = WireEnvelope {
            recipient: unhex(&v.recipient_hex),
            sender: unhex(&v.sender_hex),
            timestamp: v.timestamp,
            ephemeral: v.ephemeral,
            body,
            signature: sig_bytes,
        };
        check_encodings(
            &format!("{name} envelope"),
            &v.envelope.json,
            &v.envelope.msgpack_hex,
            &wire,
        );
        check_encodings(
            &format!("{name} send"),
            &v.send.json,
            &v.send.msgpack_hex,
            &ClientFrame::Send {
                reference: Some(v.send.reference),
                envelope: wire,
            },
        );
        assert_eq!(
            v.accepted.online,
            v.ephemeral.then_some(true),
            "{name}: online only for ephemeral"
        );
        check_encodings(
            &format!("{name} accepted"),
            &v.accepted.json,
            &v.accepted.msgpack_hex,
            &ServerFrame::Accepted {
                reference: Some(v.accepted.reference),
                id,
                duplicate: v.accepted.duplicate,
                online: v.accepted.online,
            },
        );
        assert_eq!(
            v.deliver.seq.is_none(),
            v.ephemeral,
            "{name}: seq only for stored messages"
        );
        check_encodings(
            &format!("{name} deliver"),
            &v.deliver.json,
            &v.deliver.msgpack_hex,
            &ServerFrame::Deliver {
                seq: v.deliver.seq,
                id,
                envelope: Arc::new(envelope),
            },
        );
    }
}

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
// http.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpVector {
    name: String,
    description: String,
    seed_hex: String,
    key_hex: String,
    method: String,
    path_and_query: String,
    origin: String,
    timestamp: u64,
    signing_bytes_hex: String,
    signature_hex: String,
    signature_base64: String,
    authorization: String,
}

#[test]
fn http_signatures() {
    let file: VectorFile<HttpVector> = load("http.json");
    for v in &file.vectors {
        let name = v.name.as_str();
        assert!(!v.description.is_empty(), "{name}: description");
        let identity = seed(&v.seed_hex);
        let key = identity.public_key();
        assert_eq!(key.to_hex(), v.key_hex, "{name}: key from seed");

        let bytes = http_signing_bytes(&key, v.timestamp, &v.origin, &v.method, &v.path_and_query);
        assert_eq!(
            hex::encode(&bytes),
            v.signing_bytes_hex,
            "{name}: signing bytes"
        );
        let mut spec = b"whispr-http-v1\x00".to_vec();
        spec.extend_from_slice(&unhex(&v.key_hex));
        spec.extend_from_slice(&v.timestamp.to_be_bytes());
        for (i, part) in [&v.origin, &v.method, &v.path_and_query]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                spec.push(0);
            }
            spec.extend_from_slice(part.as_bytes());
        }
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
        key.verify(&bytes, &signature)
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let expected = HttpAuth {
            key,
            timestamp: v.timestamp,
            signature,
        };
        assert_eq!(
            v.authorization,
            format!(
                "Whispr key={}, ts={}, sig={}",
                v.key_hex, v.timestamp, v.signature_base64
            ),
            "{name}: header layout"
        );
        assert_eq!(
            HttpAuth::sign(
                &identity,
                v.timestamp,
                &v.origin,
                &v.method,
                &v.path_and_query
            ),
            expected,
            "{name}: HttpAuth::sign"
        );
        assert_eq!(
            expected.header_value(),
            v.authorization,
            "{name}: header value"
        );
        let parsed = HttpAuth::parse(&v.authorization).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, expected, "{name}: parsed header");
        parsed
            .verify(
                &v.origin,
                &v.method,
                &v.path_and_query,
                v.timestamp,
                300_000,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

// ---------------------------------------------------------------------------------
// frames.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameVector {
    name: String,
    description: String,
    direction: String,
    json: String,
    msgpack_hex: String,
}

/// The stored envelope of `envelopes.json` (Alice to Bob, "hello, bob").
fn hello_bob() -> Envelope {
    let alice = Identity::from_seed([1; 32]);
    let bob = Identity::from_seed([2; 32]);
    Envelope::seal(
        &alice,
        bob.public_key(),
        1_700_000_000_000,
        false,
        b"hello, bob".to_vec(),
    )
}

fn hello_bob_id() -> MessageId {
    MessageId::from_slice(&unhex(
        "ca5abec45620db060ee6af6861cb1366583a231e05ff8cd7996ec2a8c7ec9878",
    ))
    .unwrap()
}

/// The values the frames in `frames.json` must decode to, by vector name.
fn expected_server_frame(name: &str) -> ServerFrame {
    const EPOCH: u64 = 1_234_567_890_123;
    match name {
        "gap_expired" => ServerFrame::Gap {
            epoch: EPOCH,
            seq: 5,
            reason: GapReason::Expired,
        },
        "gap_epoch_changed" => ServerFrame::Gap {
            epoch: (1 << 53) - 1,
            seq: 0,
            reason: GapReason::EpochChanged,
        },
        "synced" => ServerFrame::Synced {
            epoch: EPOCH,
            seq: 2,
        },
        "synced_empty" => ServerFrame::Synced {
            epoch: EPOCH,
            seq: 0,
        },
        "accepted_duplicate" => ServerFrame::Accepted {
            reference: Some(4),
            id: hello_bob_id(),
            duplicate: true,
            online: None,
        },
        "accepted_ephemeral_offline" => ServerFrame::Accepted {
            reference: Some(5),
            id: MessageId::from_slice(&unhex(
                "975799d33c7a7fc6c0a0142a0c8042d1b5682ca01f17f5829fc01aeb18e89917",
            ))
            .unwrap(),
            duplicate: false,
            online: Some(false),
        },
        "accepted_without_ref" => ServerFrame::Accepted {
            reference: None,
            id: hello_bob_id(),
            duplicate: false,
            online: None,
        },
        "error_rate_limited" => ServerFrame::Error {
            code: ErrorCode::RateLimited,
            detail: "rate limit exceeded for this sender key; retry in 101 ms".into(),
            reference: Some(7),
            retry_after_ms: Some(101),
        },
        "error_cursor_ahead" => ServerFrame::Error {
            code: ErrorCode::CursorAhead,
            detail: "ack 9 is past the last delivered seq 2".into(),
            reference: None,
            retry_after_ms: None,
        },
        other => panic!("frames.json: no expected value for server frame {other}"),
    }
}

fn expected_client_frame(name: &str) -> ClientFrame {
    match name {
        "ack" => ClientFrame::Ack { seq: 2 },
        "send_without_ref" => ClientFrame::Send {
            reference: None,
            envelope: WireEnvelope::from(&hello_bob()),
        },
        other => panic!("frames.json: no expected value for client frame {other}"),
    }
}

#[test]
fn frames() {
    assert_eq!(
        hello_bob().id(),
        hello_bob_id(),
        "the stored vector of envelopes.json"
    );
    let file: VectorFile<FrameVector> = load("frames.json");
    for v in &file.vectors {
        assert!(!v.description.is_empty(), "{}: description", v.name);
        match v.direction.as_str() {
            "server" => check_encodings(
                &v.name,
                &v.json,
                &v.msgpack_hex,
                &expected_server_frame(&v.name),
            ),
            "client" => check_encodings(
                &v.name,
                &v.json,
                &v.msgpack_hex,
                &expected_client_frame(&v.name),
            ),
            other => panic!("{}: unknown direction {other}", v.name),
        }
    }
}

// ---------------------------------------------------------------------------------
// clock_skew.json

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockVector {
    name: String,
    timestamp: u64,
    now_ms: u64,
    max_skew_ms: u64,
    error: Option<String>,
}

#[test]
fn clock_skew() {
    let file: VectorFile<ClockVector> = load("clock_skew.json");
    for v in &file.vectors {
        let got = check_timestamp(v.timestamp, v.now_ms, v.max_skew_ms)
            .err()
            .map(|e| e.code());
        assert_eq!(got, v.error.as_deref().map(code), "{}", v.name);
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
