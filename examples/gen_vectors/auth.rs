//! `auth.json`, `http.json`, `negative_auth.json` and `negative_http.json`: proof of key
//! possession over WebSocket and HTTP, and the attempts the relay must refuse.

use super::*;

// ---------------------------------------------------------------------------------
// auth.json

#[derive(Serialize)]
pub struct AuthVector {
    name: &'static str,
    description: &'static str,
    seed_hex: String,
    key_hex: String,
    origin: String,
    challenge: ChallengeFrame,
    timestamp: u64,
    cursor: Option<Cursor>,
    signing_bytes_hex: String,
    signature_hex: String,
    signature_base64: String,
    auth: Encodings,
    ready: ReadyFrame,
}

#[derive(Serialize)]
struct ChallengeFrame {
    nonce_hex: String,
    timestamp: u64,
    #[serde(flatten)]
    encodings: Encodings,
}

#[derive(Serialize)]
struct ReadyFrame {
    epoch: u64,
    window: u32,
    #[serde(flatten)]
    encodings: Encodings,
}

struct AuthCase {
    name: &'static str,
    description: &'static str,
    identity: Identity,
    origin: &'static str,
    challenge_timestamp: u64,
    timestamp: u64,
    cursor: Option<Cursor>,
    epoch: u64,
}

fn auth_vector(case: AuthCase) -> AuthVector {
    let key = case.identity.public_key();
    let nonce = nonce();
    let challenge = ServerFrame::Challenge {
        nonce: nonce.to_vec(),
        origin: case.origin.into(),
        timestamp: case.challenge_timestamp,
    };
    let challenge_enc = encodings(&challenge);
    assert_round_trip(&challenge_enc, &challenge);

    let bytes = auth_signing_bytes(&nonce, &key, case.timestamp, case.origin);
    let signature = case.identity.sign(&bytes);
    verify_auth(
        &nonce,
        &key,
        case.timestamp,
        case.origin,
        &signature,
        case.timestamp,
        MAX_SKEW_MS,
    )
    .expect("auth verifies");
    let auth = ClientFrame::Auth {
        key: key.as_bytes().to_vec(),
        timestamp: case.timestamp,
        signature: signature.to_bytes().to_vec(),
        cursor: case.cursor,
    };
    let auth_enc = encodings(&auth);
    assert_round_trip(&auth_enc, &auth);
    let state = Unauthenticated {
        nonce,
        origin: case.origin.into(),
    };
    let ok = state
        .on_frame(
            Frame::try_from(auth).expect("auth is a known frame"),
            case.timestamp,
            MAX_SKEW_MS,
        )
        .expect("the session accepts it");
    assert_eq!(ok.key, key);

    let ready = ServerFrame::Ready {
        key: key.as_bytes().to_vec(),
        epoch: case.epoch,
        window: WINDOW,
    };
    let ready_enc = encodings(&ready);
    assert_round_trip(&ready_enc, &ready);

    let sig = signature.to_bytes();
    AuthVector {
        name: case.name,
        description: case.description,
        seed_hex: hex::encode(case.identity.seed()),
        key_hex: key.to_hex(),
        origin: case.origin.into(),
        challenge: ChallengeFrame {
            nonce_hex: hex::encode(nonce),
            timestamp: case.challenge_timestamp,
            encodings: challenge_enc,
        },
        timestamp: case.timestamp,
        cursor: case.cursor,
        signing_bytes_hex: hex::encode(&bytes),
        signature_hex: hex::encode(sig),
        signature_base64: BASE64.encode(sig),
        auth: auth_enc,
        ready: ReadyFrame {
            epoch: case.epoch,
            window: WINDOW,
            encodings: ready_enc,
        },
    }
}

pub fn auth() -> VectorFile<AuthVector> {
    let cases = vec![
        AuthCase {
            name: "bob_first_connection",
            description: "Bob answers a challenge from relay.example.com (default port, so no :port) without a cursor. The relay answers ready with the inbox epoch and the window.",
            identity: bob(),
            origin: "relay.example.com",
            challenge_timestamp: T0 + 1_000,
            timestamp: T0 + 1_042,
            cursor: None,
            epoch: EPOCH,
        },
        AuthCase {
            name: "bob_resumes_with_cursor",
            description: "Bob reconnects to 127.0.0.1:8000 with the cursor of his last processed message (epoch 1234567890123, seq 2), which also acknowledges seqs 1 and 2.",
            identity: bob(),
            origin: "127.0.0.1:8000",
            challenge_timestamp: T0 + 2_000,
            timestamp: T0 + 2_001,
            cursor: Some(Cursor { epoch: EPOCH, seq: 2 }),
            epoch: EPOCH,
        },
        AuthCase {
            name: "alice_max_epoch",
            description: "Alice authenticates to [::1]:8443 (an IPv6 origin keeps its brackets); her inbox epoch is the largest a relay picks, 2^53 - 1.",
            identity: alice(),
            origin: "[::1]:8443",
            challenge_timestamp: T0 + 3_000,
            timestamp: T0 + 2_500,
            cursor: None,
            epoch: MAX_EPOCH,
        },
    ];
    VectorFile {
        description: "WebSocket authentication: the challenge frame, the auth signing bytes and signature, the auth frame, and the ready frame. Verify each with now = timestamp.",
        generator: GENERATOR,
        vectors: cases.into_iter().map(auth_vector).collect(),
    }
}

// ---------------------------------------------------------------------------------
// http.json

#[derive(Serialize)]
pub struct HttpVector {
    name: &'static str,
    description: &'static str,
    seed_hex: String,
    key_hex: String,
    method: &'static str,
    path_and_query: &'static str,
    origin: &'static str,
    timestamp: u64,
    signing_bytes_hex: String,
    signature_hex: String,
    signature_base64: String,
    authorization: String,
}

fn http_vector(
    name: &'static str,
    description: &'static str,
    origin: &'static str,
    path_and_query: &'static str,
    timestamp: u64,
) -> HttpVector {
    let identity = bob();
    let key = identity.public_key();
    let method = "GET";
    let bytes = http_signing_bytes(&key, timestamp, origin, method, path_and_query);
    let auth = HttpAuth::sign(&identity, timestamp, origin, method, path_and_query);
    assert_eq!(auth.signature, identity.sign(&bytes));
    let header = auth.header_value();
    let parsed = HttpAuth::parse(&header).expect("header parses");
    assert_eq!(parsed, auth);
    parsed
        .verify(origin, method, path_and_query, timestamp, MAX_SKEW_MS)
        .expect("verifies");
    let sig = auth.signature.to_bytes();
    HttpVector {
        name,
        description,
        seed_hex: hex::encode(identity.seed()),
        key_hex: key.to_hex(),
        method,
        path_and_query,
        origin,
        timestamp,
        signing_bytes_hex: hex::encode(&bytes),
        signature_hex: hex::encode(sig),
        signature_base64: BASE64.encode(sig),
        authorization: header,
    }
}

pub fn http() -> VectorFile<HttpVector> {
    VectorFile {
        description: "Signed HTTP requests (GET /v1/inbox): signing bytes, signature and the Authorization header value. Verify each with now = timestamp.",
        generator: GENERATOR,
        vectors: vec![
            http_vector(
                "inbox_first_poll",
                "Bob's first poll of his inbox, without a cursor.",
                "relay.example.com",
                "/v1/inbox",
                T0 + 5_000,
            ),
            http_vector(
                "inbox_after_cursor",
                "Bob polls after cursor (epoch 1234567890123, seq 7), at most 50 messages, on 127.0.0.1:8000. The query is signed exactly as sent, parameter order included.",
                "127.0.0.1:8000",
                "/v1/inbox?epoch=1234567890123&since=7&limit=50",
                T0 + 6_000,
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------
// negative_auth.json

#[derive(Serialize)]
pub struct NegativeAuth {
    name: &'static str,
    description: &'static str,
    nonce_hex: String,
    origin: &'static str,
    now_ms: u64,
    max_skew_ms: u64,
    json: String,
    error: &'static str,
    close_code: u16,
}

/// The error code the session sends for a refused first frame (as the socket loop maps it).
fn wire_auth_code(e: &ProtocolError) -> ErrorCode {
    match e {
        ProtocolError::Unauthorized { .. } => ErrorCode::AuthRequired,
        other => other.code(),
    }
}

fn negative_auth_vector(
    name: &'static str,
    description: &'static str,
    origin: &'static str,
    now_ms: u64,
    frame: &ClientFrame,
    error: ErrorCode,
) -> NegativeAuth {
    let json = to_json(frame);
    let state = Unauthenticated {
        nonce: nonce(),
        origin: origin.into(),
    };
    let got = decode_frame(Codec::Json, json.as_bytes(), MAX_FRAME_BYTES)
        .and_then(|f| state.on_frame(f, now_ms, MAX_SKEW_MS))
        .expect_err(name);
    assert_eq!(wire_auth_code(&got), error, "{name}: {got}");
    NegativeAuth {
        name,
        description,
        nonce_hex: hex::encode(nonce()),
        origin,
        now_ms,
        max_skew_ms: MAX_SKEW_MS,
        json,
        error: error.as_str(),
        close_code: close_code::AUTH_FAILED,
    }
}

pub fn negative_auth() -> VectorFile<NegativeAuth> {
    let bob = bob();
    let key = bob.public_key();
    let ts = T0 + 1_042;
    let signed = |nonce: &[u8; 32], origin: &str, ts: u64| ClientFrame::Auth {
        key: key.as_bytes().to_vec(),
        timestamp: ts,
        signature: bob
            .sign(&auth_signing_bytes(nonce, &key, ts, origin))
            .to_bytes()
            .to_vec(),
        cursor: None,
    };
    let origin = "relay.example.com";
    let short_key = match signed(&nonce(), origin, ts) {
        ClientFrame::Auth {
            key,
            timestamp,
            signature,
            cursor,
        } => ClientFrame::Auth {
            key: key[..31].to_vec(),
            timestamp,
            signature,
            cursor,
        },
        _ => unreachable!(),
    };
    VectorFile {
        description: "First frames the relay refuses. It answers with an error frame carrying `error` and then closes the connection with `close_code`. `origin` and the nonce are the relay's challenge; check with the relay's clock at now_ms.",
        generator: GENERATOR,
        vectors: vec![
            negative_auth_vector(
                "wrong_origin",
                "Signed for evil.example.com instead of the relay's origin relay.example.com (the origin a relaying attacker would get the client to sign).",
                origin,
                ts,
                &signed(&nonce(), "evil.example.com", ts),
                ErrorCode::BadSignature,
            ),
            negative_auth_vector(
                "origin_with_default_port",
                "Signed for relay.example.com:443 while the relay's origin is relay.example.com: origins compare byte for byte.",
                origin,
                ts,
                &signed(&nonce(), "relay.example.com:443", ts),
                ErrorCode::BadSignature,
            ),
            negative_auth_vector(
                "wrong_nonce",
                "Signed over another challenge's nonce (bytes 01..20 instead of 00..1f).",
                origin,
                ts,
                &signed(&std::array::from_fn(|i| i as u8 + 1), origin, ts),
                ErrorCode::BadSignature,
            ),
            negative_auth_vector(
                "stale_timestamp",
                "A correct signature whose timestamp is 300001 ms behind the relay's clock.",
                origin,
                ts + MAX_SKEW_MS + 1,
                &signed(&nonce(), origin, ts),
                ErrorCode::StaleTimestamp,
            ),
            negative_auth_vector(
                "key_31_bytes",
                "The key is 31 bytes.",
                origin,
                ts,
                &short_key,
                ErrorCode::InvalidKey,
            ),
            negative_auth_vector(
                "ack_before_auth",
                "Any frame other than auth as the first frame.",
                origin,
                ts,
                &ClientFrame::Ack { seq: 1 },
                ErrorCode::AuthRequired,
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------
// negative_http.json

#[derive(Serialize)]
pub struct NegativeHttp {
    name: &'static str,
    description: &'static str,
    method: &'static str,
    path_and_query: &'static str,
    origin: &'static str,
    now_ms: u64,
    max_skew_ms: u64,
    authorization: String,
    /// The check that fails, as a protocol error code.
    cause: &'static str,
    /// What the relay answers: every failure to prove key ownership is `unauthorized`.
    error: &'static str,
    http_status: u16,
}

/// One refused request: what was sent, to which relay, when, and the failing check.
#[derive(Clone)]
struct HttpCase {
    name: &'static str,
    description: &'static str,
    method: &'static str,
    path_and_query: &'static str,
    origin: &'static str,
    now_ms: u64,
    authorization: String,
    cause: ErrorCode,
}

fn negative_http_vector(case: HttpCase) -> NegativeHttp {
    let got = HttpAuth::parse(&case.authorization)
        .and_then(|a| {
            a.verify(
                case.origin,
                case.method,
                case.path_and_query,
                case.now_ms,
                MAX_SKEW_MS,
            )
        })
        .expect_err(case.name);
    assert_eq!(got.code(), case.cause, "{}: {got}", case.name);
    NegativeHttp {
        name: case.name,
        description: case.description,
        method: case.method,
        path_and_query: case.path_and_query,
        origin: case.origin,
        now_ms: case.now_ms,
        max_skew_ms: MAX_SKEW_MS,
        authorization: case.authorization,
        cause: case.cause.as_str(),
        error: ErrorCode::Unauthorized.as_str(),
        http_status: http_status(ErrorCode::Unauthorized).as_u16(),
    }
}

pub fn negative_http() -> VectorFile<NegativeHttp> {
    let bob = bob();
    let ts = T0 + 5_000;
    let good = HttpAuth::sign(&bob, ts, "relay.example.com", "GET", "/v1/inbox");
    let header = good.header_value();
    let key_hex = bob.public_key().to_hex();
    let sig_b64 = BASE64.encode(good.signature.as_bytes());
    let short_sig = BASE64.encode(&good.signature.as_bytes()[..63]);
    // Each case changes what differs from a correctly signed GET /v1/inbox.
    let base = HttpCase {
        name: "",
        description: "",
        method: "GET",
        path_and_query: "/v1/inbox",
        origin: "relay.example.com",
        now_ms: ts,
        authorization: header.clone(),
        cause: ErrorCode::BadSignature,
    };
    let cases = vec![
        HttpCase {
            name: "query_not_signed",
            description: "Signed for /v1/inbox but sent as /v1/inbox?limit=10: \
                          the query string is part of what is signed.",
            path_and_query: "/v1/inbox?limit=10",
            ..base.clone()
        },
        HttpCase {
            name: "wrong_method",
            description: "Signed for GET but sent as POST.",
            method: "POST",
            ..base.clone()
        },
        HttpCase {
            name: "wrong_origin",
            description: "Signed for relay.example.com but received by a relay whose origin \
                          is relay.example.com:8443.",
            origin: "relay.example.com:8443",
            ..base.clone()
        },
        HttpCase {
            name: "stale_timestamp",
            description: "A correct signature 300001 ms old.",
            now_ms: ts + MAX_SKEW_MS + 1,
            cause: ErrorCode::StaleTimestamp,
            ..base.clone()
        },
        HttpCase {
            name: "other_scheme",
            description: "Not the Whispr scheme.",
            authorization: format!("Bearer {sig_b64}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "repeated_parameter",
            description: "A parameter given twice.",
            authorization: format!("{header}, ts={ts}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "missing_sig",
            description: "No sig parameter.",
            authorization: format!("Whispr key={key_hex}, ts={ts}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "ts_with_plus_sign",
            description: "ts written with a sign: ts is decimal digits only.",
            authorization: format!("Whispr key={key_hex}, ts=+{ts}, sig={sig_b64}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "ts_with_leading_zero",
            description: "ts with a leading zero: one number has one spelling.",
            authorization: format!("Whispr key={key_hex}, ts=0{ts}, sig={sig_b64}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "uppercase_key_hex",
            description: "The key in uppercase hex: the header's key is lowercase hex.",
            authorization: format!(
                "Whispr key={}, ts={ts}, sig={sig_b64}",
                key_hex.to_uppercase()
            ),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "tab_after_comma",
            description: "A tab after a comma: only spaces may surround the commas.",
            authorization: format!("Whispr key={key_hex},\tts={ts}, sig={sig_b64}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "space_around_equals",
            description: "A space before `=`: nothing may surround the `=`.",
            authorization: format!("Whispr key={key_hex}, ts ={ts}, sig={sig_b64}"),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "unpadded_sig",
            description: "sig without its `==` padding: standard base64, padded.",
            authorization: format!(
                "Whispr key={key_hex}, ts={ts}, sig={}",
                sig_b64.trim_end_matches('=')
            ),
            cause: ErrorCode::Unauthorized,
            ..base.clone()
        },
        HttpCase {
            name: "key_31_bytes",
            description: "A 31-byte key.",
            authorization: format!("Whispr key={}, ts={ts}, sig={sig_b64}", &key_hex[..62]),
            cause: ErrorCode::InvalidKey,
            ..base.clone()
        },
        HttpCase {
            name: "signature_63_bytes",
            description: "A 63-byte signature.",
            authorization: format!("Whispr key={key_hex}, ts={ts}, sig={short_sig}"),
            ..base
        },
    ];
    VectorFile {
        description: "Authorization headers the relay refuses for a request (method, \
                      path_and_query) to origin, with its clock at now_ms. `cause` is the failing \
                      check; the relay answers HTTP 401 with error `unauthorized` whatever the cause.",
        generator: GENERATOR,
        vectors: cases.into_iter().map(negative_http_vector).collect(),
    }
}
