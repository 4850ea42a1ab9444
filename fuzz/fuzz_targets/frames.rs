//! Native frames, both directions, both codecs (`proto/src/frames.rs`).
//!
//! Any input that decodes (as JSON or MessagePack, as a client or a server frame) must
//! be a fixed point after one trip through the encoder: decode(encode(f)) == f, the
//! second encoding is byte for byte the first, and the other codec carries the same
//! frame. A client frame also gets the verdict the session would give it
//! (`decode_frame`), with the size limit checked before parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use whispr::protocol::{ClientFrame, Codec, ServerFrame};
use whispr::testing::session::decode_frame;

const CODECS: [Codec; 2] = [Codec::Json, Codec::MsgPack];

/// `f` survives encode -> decode in every codec, and its encodings are stable.
fn round_trips<T>(f: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    for codec in CODECS {
        let once = codec.encode(f).expect("our frames always encode");
        let back: T = codec
            .decode(&once.clone().into_bytes())
            .unwrap_or_else(|e| panic!("{codec:?} cannot read its own {once:?}: {e}"));
        assert_eq!(&back, f, "{codec:?} changed the frame");
        let twice = codec.encode(&back).expect("encodes");
        assert_eq!(once, twice, "{codec:?} encoding is not stable");
    }
}

fuzz_target!(|data: &[u8]| {
    for codec in CODECS {
        if let Ok(f) = codec.decode::<ClientFrame>(data) {
            round_trips(&f);
            // The session's verdict agrees with the plain decoder.
            match decode_frame(codec, data, data.len()) {
                Ok(g) => assert_eq!(ClientFrame::from(g), f),
                Err(e) => assert!(f == ClientFrame::Unknown, "{e} for {f:?}"),
            }
        }
        if data.len() > 1 {
            assert!(
                decode_frame(codec, data, data.len() - 1).is_err(),
                "size is checked"
            );
        }
        if let Ok(f) = codec.decode::<ServerFrame>(data) {
            round_trips(&f);
        }
    }
});
