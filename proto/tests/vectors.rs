//! The protocol's own checks of `proto/vectors/` (no server): envelopes (signing bytes,
//! also rebuilt here from the layout in `PROTOCOL.md`; verification; ids; exact JSON and
//! MessagePack encodings both ways), signed HTTP requests, frames, the clock-skew window,
//! the torsion vectors, and batch against single verification over every envelope
//! vector. The checks that need the server (sessions, close codes, HTTP statuses) are in
//! `tests/it/vectors.rs`; the loader and helpers are shared. The files come from
//! `cargo run --example gen_vectors`; this only reads them, so a change to the wire
//! format fails here until the vectors (and the spec) are deliberately regenerated.

#[path = "support/vector_checks.rs"]
mod vector_checks;
#[path = "support/vector_files.rs"]
mod vector_files;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use vector_checks::{check_encodings, code, seed, unhex, Encodings};
use vector_files::{load, VectorFile};
use whispr_proto::{
    check_timestamp, http_signing_bytes, message_id, signing_bytes, verify_envelopes, ClientFrame,
    Codec, Envelope, ErrorCode, GapReason, HttpAuth, Identity, MessageId, ProtocolError,
    ServerFrame, Signature, WireEnvelope,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TorsionEnvelope {
    name: String,
    description: String,
    json: String,
    now_ms: u64,
    max_skew_ms: u64,
    torsion: String,
    verify_strict_accepts: bool,
}

fn decode(json: &str) -> Result<Envelope, ProtocolError> {
    Codec::Json
        .decode::<WireEnvelope>(json.as_bytes())
        .and_then(Envelope::try_from)
}

/// ed25519-dalek's cofactorless `verify_strict`, the relay's rule before ZIP-215.
fn verify_strict(e: &Envelope) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(e.sender.as_bytes()).is_ok_and(|k| {
        k.verify_strict(
            &e.signing_bytes(),
            &ed25519_dalek::Signature::from_bytes(e.signature.as_bytes()),
        )
        .is_ok()
    })
}

#[test]
fn torsion_envelopes_are_accepted_and_were_refused_before() {
    let file = load::<TorsionEnvelope>("torsion.json");
    for v in &file.vectors {
        assert!(!v.description.is_empty(), "{}", v.name);
        assert!(
            ["R", "A", "R and A"].contains(&v.torsion.as_str()),
            "{}",
            v.name
        );
        let envelope = decode(&v.json).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            verify_strict(&envelope),
            v.verify_strict_accepts,
            "{}",
            v.name
        );
        envelope
            .verify(v.now_ms, v.max_skew_ms)
            .unwrap_or_else(|e| panic!("{}: the relay refuses it: {e}", v.name));
    }
}

#[derive(Deserialize)]
struct AnyEnvelope {
    name: String,
    #[serde(default)]
    json: Option<String>,
    #[serde(default)]
    envelope: Option<Json>,
}

#[derive(Deserialize)]
struct Json {
    json: String,
}

/// Every envelope of envelopes.json, torsion.json and negative_envelopes.json that
/// decodes, verified in one batch: each verdict is its single verdict (accepted for the
/// first two files, and the negative vectors refused for the same reason as alone).
#[test]
fn batch_and_single_verification_agree_on_every_envelope_vector() {
    let mut envelopes = Vec::new();
    for file in ["envelopes.json", "torsion.json", "negative_envelopes.json"] {
        for v in load::<AnyEnvelope>(file).vectors {
            let json = v.json.or(v.envelope.map(|e| e.json)).expect("an envelope");
            if let Ok(envelope) = decode(&json) {
                envelopes.push((format!("{file}: {}", v.name), envelope));
            }
        }
    }
    let mut checks = Vec::new();
    let mut expected = Vec::new();
    for (name, envelope) in &envelopes {
        let single = envelope
            .sender
            .sender_key()
            .and_then(|key| envelope.clone().signature_check(key).verify().map(|_| ()));
        if let Ok(key) = envelope.sender.sender_key() {
            checks.push(envelope.clone().signature_check(key));
            expected.push((name.clone(), single.map_err(|e| e.code())));
        } else {
            assert!(single.is_err(), "{name}: a refused key");
        }
    }
    assert!(expected.iter().filter(|(_, v)| v.is_ok()).count() >= 8);
    assert!(expected.iter().filter(|(_, v)| v.is_err()).count() >= 5);
    let batch = verify_envelopes(checks);
    for ((name, single), batched) in expected.iter().zip(batch) {
        assert_eq!(&batched.map(|_| ()).map_err(|e| e.code()), single, "{name}");
    }
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

/// A vector's signature of `bytes` by `signer`: its hex and base64 forms agree, it is the
/// one Ed25519 makes (deterministic), and it verifies.
fn check_signature(
    name: &str,
    signer: &Identity,
    bytes: &[u8],
    signature_hex: &str,
    signature_base64: &str,
) -> Signature {
    let sig_bytes = unhex(signature_hex);
    assert_eq!(
        BASE64.encode(&sig_bytes),
        signature_base64,
        "{name}: signature base64"
    );
    let signature = Signature::from_slice(&sig_bytes).unwrap();
    assert_eq!(
        signer.sign(bytes),
        signature,
        "{name}: Ed25519 signatures are deterministic"
    );
    signer
        .public_key()
        .verify(bytes, &signature)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    signature
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

        let signature =
            check_signature(name, &sender, &bytes, &v.signature_hex, &v.signature_base64);

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
            signature: signature.to_bytes().to_vec(),
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

        let signature = check_signature(
            name,
            &identity,
            &bytes,
            &v.signature_hex,
            &v.signature_base64,
        );

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
