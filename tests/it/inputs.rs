//! The third promise: every bad input gets its documented error, and the relay keeps
//! serving everyone else.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use whispr::client::ClientError;
use whispr::protocol::{
    ClientFrame, Codec, Envelope, ErrorCode, Identity, ServerFrame, WireEnvelope,
};

use crate::support::{config_with, drain_until_synced, next, TestRelay};

/// Sends a frame expected to be refused and returns the error code and ref.
async fn refused(ws: &mut whispr::client::WsClient) -> (ErrorCode, Option<u64>, Option<u64>) {
    match next(ws).await {
        ServerFrame::Error {
            code,
            reference,
            retry_after_ms,
            ..
        } => (code, reference, retry_after_ms),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A good send still goes through: the session and the relay are intact.
async fn still_serving(relay: &TestRelay, ws: &mut whispr::client::WsClient, from: &Identity) {
    let to = Identity::generate().public_key();
    let env = relay.seal(from, to, "still fine");
    ws.send(&env, Some(99)).await.unwrap();
    match next(ws).await {
        ServerFrame::Accepted { reference, id, .. } => {
            assert_eq!(reference, Some(99));
            assert_eq!(id, env.id());
        }
        other => panic!("expected accepted, got {other:?}"),
    }
}

fn wire(env: &Envelope) -> WireEnvelope {
    WireEnvelope::from(env)
}

#[tokio::test]
async fn bad_envelopes_over_websocket_get_typed_errors_and_the_session_continues() {
    let relay = TestRelay::start_with(config_with("max_message_bytes = 1024")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut ws, true).await;
    let good = relay.seal(&alice, bob.public_key(), "x");

    let mut bad_sig = wire(&good);
    bad_sig.recipient = Identity::generate().public_key().as_bytes().to_vec();
    let mut stale = relay.seal(&alice, bob.public_key(), "old");
    stale = Envelope::seal(
        &alice,
        bob.public_key(),
        stale.timestamp - 301_000,
        false,
        stale.body,
    );
    let mut short_key = wire(&good);
    short_key.sender.pop();
    let big = Envelope::seal(
        &alice,
        bob.public_key(),
        relay.clock.now_ms(),
        false,
        vec![0; 1025],
    );

    let cases: Vec<(WireEnvelope, ErrorCode)> = vec![
        (bad_sig, ErrorCode::BadSignature),
        (wire(&stale), ErrorCode::StaleTimestamp),
        (short_key, ErrorCode::InvalidKey),
        (wire(&big), ErrorCode::TooLarge),
    ];
    for (n, (envelope, code)) in cases.into_iter().enumerate() {
        ws.send_frame(&ClientFrame::Send {
            reference: Some(n as u64),
            envelope,
        })
        .await
        .unwrap();
        assert_eq!(refused(&mut ws).await, (code, Some(n as u64), None));
    }
    still_serving(&relay, &mut ws, &alice).await;

    for (raw, code) in [
        (r#"{"type":"send","envelope":{"#, ErrorCode::Malformed),
        (
            r#"{"type":"subscribe","topic":"x"}"#,
            ErrorCode::UnknownFrame,
        ),
        (r#"{"type":"ack"}"#, ErrorCode::Malformed),
        (r#"[1,2,3]"#, ErrorCode::Malformed),
    ] {
        ws.send_raw(Message::text(raw)).await.unwrap();
        assert_eq!(refused(&mut ws).await.0, code, "{raw}");
    }
    ws.send_raw(Message::binary(vec![0x93, 1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(
        refused(&mut ws).await.0,
        ErrorCode::Malformed,
        "binary on a JSON session"
    );
    ws.send_frame(&ClientFrame::Ack { seq: 5 }).await.unwrap();
    assert_eq!(
        refused(&mut ws).await.0,
        ErrorCode::CursorAhead,
        "ack of something never delivered"
    );
    still_serving(&relay, &mut ws, &alice).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_send_whose_envelope_does_not_decode_is_answered_with_its_ref() {
    let relay = TestRelay::start().await;
    let alice = Identity::generate();
    let (mut ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut ws, true).await;
    let good = serde_json::to_value(wire(&relay.seal(&alice, alice.public_key(), "x"))).unwrap();
    let mut bad_body = good.clone();
    bad_body["body"] = serde_json::json!("***");
    let mut no_signature = good.clone();
    no_signature.as_object_mut().unwrap().remove("signature");
    for (n, envelope) in [bad_body, no_signature, serde_json::json!(7)]
        .into_iter()
        .enumerate()
    {
        let frame = serde_json::json!({"type": "send", "ref": 40 + n, "envelope": envelope});
        ws.send_raw(Message::text(frame.to_string())).await.unwrap();
        assert_eq!(
            refused(&mut ws).await,
            (ErrorCode::Malformed, Some(40 + n as u64), None),
            "{frame}"
        );
    }
    still_serving(&relay, &mut ws, &alice).await;

    // MessagePack: the same, and trailing bytes after a whole frame are refused.
    let (mut ws, _) = relay.connect_at(&alice, None, Codec::MsgPack).await;
    drain_until_synced(&mut ws, true).await;
    let frame = rmp_serde::to_vec_named(&serde_json::json!({
        "type": "send", "ref": 50, "envelope": {"body": 1}
    }))
    .unwrap();
    ws.send_raw(Message::binary(frame)).await.unwrap();
    assert_eq!(
        refused(&mut ws).await,
        (ErrorCode::Malformed, Some(50), None)
    );
    let mut ack_and_more = rmp_serde::to_vec_named(&ClientFrame::Ack { seq: 0 }).unwrap();
    ack_and_more.push(0);
    ws.send_raw(Message::binary(ack_and_more)).await.unwrap();
    assert_eq!(
        refused(&mut ws).await.0,
        ErrorCode::Malformed,
        "trailing byte"
    );
    still_serving(&relay, &mut ws, &alice).await;
    relay.stop().await;
}

#[tokio::test]
async fn malformed_messagepack_gets_an_error_frame() {
    let relay = TestRelay::start().await;
    let alice = Identity::generate();
    let (mut ws, _) = relay.connect_at(&alice, None, Codec::MsgPack).await;
    drain_until_synced(&mut ws, true).await;
    for raw in [
        vec![0xc1],
        vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0xa3, b'f', b'o', b'o'],
        b"\x92\x01".to_vec(),
    ] {
        ws.send_raw(Message::binary(raw.clone())).await.unwrap();
        let (code, _, _) = refused(&mut ws).await;
        assert!(
            matches!(code, ErrorCode::Malformed | ErrorCode::UnknownFrame),
            "{raw:?}: {code:?}"
        );
    }
    ws.send_raw(Message::text("{}")).await.unwrap();
    assert_eq!(
        refused(&mut ws).await.0,
        ErrorCode::Malformed,
        "text on a MessagePack session"
    );
    still_serving(&relay, &mut ws, &alice).await;
    relay.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_are_unaffected() {
    let relay = TestRelay::start_with(config_with("max_message_bytes = 1024")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut bystander, _) = relay.connect(&bob).await;
    drain_until_synced(&mut bystander, true).await;
    let (mut ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut ws, true).await;
    ws.send_raw(Message::text("x".repeat(64 * 1024)))
        .await
        .unwrap();
    match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next_frame())
        .await
        .unwrap()
    {
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    let (mut alice2, _) = relay.connect(&alice).await;
    drain_until_synced(&mut alice2, true).await;
    alice2
        .send(&relay.seal(&alice, bob.public_key(), "after"), None)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut alice2).await,
        ServerFrame::Accepted { .. }
    ));
    assert!(matches!(
        next(&mut bystander).await,
        ServerFrame::Deliver { .. }
    ));
    relay.stop().await;
}

async fn post(relay: &TestRelay, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/send", relay.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn bad_envelopes_over_http_get_status_and_json_errors() {
    let relay = TestRelay::start_with(config_with("max_message_bytes = 1024")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let good = relay.seal(&alice, bob.public_key(), "x");
    let json = |w: &WireEnvelope| serde_json::to_vec(w).unwrap();

    let mut bad_sig = wire(&good);
    bad_sig.body = b"tampered".to_vec();
    let stale = Envelope::seal(
        &alice,
        bob.public_key(),
        good.timestamp + 400_000,
        false,
        b"future".to_vec(),
    );
    let mut long_key = wire(&good);
    long_key.recipient.push(0);
    let big = Envelope::seal(
        &alice,
        bob.public_key(),
        good.timestamp,
        false,
        vec![1; 2000],
    );

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", json(&bad_sig), 422, "bad_signature"),
        (
            "application/json",
            json(&wire(&stale)),
            422,
            "stale_timestamp",
        ),
        ("application/json", json(&long_key), 422, "invalid_key"),
        ("application/json", json(&wire(&big)), 413, "too_large"),
        ("application/json", vec![b'{'; 200_000], 413, "too_large"),
        (
            "application/json",
            b"{\"recipient\":1}".to_vec(),
            400,
            "malformed",
        ),
        ("application/json", b"not json".to_vec(), 400, "malformed"),
        ("application/msgpack", vec![0xc1, 0x00], 400, "malformed"),
        (
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (ct, body, status, code) in cases {
        let (got_status, got) = post(&relay, ct, body).await;
        assert_eq!(got_status, status, "{code}: {got}");
        assert_eq!(got["error"], code, "{got}");
        assert!(
            got["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{got}"
        );
    }
    let (status, ok) = post(
        &relay,
        "application/msgpack",
        rmp_serde::to_vec_named(&wire(&good)).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "MessagePack bodies work too");
    let _ = ok;

    let resp = reqwest::get(format!("{}/v2/nothing", relay.base))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "not_found");
    let resp = reqwest::Client::new()
        .delete(format!("{}/v1/send", relay.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    relay.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second = 1\nburst_messages = 3",
    ))
    .await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for n in 0..3 {
        http.send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    let env = relay.seal(&alice, bob.public_key(), "one too many");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/send", relay.base))
        .json(&wire(&env))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    let (mut ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut ws, true).await;
    ws.send(&env, Some(4)).await.unwrap();
    let (code, reference, retry_ms) = refused(&mut ws).await;
    assert_eq!((code, reference), (ErrorCode::RateLimited, Some(4)));
    assert!(retry_ms.is_some_and(|ms| ms > 0 && ms <= 1001));
    // Another sender is not affected.
    let carol = Identity::generate();
    assert!(http
        .send(&relay.seal(&carol, bob.public_key(), "hi"))
        .await
        .is_ok());
    relay.stop().await;
}

#[tokio::test]
async fn a_full_inbox_refuses_with_507_and_drops_nothing() {
    let relay = TestRelay::start_with(config_with("max_messages_per_recipient = 3")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for n in 0..3 {
        http.send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    match http.send(&relay.seal(&alice, bob.public_key(), "m3")).await {
        Err(ClientError::Refused { code, status, .. }) => {
            assert_eq!(code, ErrorCode::InboxFull);
            assert_eq!(status, Some(507));
        }
        other => panic!("expected 507, got {other:?}"),
    }
    let (mut ws, _) = relay.connect(&bob).await;
    let got = drain_until_synced(&mut ws, true).await;
    assert_eq!(
        got.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    // Acked: room again.
    http.send(&relay.seal(&alice, bob.public_key(), "m3"))
        .await
        .unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn the_per_ip_limit_holds_across_sender_keys() {
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second_per_ip = 1\nburst_messages_per_ip = 2",
    ))
    .await;
    let bob = Identity::generate();
    let http = relay.http();
    for _ in 0..2 {
        let fresh_sender = Identity::generate();
        http.send(&relay.seal(&fresh_sender, bob.public_key(), "hi"))
            .await
            .unwrap();
    }
    match http
        .send(&relay.seal(&Identity::generate(), bob.public_key(), "hi"))
        .await
    {
        Err(ClientError::Refused {
            code,
            status,
            detail,
        }) => {
            assert_eq!((code, status), (ErrorCode::RateLimited, Some(429)));
            assert!(detail.contains("client IP"), "{detail}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    relay.stop().await;
}
