//! The Whispr v1 message and its stored form (`proto/src/whispr_v1.rs`, read back by
//! `src/http/v1/`).
//!
//! A `POST /send` body that verifies must come back out of its derived inbox as the
//! same message: `StoredV1::open` accepts it for its `to` (and only for it), the stored
//! JSON reads and writes back byte for byte (so every reader, on every node, sees the
//! same `timestamp`), and the message rebuilt from the stored form verifies again to
//! the same id. Any envelope body that `open` accepts was signed by the envelope's
//! sender. The constructed half signs a message from fuzzer bytes, so the verified
//! path is always reached.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use whispr::protocol::whispr_v1::{inbox_key, SendV1, StoredV1};
use whispr::protocol::{Envelope, Identity, KeyField, PublicKey, Signature};

const NOW_MS: u64 = 1_700_000_000_000;
const MAX: usize = 65_536;

fn check_verified(message: SendV1) {
    let Ok(verified) = message.clone().verify(NOW_MS, MAX) else {
        return;
    };
    let to = PublicKey::from_hex(&message.to, KeyField::Recipient).unwrap();
    assert_eq!(verified.recipient(), &inbox_key(&to));
    let stored = StoredV1::open(verified.envelope(), &to).expect("its own inbox opens it");
    assert_eq!(stored.id, verified.id().to_hex());
    assert_eq!(stored.message, message.message);
    let body = &verified.envelope().body;
    let reread: StoredV1 = serde_json::from_slice(body).unwrap();
    assert_eq!(
        &serde_json::to_vec(&reread).unwrap(),
        body,
        "stored form is stable"
    );
    assert_eq!(reread.timestamp.to_bits(), stored.timestamp.to_bits());
    if let Some(t) = message.timestamp.filter(|t| t.is_finite()) {
        assert_eq!(
            stored.timestamp.to_bits(),
            t.to_bits(),
            "the sender's timestamp, exactly"
        );
    }
    let other = PublicKey::from_bytes(to.as_bytes().map(|b| !b));
    assert!(StoredV1::open(verified.envelope(), &other).is_none());
    let resent = SendV1 {
        to: stored.to.clone(),
        from_: stored.from.clone(),
        enc_pub: stored.enc_pub.clone(),
        message: stored.message.clone(),
        signature: stored.signature.clone(),
        timestamp: Some(stored.timestamp),
    };
    let again = resent
        .verify(NOW_MS + 1, MAX)
        .expect("the stored form verifies");
    assert_eq!(again.id(), verified.id(), "a resend is the same message");
}

/// Whatever `open` accepts from an arbitrary envelope was signed by its sender.
fn check_open(data: &[u8]) {
    let identity = Identity::from_seed([7; 32]);
    let to = PublicKey::from_bytes([9; 32]);
    let envelope = Envelope {
        recipient: inbox_key(&to),
        sender: identity.public_key(),
        timestamp: NOW_MS,
        ephemeral: false,
        body: data.to_vec(),
        signature: Signature::from_slice(&[0; 64]).unwrap(),
    };
    if let Some(stored) = StoredV1::open(&envelope, &to) {
        let message = STANDARD.decode(&stored.message).unwrap();
        let sig = Signature::from_slice(&STANDARD.decode(&stored.signature).unwrap()).unwrap();
        assert!(identity.public_key().verify(&message, &sig).is_ok());
    }
}

fn constructed(data: &[u8]) {
    if data.len() < 41 {
        return;
    }
    let (seed, rest) = data.split_at(32);
    let (ts, message) = rest.split_at(8);
    let from = Identity::from_seed(seed.try_into().unwrap());
    let timestamp = f64::from_bits(u64::from_le_bytes(ts.try_into().unwrap()));
    check_verified(SendV1 {
        to: hex::encode(&seed[..32]),
        from_: from.public_key().to_hex(),
        enc_pub: "ab".repeat(32),
        message: STANDARD.encode(message),
        signature: STANDARD.encode(from.sign(message).to_bytes()),
        timestamp: Some(timestamp),
    });
}

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<SendV1>(data) {
        check_verified(message);
    }
    check_open(data);
    constructed(data);
});
