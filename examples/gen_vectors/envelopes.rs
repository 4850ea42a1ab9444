//! `envelopes.json` and `negative_envelopes.json`: signed envelopes, their frames, and
//! envelopes the relay must refuse.

use super::*;

// ---------------------------------------------------------------------------------
// envelopes.json

#[derive(Serialize)]
pub struct EnvelopeVector {
    name: &'static str,
    description: &'static str,
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
    /// The envelope alone: the `POST /v1/send` body and the `envelope` member of frames.
    envelope: Encodings,
    send: RefFrame,
    accepted: AcceptedFrame,
    deliver: DeliverFrame,
}

#[derive(Serialize)]
struct RefFrame {
    #[serde(rename = "ref")]
    reference: u64,
    #[serde(flatten)]
    encodings: Encodings,
}

#[derive(Serialize)]
struct AcceptedFrame {
    #[serde(rename = "ref")]
    reference: u64,
    duplicate: bool,
    online: Option<bool>,
    #[serde(flatten)]
    encodings: Encodings,
}

#[derive(Serialize)]
struct DeliverFrame {
    seq: Option<u64>,
    #[serde(flatten)]
    encodings: Encodings,
}

struct EnvelopeCase {
    name: &'static str,
    description: &'static str,
    timestamp: u64,
    ephemeral: bool,
    body: Vec<u8>,
    reference: u64,
    seq: Option<u64>,
}

fn envelope_vector(case: EnvelopeCase) -> EnvelopeVector {
    let (sender, recipient) = (alice(), bob());
    let envelope = Envelope::seal(
        &sender,
        recipient.public_key(),
        case.timestamp,
        case.ephemeral,
        case.body.clone(),
    );
    let bytes = signing_bytes(
        &recipient.public_key(),
        &sender.public_key(),
        case.timestamp,
        case.ephemeral,
        &case.body,
    );
    assert_eq!(bytes, envelope.signing_bytes());
    let id = message_id(&bytes);
    let verified = envelope
        .clone()
        .verify(case.timestamp, MAX_SKEW_MS)
        .expect("verifies");
    assert_eq!(verified.id(), id);

    let wire = WireEnvelope::from(&envelope);
    let envelope_enc = encodings(&wire);
    assert_round_trip(&envelope_enc, &wire);

    let send = ClientFrame::Send {
        reference: Some(case.reference),
        envelope: wire,
    };
    let send_enc = encodings(&send);
    assert_round_trip(&send_enc, &send);

    let online = case.ephemeral.then_some(true);
    let accepted = ServerFrame::Accepted {
        reference: Some(case.reference),
        id,
        duplicate: false,
        online,
    };
    let accepted_enc = encodings(&accepted);
    assert_round_trip(&accepted_enc, &accepted);

    let deliver = ServerFrame::Deliver {
        seq: case.seq,
        id,
        envelope: envelope.clone().into(),
    };
    let deliver_enc = encodings(&deliver);
    assert_round_trip(&deliver_enc, &deliver);

    let sig = envelope.signature.to_bytes();
    EnvelopeVector {
        name: case.name,
        description: case.description,
        sender_seed_hex: hex::encode(sender.seed()),
        sender_hex: sender.public_key().to_hex(),
        recipient_seed_hex: hex::encode(recipient.seed()),
        recipient_hex: recipient.public_key().to_hex(),
        timestamp: case.timestamp,
        ephemeral: case.ephemeral,
        body_hex: hex::encode(&case.body),
        body_base64: BASE64.encode(&case.body),
        signing_bytes_hex: hex::encode(&bytes),
        signature_hex: hex::encode(sig),
        signature_base64: BASE64.encode(sig),
        id_hex: id.to_hex(),
        envelope: envelope_enc,
        send: RefFrame {
            reference: case.reference,
            encodings: send_enc,
        },
        accepted: AcceptedFrame {
            reference: case.reference,
            duplicate: false,
            online,
            encodings: accepted_enc,
        },
        deliver: DeliverFrame {
            seq: case.seq,
            encodings: deliver_enc,
        },
    }
}

pub fn envelopes() -> VectorFile<EnvelopeVector> {
    let cases = vec![
        EnvelopeCase {
            name: "stored",
            description: "Alice (seed 01..01) to Bob (seed 02..02): a normal, stored message. Its body is 10 bytes, so its base64 has two padding characters.",
            timestamp: T0,
            ephemeral: false,
            body: b"hello, bob".to_vec(),
            reference: 1,
            seq: Some(1),
        },
        EnvelopeCase {
            name: "ephemeral",
            description: "An ephemeral (online-only) message: flags byte 0x01, `\"ephemeral\":true` on the wire, delivered without seq, accepted with `online`. Its 7-byte body has one base64 padding character.",
            timestamp: T0 + 250,
            ephemeral: true,
            body: b"typing!".to_vec(),
            reference: 2,
            seq: None,
        },
        EnvelopeCase {
            name: "empty_body",
            description: "A stored message with an empty body: the signing bytes end with the flags byte; the body is \"\" in JSON and an empty bin (c4 00) in MessagePack.",
            timestamp: T0 + 500,
            ephemeral: false,
            body: Vec::new(),
            reference: 3,
            seq: Some(2),
        },
        EnvelopeCase {
            name: "binary_body",
            description: "A stored message whose body is the 256 bytes 00..ff (bodies are opaque ciphertext): in MessagePack the body needs bin 16 (c5 01 00). Its ref (2^53 - 1) and seq (2^32) pin the encoding of large numbers (MessagePack uint 64).",
            timestamp: T0 + 750,
            ephemeral: false,
            body: (0..=255u8).collect(),
            reference: 9_007_199_254_740_991,
            seq: Some(4_294_967_296),
        },
    ];
    VectorFile {
        description: "Signed envelopes: signing bytes, signature, message id, and the envelope, send, accepted and deliver frames in JSON and MessagePack. Verify each with now = timestamp.",
        generator: GENERATOR,
        vectors: cases.into_iter().map(envelope_vector).collect(),
    }
}

// ---------------------------------------------------------------------------------
// negative_envelopes.json

#[derive(Serialize)]
pub struct NegativeEnvelope {
    name: &'static str,
    description: &'static str,
    json: String,
    now_ms: u64,
    max_skew_ms: u64,
    /// For well-formed signatures: whether plain (non-strict) Ed25519 verification, as
    /// `ed25519-dalek`'s `verify`, would accept it. Strict verification must not.
    #[serde(skip_serializing_if = "Option::is_none")]
    lax_verify_accepts: Option<bool>,
    error: &'static str,
}

/// The relay's checks on a JSON envelope, in its order (after the body size limit).
fn check_envelope(json: &str, now_ms: u64) -> Result<(), ProtocolError> {
    let wire: WireEnvelope = Codec::Json.decode(json.as_bytes())?;
    let envelope = Envelope::try_from(wire)?;
    envelope.verify(now_ms, MAX_SKEW_MS).map(|_| ())
}

/// Plain Ed25519 verification, to show which vectors only strict verification refuses.
fn lax_verify(wire: &WireEnvelope) -> Option<bool> {
    let key: [u8; 32] = wire.sender.as_slice().try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).ok()?;
    let sig = ed25519_dalek::Signature::from_slice(&wire.signature).ok()?;
    let recipient = PublicKey::from_slice(&wire.recipient, KeyField::Recipient).ok()?;
    let sender = PublicKey::from_slice(&wire.sender, KeyField::Sender).ok()?;
    let bytes = signing_bytes(
        &recipient,
        &sender,
        wire.timestamp,
        wire.ephemeral,
        &wire.body,
    );
    Some(key.verify(&bytes, &sig).is_ok())
}

fn negative_envelope(
    name: &'static str,
    description: &'static str,
    json: String,
    now_ms: u64,
    error: ErrorCode,
) -> NegativeEnvelope {
    let got = check_envelope(&json, now_ms).expect_err(name);
    assert_eq!(got.code(), error, "{name}: {got}");
    let lax_verify_accepts = match error {
        ErrorCode::BadSignature => Codec::Json
            .decode::<WireEnvelope>(json.as_bytes())
            .ok()
            .and_then(|w| lax_verify(&w)),
        _ => None,
    };
    NegativeEnvelope {
        name,
        description,
        json,
        now_ms,
        max_skew_ms: MAX_SKEW_MS,
        lax_verify_accepts,
        error: error.as_str(),
    }
}

/// A JSON envelope object with one member replaced (or added).
fn edit(wire: &WireEnvelope, member: &str, value: serde_json::Value) -> String {
    let mut v = serde_json::to_value(wire).expect("JSON");
    v[member] = value;
    to_json(&v)
}

/// The first 32-byte string `y, 0, 0, ...` (y = 2, 3, ...) that is not the encoding of
/// a point on the curve.
fn not_a_point() -> [u8; 32] {
    (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
        .expect("some small y is not on the curve")
}

/// A non-canonical encoding of a curve point: `y + p` (with `p = 2^255 - 19`) for the
/// first small `y` on the curve whose point is not of small order, so that `y + p < 2^255` still fits 255 bits.
/// A decoder that reduces `y` mod `p` reads the point `y`; the relay must not take
/// these bytes as a key that can sign.
fn non_canonical_point() -> [u8; 32] {
    (0u8..19)
        .map(|y| {
            // p + y, little-endian: p = ed ff .. ff 7f.
            let mut b = [0xffu8; 32];
            b[0] = 0xed + y;
            b[31] = 0x7f;
            b
        })
        .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_ok_and(|k| !k.is_weak()))
        .expect("some y + p below 2^255 decodes to a point of large order")
}

pub fn negative_envelopes() -> VectorFile<NegativeEnvelope> {
    let good = Envelope::seal(
        &alice(),
        bob().public_key(),
        T0,
        false,
        b"hello, bob".to_vec(),
    );
    let wire = WireEnvelope::from(&good);

    let mut sig = good.signature.to_bytes();
    let mut carry = 0u16;
    for (s, l) in sig[32..].iter_mut().zip(ORDER_L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let non_canonical_s = WireEnvelope {
        signature: sig.to_vec(),
        ..wire.clone()
    };

    // The identity point as the key, R = identity and S = 0: [S]B = R + [k]A holds for
    // every message, so plain verification accepts this "signature" by anyone.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut trivial_sig = [0u8; 64];
    trivial_sig[0] = 1;
    let small_order = WireEnvelope {
        sender: identity.to_vec(),
        signature: trivial_sig.to_vec(),
        ..wire.clone()
    };

    let off_curve = WireEnvelope {
        sender: not_a_point().to_vec(),
        ..wire.clone()
    };

    let non_canonical_sender = WireEnvelope {
        sender: non_canonical_point().to_vec(),
        ..wire.clone()
    };

    let b64 = |b: &[u8]| serde_json::Value::from(BASE64.encode(b));
    // "hello, bob" ends in one byte (0x62) of a 4-character group: its last character
    // carries 4 bits that must be zero ("Yg=="). "Yh==" decodes to the same byte with
    // a non-zero trailing bit: two strings for one body would be two encodings.
    let body_b64 = BASE64.encode(&wire.body);
    assert!(body_b64.ends_with("Yg=="));
    let trailing_bits = format!("{}Yh==", &body_b64[..body_b64.len() - 4]);
    let hexv = |b: &[u8]| serde_json::Value::from(hex::encode(b));
    let unpadded = BASE64.encode(&wire.body).trim_end_matches('=').to_string();
    let mut missing_signature = serde_json::to_value(&wire).expect("JSON");
    missing_signature
        .as_object_mut()
        .expect("object")
        .remove("signature");

    let vectors = vec![
        negative_envelope(
            "wrong_recipient",
            "The stored envelope of envelopes.json with the recipient changed to Carol (seed 03..03): the recipient is signed, so the signature no longer verifies.",
            edit(&wire, "recipient", hexv(carol().public_key().as_bytes())),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "tampered_body",
            "The stored envelope with one body byte changed.",
            edit(&wire, "body", b64(b"hello, bot")),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "ephemeral_flag_added",
            "The stored envelope with \"ephemeral\":true added: the flag is signed (flags byte), so a relay or attacker cannot turn a stored message into an ephemeral one.",
            edit(&wire, "ephemeral", serde_json::Value::Bool(true)),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "timestamp_changed",
            "The stored envelope with its timestamp moved by 1 ms (still inside the window): the timestamp is signed.",
            edit(&wire, "timestamp", serde_json::Value::from(T0 + 1)),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "non_canonical_s",
            "The stored envelope's signature with L (the group order) added to S: the same point equation holds, but S >= L is not canonical and strict verification refuses it (no signature malleability).",
            to_json(&non_canonical_s),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "small_order_sender",
            "The sender key is the identity point (small order) and the signature is R = identity, S = 0. Plain cofactorless verification accepts it for any message; strict verification refuses small-order keys.",
            to_json(&small_order),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "sender_not_on_curve",
            "The sender key does not decode to a curve point.",
            to_json(&off_curve),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "sender_y_not_canonical",
            "The sender key encodes y + p (p = 2^255 - 19) for a small y on the curve: a non-canonical encoding of a point. It is refused (bad_signature): a relay must not reduce y mod p and treat these bytes as the key of that point.",
            to_json(&non_canonical_sender),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "recipient_31_bytes",
            "The recipient key is 31 bytes: keys are exactly 32 bytes.",
            edit(&wire, "recipient", hexv(&bob().public_key().as_bytes()[..31])),
            T0,
            ErrorCode::InvalidKey,
        ),
        negative_envelope(
            "sender_33_bytes",
            "The sender key is 33 bytes.",
            edit(&wire, "sender", hexv(&[alice().public_key().as_bytes().as_slice(), &[0]].concat())),
            T0,
            ErrorCode::InvalidKey,
        ),
        negative_envelope(
            "signature_63_bytes",
            "The signature is 63 bytes: signatures are exactly 64 bytes.",
            edit(&wire, "signature", b64(&good.signature.to_bytes()[..63])),
            T0,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "stale_timestamp_past",
            "A valid envelope checked 300001 ms after its timestamp (window 300000 ms).",
            to_json(&wire),
            T0 + MAX_SKEW_MS + 1,
            ErrorCode::StaleTimestamp,
        ),
        negative_envelope(
            "stale_timestamp_future",
            "A valid envelope checked 300001 ms before its timestamp.",
            to_json(&wire),
            T0 - MAX_SKEW_MS - 1,
            ErrorCode::StaleTimestamp,
        ),
        negative_envelope(
            "bad_signature_before_stale",
            "A stale envelope whose signature is also wrong: the signature is checked first.",
            edit(&wire, "body", b64(b"hello, bot")),
            T0 + MAX_SKEW_MS + 1,
            ErrorCode::BadSignature,
        ),
        negative_envelope(
            "body_base64_unpadded",
            "The body in base64 without its padding: byte fields use standard base64 with padding.",
            edit(&wire, "body", serde_json::Value::from(unpadded)),
            T0,
            ErrorCode::Malformed,
        ),
        negative_envelope(
            "body_base64_trailing_bits",
            "The body in base64 with a non-zero trailing bit (\"…Yh==\" for \"…Yg==\"): it would decode to the same bytes, so it is refused rather than accepted as a second spelling of one body (RFC 4648 section 3.5).",
            edit(&wire, "body", serde_json::Value::from(trailing_bits)),
            T0,
            ErrorCode::Malformed,
        ),
        negative_envelope(
            "unknown_member",
            "An envelope member the protocol does not define.",
            edit(&wire, "expires", serde_json::Value::from(60)),
            T0,
            ErrorCode::Malformed,
        ),
        negative_envelope(
            "missing_signature",
            "An envelope without its signature member.",
            to_json(&missing_signature),
            T0,
            ErrorCode::Malformed,
        ),
    ];
    assert_eq!(
        lax_verify(&small_order),
        Some(true),
        "the small-order vector must fool plain verification"
    );
    VectorFile {
        description: "Envelopes the relay must refuse, each with the error code of the first failing check (decode, key lengths, strict signature, timestamp window). `json` is the envelope as sent in a send frame or POST /v1/send body; check it with the relay's clock at now_ms.",
        generator: GENERATOR,
        vectors,
    }
}

// ---------------------------------------------------------------------------------
// torsion.json

#[derive(Serialize)]
pub struct TorsionEnvelope {
    name: &'static str,
    description: &'static str,
    /// The envelope as sent (JSON); the relay accepts it at `now_ms`.
    json: String,
    now_ms: u64,
    max_skew_ms: u64,
    /// Where the torsion component is: "R", "A" or "R and A".
    torsion: &'static str,
    /// Whether ed25519-dalek's `verify_strict` (the relay's rule before ZIP-215: the
    /// cofactorless equation) accepts it. libsodium's verify is cofactorless too.
    verify_strict_accepts: bool,
}

/// Strict cofactorless verification (ed25519-dalek's `verify_strict`) of an envelope.
fn verify_strict(envelope: &Envelope) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(envelope.sender.as_bytes()).is_ok_and(|k| {
        k.verify_strict(
            &envelope.signing_bytes(),
            &ed25519_dalek::Signature::from_bytes(envelope.signature.as_bytes()),
        )
        .is_ok()
    })
}

pub fn torsion_envelopes() -> VectorFile<TorsionEnvelope> {
    use whispr::protocol::signature::craft::CraftedKey;
    let make = |name, description, torsion, key: CraftedKey, r_torsion: Option<usize>| {
        let mut envelope = Envelope {
            recipient: bob().public_key(),
            sender: key.public_key(),
            timestamp: T0,
            ephemeral: false,
            body: b"hello, bob".to_vec(),
            signature: whispr::protocol::Signature::from_bytes([0; 64]),
        };
        envelope.signature = key.sign(&envelope.signing_bytes(), r_torsion);
        let strict = verify_strict(&envelope);
        assert!(!strict, "{name}: verify_strict refuses torsion");
        let json = to_json(&WireEnvelope::from(&envelope));
        check_envelope(&json, T0).unwrap_or_else(|e| panic!("{name}: the relay accepts it: {e}"));
        TorsionEnvelope {
            name,
            description,
            json,
            now_ms: T0,
            max_skew_ms: MAX_SKEW_MS,
            torsion,
            verify_strict_accepts: strict,
        }
    };
    let alice = || CraftedKey::from_seed([0x01; 32]);
    // Small-order points by index (signature::craft): 1 has order 2, 2 order 4, 4 order 8.
    let vectors = vec![
        make(
            "torsion_r_order_8",
            "Alice (seed 01..01) signs the stored envelope of envelopes.json with a point of order 8 added to R (s = r + k·a as usual). [8]([s]B - [k]A - R) = 0 holds, so the relay accepts it (ZIP-215); [s]B - [k]A = R does not, so verify_strict and libsodium refuse it. Only Alice could make it: it needs her secret scalar.",
            "R",
            alice(),
            Some(4),
        ),
        make(
            "torsion_r_order_4",
            "The same with a point of order 4 added to R.",
            "R",
            alice(),
            Some(2),
        ),
        make(
            "torsion_r_order_2",
            "The same with the point of order 2, (0, -1), added to R.",
            "R",
            alice(),
            Some(1),
        ),
        make(
            "torsion_a_order_8",
            "A key with a torsion component: Alice's secret scalar a, public key A = [a]B + T with T of order 8, and an RFC 8032 signature by a over the envelope (k hashes this A). [s]B - [k]A - R = -[k]T is a torsion point: accepted by the relay (ZIP-215), refused by verify_strict unless 8 divides k. Only the holder of a can sign for this key.",
            "A",
            alice().with_torsion(4),
            None,
        ),
        make(
            "torsion_a_and_r",
            "Torsion on both: the key of torsion_a_order_8, with a point of order 4 added to R.",
            "R and A",
            alice().with_torsion(4),
            Some(2),
        ),
    ];
    VectorFile {
        description: "Envelopes whose verdict changed with ZIP-215 (PROTOCOL.md section 2.2): signatures where R or the sender key A has a torsion component. The relay accepts each (the cofactored equation holds, alone or in a batch); the cofactorless verify_strict and libsodium refuse them. Only the owner of the key can make one. Every envelope here is addressed to Bob (seed 02..02) at T0.",
        generator: GENERATOR,
        vectors,
    }
}
