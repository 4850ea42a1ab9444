//! Hostile HTTP clients: partial requests are closed after their deadlines, oversized
//! bodies are refused before they are read, a duplicate Host is refused, and the
//! connection caps refuse beyond them while health checks keep answering.

use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use whispr::protocol::{ErrorCode, Identity, ServerFrame};

use crate::support::{
    closed_by_relay, config_with, connect_from, drain_until_synced, have_program, https_client,
    metric_at, next, raw_request, read_response, scratch_dir, self_signed_cert, RawResponse,
    TestRelay,
};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n";

/// Waits until `/metrics` shows `value` for `line_prefix` (the relay has accepted and
/// counted connections the test opened).
async fn until_metric(relay: &TestRelay, line_prefix: &str, value: i64) {
    for _ in 0..500 {
        if relay.metric(line_prefix).await == value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{line_prefix} never became {value}");
}

/// `GET path` on a new connection from `from`; the answer, then the relay's close
/// (every answer here is on a reserve connection, which serves one request).
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> RawResponse {
    let mut c = connect_from(from, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
    let answer = raw_request(&mut c, &request).await.expect("an answer");
    closed_by_relay(&mut c).await;
    answer
}

/// `n` keep-alive connections from `from`, each with one answered request, held open.
async fn held(from: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut c = connect_from(from, addr).await;
        let answer = raw_request(&mut c, HEALTHZ).await.expect("served");
        assert_eq!(answer.status, 200);
        conns.push(c);
    }
    conns
}

/// A send, a health check and a WebSocket session all work.
async fn healthy_clients_are_served(relay: &TestRelay) {
    let status = reqwest::get(format!("{}/healthz", relay.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "through the flood"))
        .await
        .expect("send");
    match next(&mut ws).await {
        ServerFrame::Deliver { envelope, .. } => assert_eq!(envelope.body, b"through the flood"),
        other => panic!("expected the delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn a_thousand_partial_requests_are_closed_after_their_deadlines_and_others_are_served() {
    let relay = TestRelay::start_with(config_with(
        "http_header_read_timeout_seconds = 3\nhttp_keep_alive_timeout_seconds = 3\nhttp_body_timeout_seconds = 3\nhttp_max_connections_per_ip = 5000\nhttp_max_connections = 5000",
    ))
    .await;
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..500 {
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        c.write_all(b"POST /v1/send HTTP/1.1\r\nHost: relay\r\nContent-Type: appl")
            .await
            .unwrap();
        heads.push(c);
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        c.write_all(
            b"POST /v1/send HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"sender\":",
        )
        .await
        .unwrap();
        bodies.push(c);
    }
    // An idle keep-alive connection, after one answered request.
    let mut idle = held("127.0.0.1", relay.addr, 1).await;

    healthy_clients_are_served(&relay).await;

    for c in &mut heads {
        assert!(
            closed_by_relay(c).await.is_empty(),
            "an unfinished head gets no answer, only the close"
        );
    }
    for c in &mut bodies {
        let answer = closed_by_relay(c).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "an unfinished body is answered 408: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(
        closed_by_relay(&mut idle[0]).await.is_empty(),
        "idle keep-alive"
    );
    assert!(
        relay
            .metric("whispr_messages_refused_total{reason=\"timeout\"}")
            .await
            >= 500
    );
    healthy_clients_are_served(&relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_huge_content_length_is_refused_at_once_before_the_body() {
    // Deadlines far away: only the length check can answer.
    let relay = TestRelay::start_with(config_with(
        "http_header_read_timeout_seconds = 3600\nhttp_keep_alive_timeout_seconds = 3600\nhttp_body_timeout_seconds = 3600",
    ))
    .await;
    for (path, v1) in [("/v1/send", false), ("/send", true)] {
        let mut c = TcpStream::connect(relay.addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
        );
        let answer = raw_request(&mut c, &request).await.expect("an answer");
        assert_eq!(answer.status, 413, "{path}");
        let body = answer.json();
        if v1 {
            assert!(
                body["detail"].as_str().unwrap().contains("over the limit"),
                "{body}"
            );
        } else {
            assert_eq!(body["error"], "too_large", "{body}");
            assert!(
                body["detail"].as_str().unwrap().contains("over the limit"),
                "{body}"
            );
        }
        closed_by_relay(&mut c).await;
    }
    assert_eq!(
        relay
            .metric("whispr_messages_refused_total{reason=\"too_large\"}")
            .await,
        2
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_duplicate_host_header_is_refused() {
    let relay = TestRelay::start().await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let answer = raw_request(
        &mut c,
        "GET /v1/info HTTP/1.1\r\nHost: relay.example\r\nHost: evil.example\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!(body["error"], ErrorCode::Malformed.as_str());
    assert_eq!(body["detail"], "more than one Host header");
    closed_by_relay(&mut c).await;
    relay.stop().await;
}

#[tokio::test]
async fn past_the_per_address_cap_only_health_checks_are_answered() {
    let relay = TestRelay::start_with(config_with(
        "http_max_connections_per_ip = 3\nhttp_reserved_connections = 8\nhttp_reserved_connections_per_ip = 2",
    ))
    .await;
    let flood = "127.0.0.2";
    let _held = held(flood, relay.addr, 3).await;

    let answer = get_from(flood, relay.addr, "/v1/info").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"], "too_many_connections");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("http_max_connections_per_ip (3)"));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = get_from(flood, relay.addr, path).await;
        assert_eq!(answer.status, 200, "{path} from the capped address");
    }

    // Other addresses are not affected.
    let info = reqwest::get(format!("{}/v1/info", relay.base))
        .await
        .unwrap();
    assert_eq!(info.status(), 200);

    // The address's share of the reserve, held without a request; the next is closed
    // at once, without an answer.
    let _reserve = [
        connect_from(flood, relay.addr).await,
        connect_from(flood, relay.addr).await,
    ];
    until_metric(&relay, "whispr_http_connections{pool=\"reserve\"}", 2).await;
    let mut over = connect_from(flood, relay.addr).await;
    let _ = over.write_all(HEALTHZ.as_bytes()).await;
    assert!(
        read_response(&mut over).await.is_none(),
        "closed unanswered"
    );
    assert_eq!(
        relay
            .metric("whispr_http_connections_refused_total{action=\"closed\",cap=\"per_ip\"}")
            .await,
        1
    );
    relay.stop().await;
}

#[tokio::test]
async fn past_the_global_cap_health_checks_answer_and_the_rest_get_503() {
    let relay = TestRelay::start_with(config_with(
        "http_max_connections = 3\nhttp_reserved_connections = 4\nhttp_reserved_connections_per_ip = 4",
    ))
    .await;
    let mut full = held("127.0.0.2", relay.addr, 3).await;

    let answer = get_from("127.0.0.3", relay.addr, "/v1/info").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    for path in ["/healthz", "/readyz"] {
        let answer = get_from("127.0.0.3", relay.addr, path).await;
        assert_eq!(answer.status, 200, "{path} past the global cap");
    }

    // A place given back is taken by the next connection: the scrape that sees no
    // reserve connection (not even itself) was served.
    drop(full.pop());
    until_metric(&relay, "whispr_http_connections{pool=\"reserve\"}", 0).await;
    relay.stop().await;
}

#[tokio::test]
async fn upgraded_websockets_leave_the_http_pool() {
    let relay = TestRelay::start_with(config_with("http_max_connections = 2")).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let who = Identity::generate();
        let (mut ws, _) = relay.connect(&who).await;
        drain_until_synced(&mut ws, true).await;
        sessions.push(ws);
    }
    // Four sessions on a pool of two: each left it when it upgraded. The scrape is a
    // third HTTP connection, served only if the pool has room.
    until_metric(&relay, "whispr_http_connections{pool=\"served\"}", 1).await;
    assert_eq!(relay.metric("whispr_connections ").await, 4);
    relay.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_closed() {
    let relay = TestRelay::start_with(config_with("http_write_timeout_seconds = 1")).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window, so the relay's writes block soon.
    socket.set_recv_buffer_size(4096).unwrap();
    let c = socket.connect(relay.addr).await.unwrap();
    let (_read_half, mut write_half) = c.into_split();
    // Pipelined requests whose answers are never read.
    let writer = tokio::spawn(async move {
        let request = "GET /v1/info HTTP/1.1\r\nHost: relay\r\n\r\n".repeat(5000);
        let _ = write_half.write_all(request.as_bytes()).await;
        write_half
    });
    until_metric(&relay, "whispr_http_timeouts_total{phase=\"write\"}", 1).await;
    writer.abort();
    healthy_clients_are_served(&relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431() {
    let relay = TestRelay::start_with(config_with("http_max_head_bytes = 8192")).await;
    let mut c = TcpStream::connect(relay.addr).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw_request(&mut c, &request).await.expect("an answer");
    assert_eq!(answer.status, 431);
    relay.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_closed_after_the_head_deadline() {
    if !have_program("openssl") {
        return;
    }
    let dir = scratch_dir("http-limits-tls");
    let (cert, key) = self_signed_cert(&dir, "a");
    let relay = TestRelay::start_with(config_with(&format!(
        "tls_cert = {:?}\ntls_key = {:?}\nhttp_header_read_timeout_seconds = 1\nhttp_keep_alive_timeout_seconds = 1",
        cert.display().to_string(),
        key.display().to_string()
    )))
    .await;
    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    assert!(closed_by_relay(&mut silent).await.is_empty());
    let https = https_client(&cert);
    let base = format!("https://{}", relay.addr);
    let timeouts = metric_at(
        &https,
        &base,
        "whispr_http_timeouts_total{phase=\"handshake\"}",
    );
    assert_eq!(timeouts.await, 1);
    relay.stop().await;
}
