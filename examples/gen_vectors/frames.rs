//! `frames.json`, `negative_frames.json`, `clock_skew.json` and `errors.json`: the other
//! frames, undecodable frames, the timestamp window, and the error and close codes.

use super::*;

// ---------------------------------------------------------------------------------
// frames.json

#[derive(Serialize)]
pub struct FrameVector {
    name: &'static str,
    description: &'static str,
    direction: &'static str,
    #[serde(flatten)]
    encodings: Encodings,
}

fn server_frame(name: &'static str, description: &'static str, frame: ServerFrame) -> FrameVector {
    let enc = encodings(&frame);
    assert_round_trip(&enc, &frame);
    FrameVector {
        name,
        description,
        direction: "server",
        encodings: enc,
    }
}

fn client_frame(name: &'static str, description: &'static str, frame: ClientFrame) -> FrameVector {
    let enc = encodings(&frame);
    assert_round_trip(&enc, &frame);
    FrameVector {
        name,
        description,
        direction: "client",
        encodings: enc,
    }
}

pub fn frames() -> VectorFile<FrameVector> {
    let stored = Envelope::seal(
        &alice(),
        bob().public_key(),
        T0,
        false,
        b"hello, bob".to_vec(),
    );
    let ephemeral = Envelope::seal(
        &alice(),
        bob().public_key(),
        T0 + 250,
        true,
        b"typing!".to_vec(),
    );
    VectorFile {
        description: "The remaining frames of both directions, in JSON and MessagePack (see envelopes.json and auth.json for send, accepted, deliver, challenge, auth and ready).",
        generator: GENERATOR,
        vectors: vec![
            client_frame("ack", "Cumulative acknowledgement of every delivered seq up to 2.", ClientFrame::Ack { seq: 2 }),
            client_frame(
                "send_without_ref",
                "A send without ref: the answer carries no ref either.",
                ClientFrame::Send {
                    reference: None,
                    envelope: WireEnvelope::from(&stored),
                },
            ),
            server_frame(
                "gap_expired",
                "Messages after the client's cursor expired before they were acknowledged; the cursor moves to (epoch, seq) and deliveries continue after it in the same epoch.",
                ServerFrame::Gap {
                    epoch: EPOCH,
                    seq: 5,
                    reason: GapReason::Expired,
                },
            ),
            server_frame(
                "gap_epoch_changed",
                "The inbox history was lost or reset: the epoch is new, the cursor moves to (epoch, seq) and seqs continue after it.",
                ServerFrame::Gap {
                    epoch: MAX_EPOCH,
                    seq: 0,
                    reason: GapReason::EpochChanged,
                },
            ),
            server_frame(
                "synced",
                "The backlog queued at authentication time has been sent; seq is the last delivered seq.",
                ServerFrame::Synced { epoch: EPOCH, seq: 2 },
            ),
            server_frame(
                "synced_empty",
                "Nothing was queued and the client sent no cursor: synced at seq 0.",
                ServerFrame::Synced { epoch: EPOCH, seq: 0 },
            ),
            server_frame(
                "accepted_duplicate",
                "The same envelope (same id) had been accepted before: nothing was stored or delivered again.",
                ServerFrame::Accepted {
                    reference: Some(4),
                    id: stored.id(),
                    duplicate: true,
                    online: None,
                },
            ),
            server_frame(
                "accepted_ephemeral_offline",
                "An ephemeral envelope no live session of the recipient took; it is dropped, never queued.",
                ServerFrame::Accepted {
                    reference: Some(5),
                    id: ephemeral.id(),
                    duplicate: false,
                    online: Some(false),
                },
            ),
            server_frame(
                "accepted_without_ref",
                "The answer to a send without ref.",
                ServerFrame::Accepted {
                    reference: None,
                    id: stored.id(),
                    duplicate: false,
                    online: None,
                },
            ),
            server_frame(
                "error_rate_limited",
                "A send refused by the rate limit, with its ref and the time to wait.",
                ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    detail: "rate limit exceeded for this sender key; retry in 101 ms".into(),
                    reference: Some(7),
                    retry_after_ms: Some(101),
                },
            ),
            server_frame(
                "error_cursor_ahead",
                "An ack past the last delivered seq; no ref because it answers no send.",
                ServerFrame::Error {
                    code: ErrorCode::CursorAhead,
                    detail: "ack 9 is past the last delivered seq 2".into(),
                    reference: None,
                    retry_after_ms: None,
                },
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------
// negative_frames.json

#[derive(Serialize)]
pub struct NegativeFrame {
    name: &'static str,
    description: &'static str,
    codec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msgpack_hex: Option<String>,
    max_frame_bytes: usize,
    error: &'static str,
}

fn negative_frame(
    name: &'static str,
    description: &'static str,
    codec: Codec,
    data: Vec<u8>,
    error: ErrorCode,
) -> NegativeFrame {
    let got = decode_frame(codec, &data, MAX_FRAME_BYTES).expect_err(name);
    assert_eq!(got.code(), error, "{name}: {got}");
    let (codec_name, json, msgpack_hex) = match codec {
        Codec::Json => ("json", Some(String::from_utf8(data).expect("UTF-8")), None),
        Codec::MsgPack => ("msgpack", None, Some(hex::encode(data))),
    };
    NegativeFrame {
        name,
        description,
        codec: codec_name,
        json,
        msgpack_hex,
        max_frame_bytes: MAX_FRAME_BYTES,
        error: error.as_str(),
    }
}

pub fn negative_frames() -> VectorFile<NegativeFrame> {
    let json = |s: &str| s.as_bytes().to_vec();
    let unknown_msgpack = Codec::MsgPack
        .encode(&serde_json::json!({"type": "subscribe", "topic": "x"}))
        .expect("msgpack")
        .into_bytes();
    let mut ack_then_byte = Codec::MsgPack
        .encode(&ClientFrame::Ack { seq: 2 })
        .expect("msgpack")
        .into_bytes();
    ack_then_byte.push(0x00);
    VectorFile {
        description: "Client frames the relay cannot decode, with the code of the error frame it answers (after authentication the session stays open; as the first frame it is followed by close 4003).",
        generator: GENERATOR,
        vectors: vec![
            negative_frame(
                "unknown_type",
                "A frame type the protocol does not define.",
                Codec::Json,
                json(r#"{"type":"subscribe","topic":"x"}"#),
                ErrorCode::UnknownFrame,
            ),
            negative_frame(
                "unknown_type_msgpack",
                "The same in MessagePack.",
                Codec::MsgPack,
                unknown_msgpack,
                ErrorCode::UnknownFrame,
            ),
            negative_frame("not_json", "Not JSON.", Codec::Json, json("{not json"), ErrorCode::Malformed),
            negative_frame(
                "not_msgpack",
                "0xc1 is never used in MessagePack.",
                Codec::MsgPack,
                vec![0xc1],
                ErrorCode::Malformed,
            ),
            negative_frame(
                "msgpack_trailing_bytes",
                "A valid ack frame (82 a4 74797065 a3 61636b a3 736571 02) followed by one more byte: a frame is exactly one MessagePack value, as a JSON frame is exactly one JSON value.",
                Codec::MsgPack,
                ack_then_byte,
                ErrorCode::Malformed,
            ),
            negative_frame(
                "json_trailing_characters",
                "A valid ack frame followed by more characters.",
                Codec::Json,
                json(r#"{"type":"ack","seq":2} {}"#),
                ErrorCode::Malformed,
            ),
            negative_frame("missing_type", "No type member.", Codec::Json, json(r#"{"seq":3}"#), ErrorCode::Malformed),
            negative_frame(
                "ack_seq_string",
                "seq as a string instead of a number.",
                Codec::Json,
                json(r#"{"type":"ack","seq":"3"}"#),
                ErrorCode::Malformed,
            ),
            negative_frame(
                "ack_seq_negative",
                "A negative seq.",
                Codec::Json,
                json(r#"{"type":"ack","seq":-1}"#),
                ErrorCode::Malformed,
            ),
            negative_frame(
                "cursor_unknown_member",
                "An auth cursor with a member other than epoch and seq.",
                Codec::Json,
                json(&format!(
                    r#"{{"type":"auth","key":"{}","timestamp":{T0},"signature":"{}","cursor":{{"epoch":1,"seq":0,"head":3}}}}"#,
                    bob().public_key().to_hex(),
                    BASE64.encode([0u8; 64])
                )),
                ErrorCode::Malformed,
            ),
            negative_frame(
                "too_large",
                "A frame longer than the relay's frame limit (max_frame_bytes); over WebSocket the relay usually closes with 1009 before decoding.",
                Codec::Json,
                vec![b' '; MAX_FRAME_BYTES + 1],
                ErrorCode::TooLarge,
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------
// clock_skew.json

#[derive(Serialize)]
pub struct ClockVector {
    name: &'static str,
    timestamp: u64,
    now_ms: u64,
    max_skew_ms: u64,
    error: Option<&'static str>,
}

fn clock(name: &'static str, timestamp: u64, now_ms: u64) -> ClockVector {
    let error = check_timestamp(timestamp, now_ms, MAX_SKEW_MS)
        .err()
        .map(|e| e.code().as_str());
    ClockVector {
        name,
        timestamp,
        now_ms,
        max_skew_ms: MAX_SKEW_MS,
        error,
    }
}

pub fn clock_skew() -> VectorFile<ClockVector> {
    VectorFile {
        description: "The clock-skew window shared by envelopes, auth frames and signed HTTP requests: |now_ms - timestamp| <= max_skew_ms is accepted, anything further is stale_timestamp.",
        generator: GENERATOR,
        vectors: vec![
            clock("equal", T0, T0),
            clock("past_at_limit", T0, T0 + MAX_SKEW_MS),
            clock("past_beyond_limit", T0, T0 + MAX_SKEW_MS + 1),
            clock("future_at_limit", T0 + MAX_SKEW_MS, T0),
            clock("future_beyond_limit", T0 + MAX_SKEW_MS + 1, T0),
        ],
    }
}

// ---------------------------------------------------------------------------------
// errors.json

#[derive(Serialize)]
pub struct ErrorsFile {
    description: &'static str,
    generator: &'static str,
    error_codes: Vec<ErrorCodeEntry>,
    close_codes: Vec<CloseCodeEntry>,
}

#[derive(Serialize)]
struct ErrorCodeEntry {
    code: &'static str,
    http_status: u16,
}

#[derive(Serialize)]
struct CloseCodeEntry {
    name: &'static str,
    code: u16,
}

/// Every error code. The match makes adding a variant a compile error here.
fn all_error_codes() -> Vec<ErrorCode> {
    use ErrorCode::*;
    let all = vec![
        Malformed,
        UnknownFrame,
        UnsupportedMediaType,
        InvalidKey,
        BadSignature,
        StaleTimestamp,
        TooLarge,
        Unauthorized,
        Forbidden,
        AuthRequired,
        AlreadyAuthenticated,
        NotFound,
        MethodNotAllowed,
        CursorAhead,
        RateLimited,
        TooManyConnections,
        InboxFull,
        StoreFull,
        Unavailable,
        Internal,
        Timeout,
    ];
    for code in &all {
        match code {
            Malformed | UnknownFrame | UnsupportedMediaType | InvalidKey | BadSignature
            | StaleTimestamp | TooLarge | Unauthorized | Forbidden | AuthRequired
            | AlreadyAuthenticated | NotFound | MethodNotAllowed | CursorAhead | RateLimited
            | TooManyConnections | InboxFull | StoreFull | Unavailable | Internal | Timeout => {}
        }
    }
    all
}

pub fn errors() -> ErrorsFile {
    ErrorsFile {
        description: "Every error code with the HTTP status it is answered with, and every WebSocket close code the relay uses.",
        generator: GENERATOR,
        error_codes: all_error_codes()
            .into_iter()
            .map(|c| ErrorCodeEntry {
                code: c.as_str(),
                http_status: http_status(c).as_u16(),
            })
            .collect(),
        close_codes: vec![
            CloseCodeEntry {
                name: "going_away",
                code: close_code::GOING_AWAY,
            },
            CloseCodeEntry {
                name: "protocol_error",
                code: close_code::PROTOCOL_ERROR,
            },
            CloseCodeEntry {
                name: "invalid_payload",
                code: close_code::INVALID_PAYLOAD,
            },
            CloseCodeEntry {
                name: "too_big",
                code: close_code::TOO_BIG,
            },
            CloseCodeEntry {
                name: "internal_error",
                code: close_code::INTERNAL_ERROR,
            },
            CloseCodeEntry {
                name: "replaced",
                code: close_code::REPLACED,
            },
            CloseCodeEntry {
                name: "slow_consumer",
                code: close_code::SLOW_CONSUMER,
            },
            CloseCodeEntry {
                name: "auth_failed",
                code: close_code::AUTH_FAILED,
            },
            CloseCodeEntry {
                name: "auth_timeout",
                code: close_code::AUTH_TIMEOUT,
            },
            CloseCodeEntry {
                name: "ping_timeout",
                code: close_code::PING_TIMEOUT,
            },
            CloseCodeEntry {
                name: "unavailable",
                code: close_code::UNAVAILABLE,
            },
            CloseCodeEntry {
                name: "epoch_changed",
                code: close_code::RESYNC,
            },
            CloseCodeEntry {
                name: "bad_signatures",
                code: close_code::BAD_SIGNATURES,
            },
        ],
    }
}
