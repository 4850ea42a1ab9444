//! The HTTP query parsers (`src/http/`): `GET /v1/inbox`, `POST /v1/blobs`, and the
//! Whispr v1 `GET /inbox/{key}?since=`.
//!
//! Whatever parses, written back in its canonical form, parses to the same value
//! (parse(format(x)) == x), and the rules of the spec hold for it (`since > 0` only with
//! an `epoch`; `since` is never NaN).
#![no_main]

use libfuzzer_sys::fuzz_target;
use url::form_urlencoded::Serializer;
use whispr::testing::http::{parse_inbox_query, parse_since, parse_upload_query, InboxQuery};

fn inbox(query: &str) {
    let Ok(q) = parse_inbox_query(Some(query)) else {
        return;
    };
    assert!(
        q.since == 0 || q.epoch.is_some(),
        "{query:?}: since without epoch"
    );
    let mut out = Serializer::new(String::new());
    out.append_pair("since", &q.since.to_string());
    if let Some(e) = q.epoch {
        out.append_pair("epoch", &e.to_string());
    }
    if let Some(l) = q.limit {
        out.append_pair("limit", &l.to_string());
    }
    let canonical = out.finish();
    let again: InboxQuery = parse_inbox_query(Some(&canonical)).expect("canonical form parses");
    assert_eq!(again, q, "{query:?} -> {canonical:?}");
}

fn upload(query: &str) {
    let Ok(q) = parse_upload_query(Some(query)) else {
        return;
    };
    let canonical = Serializer::new(String::new())
        .append_pair("to", &q.to.to_hex())
        .append_pair("sha256", &q.sha256.to_hex())
        .append_pair("name", &q.name)
        .finish();
    let again = parse_upload_query(Some(&canonical)).expect("canonical form parses");
    assert_eq!(again, q, "{query:?} -> {canonical:?}");
}

fn since(query: &str) {
    let Some(s) = parse_since(Some(query)) else {
        return;
    };
    assert!(!s.is_nan());
    // Rust prints the shortest text that reads back as the same f64.
    let canonical = format!("since={s}");
    assert_eq!(
        parse_since(Some(&canonical)).map(f64::to_bits),
        Some(s.to_bits())
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    inbox(query);
    upload(query);
    since(query);
});
