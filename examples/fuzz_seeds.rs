//! Writes seed corpora for the fuzz targets in `fuzz/` from `proto/vectors/`.
//!
//! A fuzzer starting from the vectors starts inside the grammar: valid frames and
//! envelopes in both encodings, the refused ones next to them, signed headers and
//! queries. Targets the vectors do not cover (Whispr v1 messages, `/signal` frames)
//! get seeds built here from the vectors' fixed seeds. Corpora are written at fuzz
//! time and never committed.
//!
//! ```text
//! cargo run --example fuzz_seeds            # writes fuzz/corpus/<target>/
//! cargo run --example fuzz_seeds -- DIR     # writes DIR/<target>/ instead
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::error::Error;
use std::path::{Path, PathBuf};

use whispr::protocol::Identity;

/// Every string under `name` anywhere in `v`.
fn strings<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match child {
                    Value::String(s) if k == name => out.push(s),
                    _ => strings(child, name, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| strings(i, name, out)),
        _ => {}
    }
}

/// The JSON texts and MessagePack bytes of every encoded value under `v`.
fn encodings(v: &Value) -> Vec<Vec<u8>> {
    let (mut json, mut msgpack) = (Vec::new(), Vec::new());
    strings(v, "json", &mut json);
    strings(v, "msgpack_hex", &mut msgpack);
    json.iter()
        .map(|j| j.as_bytes().to_vec())
        .chain(msgpack.iter().filter_map(|h| hex::decode(h).ok()))
        .collect()
}

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Result<Self, Box<dyn Error>> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Corpus { dir, written: 0 })
    }

    /// One seed, named by its SHA-256 as libFuzzer names its own finds.
    fn add(&mut self, seed: &[u8]) -> Result<(), Box<dyn Error>> {
        let name = hex::encode(Sha256::digest(seed));
        std::fs::write(self.dir.join(name), seed)?;
        self.written += 1;
        Ok(())
    }

    fn done(self) {
        eprintln!("{}: {} seeds", self.dir.display(), self.written);
    }
}

fn vectors(name: &str) -> Result<Value, Box<dyn Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto/vectors")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// Signed Whispr v1 `POST /send` bodies, with and without a timestamp.
fn v1_messages() -> Vec<Vec<u8>> {
    let alice = Identity::from_seed([0x01; 32]);
    let bob = Identity::from_seed([0x02; 32]);
    [
        (&b"hello"[..], Some(1_700_000_000.5)),
        (b"", None),
        (&[0xff; 40], Some(-12e220)),
    ]
    .into_iter()
    .map(|(message, timestamp)| {
        let mut body = serde_json::json!({
            "to": bob.public_key().to_hex(),
            "from_": alice.public_key().to_hex(),
            "enc_pub": "ab".repeat(32),
            "message": BASE64.encode(message),
            "signature": BASE64.encode(alice.sign(message).to_bytes()),
        });
        if let Some(t) = timestamp {
            body["timestamp"] = t.into();
        }
        body.to_string().into_bytes()
    })
    .collect()
}

const SIGNAL_FRAMES: &[&str] = &[
    r#"{"type":"join","call_id":"c1"}"#,
    r#"{"type":"join","call_id":42}"#,
    r#"{"type":"leave","call_id":"a:{b}\"c"}"#,
    r#"{"type":"signal","call_id":"c1","payload":{"sdp":"v=0","n":1.50}}"#,
    r#"{"type":"signal","call_id":-123456789012345678901234567890}"#,
    r#"{"type":"join","call_id":1.0}"#,
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"),
    };
    let envelopes = vectors("envelopes.json")?;

    let mut frames = Corpus::new(&root, "frames")?;
    for file in [
        "envelopes.json",
        "auth.json",
        "frames.json",
        "negative_frames.json",
    ] {
        for seed in encodings(&vectors(file)?) {
            frames.add(&seed)?;
        }
    }
    frames.done();

    let mut envelope = Corpus::new(&root, "envelope")?;
    let mut objects = Vec::new();
    for v in envelopes["vectors"].as_array().into_iter().flatten() {
        objects.extend(encodings(&v["envelope"]));
    }
    objects.extend(encodings(&vectors("negative_envelopes.json")?));
    for seed in objects {
        envelope.add(&seed)?;
    }
    envelope.done();

    let mut auth = Corpus::new(&root, "auth_header")?;
    let mut query = Corpus::new(&root, "http_query")?;
    for file in ["http.json", "negative_http.json"] {
        let v = vectors(file)?;
        let (mut headers, mut targets) = (Vec::new(), Vec::new());
        strings(&v, "authorization", &mut headers);
        strings(&v, "path_and_query", &mut targets);
        for h in headers {
            auth.add(h.as_bytes())?;
        }
        for t in targets {
            query.add(t.split_once('?').map_or("", |(_, q)| q).as_bytes())?;
        }
    }
    let bob = Identity::from_seed([0x02; 32]).public_key().to_hex();
    let sha = hex::encode(Sha256::digest(b"hello"));
    for q in [
        format!("to={bob}&sha256={sha}&name=a%20b.txt"),
        "since=1700000000.25".to_string(),
    ] {
        query.add(q.as_bytes())?;
    }
    auth.done();
    query.done();

    let mut v1 = Corpus::new(&root, "whispr_v1")?;
    for seed in v1_messages() {
        v1.add(&seed)?;
    }
    v1.done();

    let mut signal = Corpus::new(&root, "signal_frame")?;
    for seed in SIGNAL_FRAMES {
        signal.add(seed.as_bytes())?;
    }
    signal.done();
    Ok(())
}
