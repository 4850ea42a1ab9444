//! The WebSocket socket layer, the same on every route (native `/v1/ws`, v1 `/ws/{key}`,
//! `/signal`): RFC 6455 close codes for broken framing, the close handshake a reading
//! client always sees the end of, and bounded memory for a peer that does not read.

use whispr::protocol::Identity;

use crate::support::v1::{post, V1User};
use crate::support::{
    close_code, config_with, RawEnd, RawWs, TestRelay, FIN, OP_BINARY, OP_CONT, OP_PING, OP_TEXT,
};

/// Small message limits, so "oversized" is cheap to send.
fn small() -> whispr::config::Config {
    config_with(
        "max_message_bytes = 1024\nsignal_max_message_bytes = 1024\nws_max_write_buffer_bytes = 65536",
    )
}

fn routes() -> Vec<String> {
    let key = Identity::generate().public_key().to_hex();
    vec!["/v1/ws".into(), format!("/ws/{key}"), "/signal".into()]
}

#[tokio::test]
async fn broken_framing_closes_with_the_rfc_6455_code_on_every_route() {
    let relay = TestRelay::start_with(small()).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            RawWs::frame(FIN | OP_TEXT, false, b"hi"),
            1002,
        ),
        (
            "RSV1 set",
            RawWs::frame(FIN | 0x40 | OP_TEXT, true, b"hi"),
            1002,
        ),
        (
            "reserved data opcode",
            RawWs::frame(FIN | 0x3, true, b"hi"),
            1002,
        ),
        (
            "reserved control opcode",
            RawWs::frame(FIN | 0xB, true, b""),
            1002,
        ),
        (
            "orphan continuation",
            RawWs::frame(FIN | OP_CONT, true, b"hi"),
            1002,
        ),
        (
            "ping over 125 bytes",
            RawWs::frame(FIN | OP_PING, true, &[0; 126]),
            1002,
        ),
        (
            "text that is not UTF-8",
            RawWs::frame(FIN | OP_TEXT, true, &[b'{', 0xff, 0xfe]),
            1007,
        ),
        // Far more than the relay reads: it stops at the header, and the unread rest
        // must not make the kernel reset the connection under the close frame.
        (
            "oversized data frame",
            RawWs::frame(FIN | OP_BINARY, true, &vec![b'x'; 256 * 1024]),
            1009,
        ),
    ];
    for path in routes() {
        for (what, frame, code) in &cases {
            let mut ws = RawWs::connect(relay.addr, &path).await;
            // An early close may cut the write short; the close frame must still come.
            let _ = ws.write(frame).await;
            assert_eq!(
                close_code(&mut ws).await,
                RawEnd::Close(*code),
                "{what} on {path}"
            );
        }
    }
    assert!(
        relay
            .metric_value("whispr_ws_closes_total{reason=\"protocol_error\"}")
            .await
            >= 18.0
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_client_behind_on_reading_still_gets_1009_for_a_frame_the_relay_left_unread() {
    let relay = TestRelay::start_with(config_with(
        "max_message_bytes = 1024\nsignal_max_message_bytes = 1024\nws_max_write_buffer_bytes = 65536\nws_close_timeout_seconds = 30",
    ))
    .await;
    for path in routes() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut ws = RawWs::connect_with(socket, relay.addr, &path).await;
        // Pongs the client does not read yet: the close frame queues behind them.
        let pings = RawWs::frame(FIN | OP_PING, true, &[7; 125]).repeat(200);
        ws.write(&pings).await.unwrap();
        let before = relay
            .metric_value("whispr_ws_closes_total{reason=\"too_big\"}")
            .await;
        let big = RawWs::frame(FIN | OP_BINARY, true, &vec![b'x'; 256 * 1024]);
        ws.write(&big).await.unwrap();
        relay
            .wait_metric("whispr_ws_closes_total{reason=\"too_big\"}", before + 1.0)
            .await;
        // Dropping the connection now, with the frame's rest unread, would reset it
        // and discard the close frame still queued for the client.
        assert_eq!(close_code(&mut ws).await, RawEnd::Close(1009), "{path}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_peer_that_floods_pings_and_never_reads_is_closed_with_4002_within_the_cap() {
    let cap = 65536;
    let relay = TestRelay::start_with(config_with(&format!(
        "max_message_bytes = 1024\nsignal_max_message_bytes = 1024\nws_max_write_buffer_bytes = {cap}\nws_close_timeout_seconds = 30"
    )))
    .await;
    let info: serde_json::Value = reqwest::get(format!("{}/v1/info", relay.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limits = &info["limits"];
    assert_eq!(limits["ws_max_write_buffer_bytes"], cap);
    let budget = limits["ws_max_bytes_per_connection"].as_u64().unwrap() as usize;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    // Unauthenticated: /signal needs nothing before it answers pings.
    let mut ws = RawWs::connect_with(socket, relay.addr, "/signal").await;
    let pings = RawWs::frame(FIN | OP_PING, true, &[7; 125]).repeat(1000);
    let slow = "whispr_ws_closes_total{reason=\"slow_consumer\"}";
    let mut sent = 0;
    while relay.metric_value(slow).await < 1.0 {
        assert!(sent < 2000, "still open after {sent}000 unanswered pings");
        ws.write(&pings)
            .await
            .expect("the relay reads while it buffers pongs, and while it closes");
        sent += 1;
    }
    // Reading now: the pongs the kernel and the relay held, then the close frame.
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4002));
    let peak = relay
        .wait_metric("whispr_ws_write_buffer_peak_bytes", 1.0)
        .await as usize;
    assert!(peak > cap, "the cap was reached ({peak})");
    assert!(peak <= cap + 256, "the cap held: {peak}");
    assert!(peak <= budget, "within the published worst case {budget}");
    relay.stop().await;
}

#[tokio::test]
async fn a_v1_socket_that_does_not_read_is_closed_with_4002_after_its_write_timeout() {
    let relay = TestRelay::start_with(config_with(
        "ws_write_timeout_seconds = 1\nmax_store_bytes = 268435456\nws_close_timeout_seconds = 30",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut ws = RawWs::connect_with(socket, relay.addr, &format!("/ws/{}", bob.enc_pub())).await;
    let text = "x".repeat(40_000);
    let slow = "whispr_ws_closes_total{reason=\"slow_consumer\"}";
    let mut sent = 0;
    while relay.metric_value(slow).await < 1.0 {
        assert!(sent < 2000, "still open after {sent} unread messages");
        let (status, _) = post(&relay, "/send", alice.message(&bob, &text, 1.0).to_string()).await;
        assert_eq!(status, 200);
        sent += 1;
    }
    // Before the socket layer a v1 write timeout dropped the connection (1006).
    assert_eq!(close_code(&mut ws).await, RawEnd::Close(4002));
    relay.stop().await;
}
