//! The vector-file loader shared by the two vector test suites: `proto/tests/vectors.rs`
//! (the protocol's own checks) and `tests/it/vectors.rs` (the checks that need the
//! server: sessions, close codes, HTTP statuses). Both include this one file with
//! `#[path]`, so neither copies it.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every file in `proto/vectors/`; `every_vector_file_is_checked` fails on any other.
/// `envelopes`, `http`, `frames`, `clock_skew` and `torsion` are checked by
/// `proto/tests/vectors.rs`; `auth`, the `negative_*` files and `errors` by
/// `tests/it/vectors.rs`, which the server's test binary runs (they need the session and
/// the error mapping).
pub const FILES: [&str; 11] = [
    "envelopes.json",
    "auth.json",
    "http.json",
    "frames.json",
    "clock_skew.json",
    "negative_envelopes.json",
    "negative_auth.json",
    "negative_http.json",
    "negative_frames.json",
    "errors.json",
    "torsion.json",
];

pub fn vectors_dir() -> PathBuf {
    // The protocol crate's manifest is beside vectors/; the server's is one level up.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let beside = manifest.join("vectors");
    if beside.is_dir() {
        beside
    } else {
        manifest.join("proto").join("vectors")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile<T> {
    pub description: String,
    pub generator: String,
    pub vectors: Vec<T>,
}

pub fn load<T: DeserializeOwned>(name: &str) -> VectorFile<T> {
    assert!(FILES.contains(&name), "{name} is not listed in FILES");
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: VectorFile<T> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!file.description.is_empty(), "{name}: no description");
    assert_eq!(file.generator, "cargo run --example gen_vectors", "{name}");
    assert!(!file.vectors.is_empty(), "{name}: no vectors");
    file
}

#[test]
fn every_vector_file_is_checked() {
    let found: BTreeSet<String> = std::fs::read_dir(vectors_dir())
        .expect("proto/vectors exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let known: BTreeSet<String> = FILES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        found, known,
        "every file in proto/vectors needs a check in proto/tests/vectors.rs or tests/it/vectors.rs"
    );
}
