//! `/signal` frames (`src/signal/frame.rs`).
//!
//! A usable frame names one room however it travels: its call id survives the form
//! carried between nodes (`CallId::from_key`), the relay's echo carries exactly the
//! client's call id (a string as the same string, an integer as the same digits), and
//! a client frame rebuilt from the echo parses to the same frame. A `signal`'s payload
//! is passed on byte for byte: it is a slice of what the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use whispr::testing::signal::{CallId, ClientFrame, ServerFrame};

fn kind_and_id<'a>(frame: &'a ClientFrame<'a>) -> (&'static str, &'a CallId) {
    match frame {
        ClientFrame::Join(c) => ("join", c),
        ClientFrame::Leave(c) => ("leave", c),
        ClientFrame::Signal { call_id, .. } => ("signal", call_id),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = whispr::testing::signal::frame::parse(text) else {
        return;
    };
    let (kind, call_id) = kind_and_id(&frame);
    assert_eq!(CallId::from_key(call_id.key()).as_ref(), Some(call_id));

    let echo = ServerFrame::PeerJoin { call_id }.text();
    #[derive(serde::Deserialize)]
    struct Echo<'a> {
        #[serde(borrow)]
        call_id: &'a RawValue,
    }
    let echoed: Echo = serde_json::from_str(&echo).expect("the echo is JSON");
    let raw = echoed.call_id.get();
    match call_id.key().split_at(2) {
        ("n:", digits) => assert_eq!(raw, digits, "an integer is echoed as its digits"),
        (_, s) => assert_eq!(serde_json::from_str::<String>(raw).unwrap(), s),
    }

    let payload = match &frame {
        ClientFrame::Signal { payload, .. } => {
            let p = payload.get();
            let inside = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
            assert!(
                p == "null" || inside.contains(&(p.as_ptr() as usize)),
                "the payload is the client's bytes"
            );
            p
        }
        _ => "null",
    };
    let rebuilt = format!(r#"{{"type":"{kind}","call_id":{raw},"payload":{payload}}}"#);
    let again = whispr::testing::signal::frame::parse(&rebuilt).expect("a rebuilt frame parses");
    assert_eq!(again, frame, "{rebuilt}");
});
