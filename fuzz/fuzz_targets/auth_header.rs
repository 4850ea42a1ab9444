//! The `Authorization: Whispr …` header (`proto/src/auth.rs`, PROTOCOL.md 8.3).
//!
//! parse(format(x)) == x; and whatever parses is, apart from the spaces 8.3 allows
//! around commas, a permutation of exactly the three canonical `name=value` parts of
//! what it parsed to: so no sign, case, tab or padding variant is ever accepted. The
//! second half builds a header from fuzzer bytes (key, ts, signature, order, spaces)
//! and requires that it parses back to those values.
#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use whispr::protocol::{HttpAuth, PublicKey, Signature};

fn canonical_parts(a: &HttpAuth) -> [String; 3] {
    [
        format!("key={}", a.key.to_hex()),
        format!("ts={}", a.timestamp),
        format!("sig={}", BASE64.encode(a.signature.as_bytes())),
    ]
}

fn parsed(text: &str) {
    let Ok(auth) = HttpAuth::parse(text) else {
        return;
    };
    assert_eq!(HttpAuth::parse(&auth.header_value()), Ok(auth.clone()));
    let params = text.strip_prefix("Whispr ").expect("scheme checked");
    assert!(
        !params.starts_with(' ') && !params.ends_with(' '),
        "{text:?}"
    );
    let mut got: Vec<String> = params
        .split(',')
        .map(|p| p.trim_matches(' ').to_string())
        .collect();
    let mut want = canonical_parts(&auth).to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{text:?} is not a spelling 8.3 allows");
}

fn built(data: &[u8]) {
    if data.len() < 32 + 8 + 64 + 4 {
        return;
    }
    let auth = HttpAuth {
        key: PublicKey::from_bytes(data[..32].try_into().unwrap()),
        timestamp: u64::from_le_bytes(data[32..40].try_into().unwrap()),
        signature: Signature::from_slice(&data[40..104]).unwrap(),
    };
    let parts = canonical_parts(&auth);
    let order = usize::from(data[104]) % 6;
    let [a, b, c] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ][order];
    let spaces = |n: u8| " ".repeat(usize::from(n % 3));
    let header = format!(
        "Whispr {}{},{}{}{},{}{}",
        parts[a],
        spaces(data[105]),
        spaces(data[106]),
        parts[b],
        spaces(data[107]),
        spaces(data[105] / 3),
        parts[c]
    );
    assert_eq!(HttpAuth::parse(&header), Ok(auth), "{header:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        parsed(text);
    }
    built(data);
});
