//! Session lifecycle: authentication, takeover, slow consumers, pings, shutdown.

use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use whispr::client::{ClientError, WsClient};
use whispr::protocol::{auth_signing_bytes, ClientFrame, Codec, ErrorCode, Identity, ServerFrame};

use crate::support::{
    close_code, config_with, drain_until_synced, next, receive, RawEnd, TestRelay,
};

/// Answers a challenge with a signature over the wrong things.
async fn auth_with(
    relay: &TestRelay,
    sign_nonce: Option<[u8; 32]>,
    sign_origin: Option<&str>,
    skew_ms: i64,
) -> (ServerFrame, RawEnd) {
    let me = Identity::generate();
    let (mut ws, challenge, origin) = WsClient::open(&relay.base, Codec::Json).await.unwrap();
    let ServerFrame::Challenge { nonce, .. } = challenge else {
        panic!("challenge first")
    };
    let nonce: [u8; 32] = sign_nonce.unwrap_or_else(|| nonce.try_into().unwrap());
    let ts = (relay.clock.now_ms() as i64 + skew_ms) as u64;
    let sig = me.sign(&auth_signing_bytes(
        &nonce,
        &me.public_key(),
        ts,
        sign_origin.unwrap_or(&origin),
    ));
    ws.send_frame(&ClientFrame::Auth {
        key: me.public_key().as_bytes().to_vec(),
        timestamp: ts,
        signature: sig.to_bytes().to_vec(),
        cursor: None,
    })
    .await
    .unwrap();
    let frame = next(&mut ws).await;
    (frame, close_code(&mut ws).await)
}

fn error_code(frame: &ServerFrame) -> ErrorCode {
    match frame {
        ServerFrame::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn no_inbox_access_without_proof_of_the_key() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "secret"))
        .await
        .unwrap();

    let (frame, code) = auth_with(&relay, Some([9; 32]), None, 0).await;
    assert_eq!(
        (error_code(&frame), code),
        (ErrorCode::BadSignature, RawEnd::Close(4003)),
        "signature over another nonce"
    );
    let (frame, code) = auth_with(&relay, None, Some("evil.example:443"), 0).await;
    assert_eq!(
        (error_code(&frame), code),
        (ErrorCode::BadSignature, RawEnd::Close(4003)),
        "signature for another origin"
    );
    let (frame, code) = auth_with(&relay, None, None, -400_000).await;
    assert_eq!(
        (error_code(&frame), code),
        (ErrorCode::StaleTimestamp, RawEnd::Close(4003)),
        "stale auth timestamp"
    );

    // Claiming bob's key with mallory's signature.
    let mallory = Identity::generate();
    let (mut ws, challenge, origin) = WsClient::open(&relay.base, Codec::MsgPack).await.unwrap();
    let ServerFrame::Challenge { nonce, .. } = challenge else {
        panic!()
    };
    let nonce: [u8; 32] = nonce.try_into().unwrap();
    let ts = relay.clock.now_ms();
    let sig = mallory.sign(&auth_signing_bytes(&nonce, &bob.public_key(), ts, &origin));
    ws.send_frame(&ClientFrame::Auth {
        key: bob.public_key().as_bytes().to_vec(),
        timestamp: ts,
        signature: sig.to_bytes().to_vec(),
        cursor: None,
    })
    .await
    .unwrap();
    assert_eq!(error_code(&next(&mut ws).await), ErrorCode::BadSignature);
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4003));

    // Anything but auth first.
    let (mut ws, _, _) = WsClient::open(&relay.base, Codec::Json).await.unwrap();
    ws.send_frame(&ClientFrame::Ack { seq: 1 }).await.unwrap();
    assert_eq!(error_code(&next(&mut ws).await), ErrorCode::AuthRequired);
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4003));
    let (mut ws, _, _) = WsClient::open(&relay.base, Codec::Json).await.unwrap();
    ws.send_raw(Message::text("garbage")).await.unwrap();
    assert_eq!(error_code(&next(&mut ws).await), ErrorCode::Malformed);
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4003));

    // Bob's message is still there, for bob only.
    let (mut ws, _) = relay.connect(&bob).await;
    assert_eq!(
        drain_until_synced(&mut ws, true).await,
        vec![(1, "secret".to_string())]
    );
    relay.stop().await;
}

#[tokio::test]
async fn authentication_has_a_deadline() {
    let relay = TestRelay::start_with(config_with("ws_auth_timeout_seconds = 1")).await;
    let (mut ws, challenge, _) = WsClient::open(&relay.base, Codec::Json).await.unwrap();
    assert!(matches!(challenge, ServerFrame::Challenge { .. }));
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4004));
    relay.stop().await;
}

#[tokio::test]
async fn an_unsupported_subprotocol_is_refused_with_a_json_error() {
    let relay = TestRelay::start().await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/ws", relay.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "mqtt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "malformed");
    assert!(body["detail"].as_str().unwrap().contains("whispr.v1.json"));
    relay.stop().await;
}

#[tokio::test]
async fn a_second_session_takes_over_and_the_first_is_closed_with_4001() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    http.send(&relay.seal(&alice, bob.public_key(), "m1"))
        .await
        .unwrap();
    let (mut first, _) = relay.connect(&bob).await;
    assert_eq!(drain_until_synced(&mut first, false).await.len(), 1);
    let (mut second, _) = relay.connect_at(&bob, None, Codec::MsgPack).await;
    assert_eq!(close_code(&mut first).await, RawEnd::Close(4001));
    // The unacked message moves to the new session.
    assert_eq!(
        drain_until_synced(&mut second, true).await,
        vec![(1, "m1".to_string())]
    );
    http.send(&relay.seal(&alice, bob.public_key(), "m2"))
        .await
        .unwrap();
    assert_eq!(
        receive(&mut second, 1, true).await,
        vec![(2, "m2".to_string())]
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_with_4002_and_loses_nothing() {
    let relay = TestRelay::start_with(config_with(
        "ws_write_timeout_seconds = 1\nws_max_inflight = 1000\nmax_message_bytes = 65536\nmax_store_bytes = 268435456\nws_close_timeout_seconds = 30",
    ))
    .await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http_with(Codec::MsgPack);
    let body = "x".repeat(60_000);
    let total = 300;
    for n in 0..total {
        http.send(&relay.seal(&alice, bob.public_key(), &format!("{n:04}{body}")))
            .await
            .unwrap();
    }
    // Authenticate, then stop reading: ~18 MB of deliveries back up into the socket.
    let (mut ws, _) = relay.connect(&bob).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut seen = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next_frame())
            .await
            .unwrap()
        {
            Ok(ServerFrame::Deliver { .. }) => seen += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ClientError::Closed { code, .. }) => break code,
            Err(ClientError::Connect(_)) => break 1006,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        seen < total,
        "the relay gave up before sending everything ({seen})"
    );
    // The close frame waits behind the deliveries until the client reads (within
    // ws_close_timeout_seconds), instead of the connection being dropped (1006).
    assert_eq!(code, 4002, "slow consumer close");
    let (mut ws, _) = relay.connect(&bob).await;
    let got = drain_until_synced(&mut ws, true).await;
    assert_eq!(got.len(), total, "every message is still queued");
    for (i, (seq, b)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert!(b.starts_with(&format!("{i:04}")));
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4005() {
    let relay = TestRelay::start_with(config_with(
        "ws_ping_interval_seconds = 1\nws_pong_timeout_seconds = 1",
    ))
    .await;
    let bob = Identity::generate();
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    // tungstenite answers pings only while we read; sleeping means no pong.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4005));
    // A client that reads (and so answers pings) stays connected through several pings.
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    crate::support::assert_silent(&mut ws, 3500).await;
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_keeps_accepted_messages_queued() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    let accepted = relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "in flight"))
        .await;
    assert!(accepted.is_ok());
    let base = relay.base.clone();
    let stop = tokio::spawn(relay.stop());
    let mut got_it = false;
    let code = loop {
        match next_or_close(&mut ws).await {
            Ok(ServerFrame::Deliver { .. }) => got_it = true,
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert_eq!(code, 1001);
    assert!(
        got_it,
        "the accepted message was delivered before the close"
    );
    stop.await.unwrap();
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no longer listening"
    );
}

async fn next_or_close(ws: &mut WsClient) -> Result<ServerFrame, u16> {
    match tokio::time::timeout(Duration::from_secs(10), ws.next_frame())
        .await
        .unwrap()
    {
        Ok(f) => Ok(f),
        Err(ClientError::Closed { code, .. }) => Err(code),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_clients_subprotocol_order_decides_and_plain_gets_are_refused_in_json() {
    let relay = TestRelay::start().await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/v1/ws", relay.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "whispr.v1.msgpack, whispr.v1.json".parse().unwrap(),
    );
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "whispr.v1.msgpack"
    );

    let resp = reqwest::get(format!("{}/v1/ws", relay.base)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "malformed");
    assert!(body["detail"].as_str().unwrap().contains("WebSocket"));
    relay.stop().await;
}

#[tokio::test]
async fn a_cursor_past_the_inbox_is_lost_history_a_new_epoch_and_everything_is_delivered() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "m1"))
        .await
        .unwrap();
    let (probe, ready) = relay.connect(&bob).await;
    probe.close().await;
    let ahead = whispr::protocol::Cursor {
        epoch: ready.epoch,
        seq: 99,
    };
    // The client saw seqs this inbox never assigned: the store lost history. The inbox
    // moves to a new epoch, the client is told, and gets everything still stored.
    let (mut ws, again) = relay.connect_at(&bob, Some(ahead), Codec::Json).await;
    assert_ne!(again.epoch, ready.epoch);
    match next(&mut ws).await {
        whispr::protocol::ServerFrame::Gap { epoch, reason, .. } => {
            assert_eq!(epoch, again.epoch);
            assert_eq!(reason, whispr::protocol::GapReason::EpochChanged);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        drain_until_synced(&mut ws, true).await,
        vec![(1, "m1".to_string())]
    );
    relay.stop().await;
}
