//! The protocol's own checks of `proto/vectors/` (no server): the torsion vectors, and
//! batch against single verification over every envelope vector. The checks that need
//! the server (sessions, close codes, HTTP statuses) are in `tests/it/vectors.rs`; the
//! loader is shared.

#[path = "support/vector_files.rs"]
mod vector_files;

use serde::Deserialize;
use vector_files::load;
use whispr_proto::{verify_envelopes, Codec, Envelope, ProtocolError, WireEnvelope};

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
