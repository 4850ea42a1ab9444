//! `GET /signal`, the Whispr v1 call signalling rooms, over real sockets: on one relay,
//! and across two relays sharing one `redis-server`.
//!
//! No assertion depends on timing: "nothing else arrived" is shown by a marker frame
//! sent afterwards, which a socket's FIFO outbox would deliver after anything leaked.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use whispr::testing::signal::{channel, CallId};

use crate::support::{close_code, config_with, RawEnd, RedisServer, TestRelay};

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(relay: &TestRelay) -> Ws {
    let url = format!("ws://{}/signal", relay.addr);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade /signal")
        .0
}

async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::text(text.into())).await.expect("send");
}

async fn send(ws: &mut Ws, frame: Value) {
    send_text(ws, frame.to_string()).await;
}

async fn join(ws: &mut Ws, call: &str) {
    send(ws, json!({"type": "join", "call_id": call})).await;
}

pub(crate) async fn signal(ws: &mut Ws, call: &str, payload: Value) {
    send(
        ws,
        json!({"type": "signal", "call_id": call, "payload": payload}),
    )
    .await;
}

/// The next text frame (pings skipped); 5 s is only a guard against hanging.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("a frame");
        match msg {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// The next text frame as JSON.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("JSON")
}

fn peer_join(call: &str) -> Value {
    json!({"type": "peer-join", "call_id": call})
}

fn peer_leave(call: &str) -> Value {
    json!({"type": "peer-leave", "call_id": call})
}

pub(crate) fn signalled(call: &str, payload: Value) -> Value {
    json!({"type": "signal", "call_id": call, "payload": payload})
}

/// The relayed-size limit of these tests, small so that [`sync`] is cheap.
const LIMIT: usize = 1024;

/// A relay config with `LIMIT` and `extra`.
fn signal_config(extra: &str) -> whispr::config::Config {
    config_with(&format!("signal_max_message_bytes = {LIMIT}\n{extra}"))
}

/// Returns once the relay has processed every frame `ws` sent before: a frame over
/// the limit is always answered, and a socket's frames are handled in order.
async fn sync(ws: &mut Ws) {
    send_text(ws, "x".repeat(LIMIT + 1)).await;
    let answer = next(ws).await;
    assert_eq!(
        answer,
        json!({"type": "error", "detail": "message too big"}),
        "the answer to the sync frame comes first"
    );
}

/// `a` and `b` in `call`; `a` has seen `b` join.
async fn pair(relay: &TestRelay, call: &str) -> (Ws, Ws) {
    let (mut a, mut b) = (open(relay).await, open(relay).await);
    join(&mut a, call).await;
    sync(&mut a).await;
    join(&mut b, call).await;
    assert_eq!(next(&mut a).await, peer_join(call));
    (a, b)
}

#[tokio::test]
async fn two_peers_exchange_offer_answer_and_candidates_unchanged() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, mut b) = pair(&relay, "call-1").await;
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n"});
    let answer = json!({"type": "answer", "sdp": "v=0\r\n", "extra": {"deep": [1, null, true]}});
    signal(&mut a, "call-1", offer.clone()).await;
    assert_eq!(next(&mut b).await, signalled("call-1", offer));
    signal(&mut b, "call-1", answer.clone()).await;
    // Had `a` got its own offer back, it would be queued before this answer.
    assert_eq!(next(&mut a).await, signalled("call-1", answer));

    // Payloads pass byte for byte: number formats and key order survive.
    send_text(
        &mut a,
        r#"{"type":"signal","call_id":"call-1","payload":{"z":1.50,"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 49152 typ host","a":1e3}}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut b).await,
        r#"{"type":"signal","call_id":"call-1","payload":{"z":1.50,"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 49152 typ host","a":1e3}}"#
    );
    for payload in [json!("a string"), json!(42), json!(null), json!([1, 2])] {
        signal(&mut b, "call-1", payload.clone()).await;
        assert_eq!(next(&mut a).await, signalled("call-1", payload));
    }
    relay.stop().await;
}

#[tokio::test]
async fn other_rooms_see_nothing() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, mut b) = pair(&relay, "room-a").await;
    let (mut c, mut d) = pair(&relay, "room-c").await;
    signal(&mut a, "room-a", json!("for b")).await;
    assert_eq!(next(&mut b).await, signalled("room-a", json!("for b")));
    // Not a member of room-a: dropped.
    signal(&mut c, "room-a", json!("intruder")).await;
    sync(&mut c).await;
    signal(&mut a, "room-a", json!("second")).await;
    assert_eq!(next(&mut b).await, signalled("room-a", json!("second")));
    signal(&mut d, "room-c", json!("marker")).await;
    assert_eq!(
        next(&mut c).await,
        signalled("room-c", json!("marker")),
        "nothing from room-a reached room-c"
    );
    relay.stop().await;
}

#[tokio::test]
async fn bad_frames_are_ignored_and_the_socket_keeps_working() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, mut b) = pair(&relay, "c").await;
    for bad in [
        "not json".to_string(),
        "[\"join\",\"c\"]".into(),
        "42".into(),
        r#"{"type":"signal","payload":"no call_id"}"#.into(),
        r#"{"type":"signal","call_id":null,"payload":1}"#.into(),
        r#"{"type":"signal","call_id":{"x":1},"payload":1}"#.into(),
        r#"{"type":"dance","call_id":"c"}"#.into(),
        r#"{"call_id":"c","payload":1}"#.into(),
        r#"{"type":"signal","call_id":"c","payload":"#.into(),
    ] {
        send_text(&mut a, bad).await;
    }
    a.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    // Over signal_max_message_bytes but within twice it: an error frame, nothing relayed.
    signal(&mut a, "c", json!("x".repeat(LIMIT + 500))).await;
    let error = next(&mut a).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["detail"], "message too big");
    signal(&mut a, "c", json!("still here")).await;
    assert_eq!(
        next(&mut b).await,
        signalled("c", json!("still here")),
        "no bad frame was relayed and the socket still works"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_frame_over_twice_the_limit_closes_with_1009() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, mut b) = pair(&relay, "c").await;
    signal(&mut a, "c", json!("x".repeat(2 * LIMIT + 1))).await;
    assert_eq!(close_code(&mut a).await, RawEnd::Close(1009));
    assert_eq!(next(&mut b).await, peer_leave("c"));
    relay.stop().await;
}

#[tokio::test]
async fn a_full_room_refuses_a_join() {
    let relay = TestRelay::start_with(signal_config("signal_max_peers_per_room = 2")).await;
    let (mut a, mut b) = pair(&relay, "c").await;
    let mut late = open(&relay).await;
    join(&mut late, "c").await;
    let error = next(&mut late).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["detail"], "room full");
    // Not joined: its signals go nowhere, and a's next frame is b's.
    signal(&mut late, "c", json!("ignored")).await;
    sync(&mut late).await;
    signal(&mut b, "c", json!("from b")).await;
    assert_eq!(next(&mut a).await, signalled("c", json!("from b")));

    send(&mut b, json!({"type": "leave", "call_id": "c"})).await;
    assert_eq!(next(&mut a).await, peer_leave("c"));
    join(&mut late, "c").await;
    assert_eq!(next(&mut a).await, peer_join("c"), "room for one again");
    relay.stop().await;
}

#[tokio::test]
async fn rooms_per_connection_are_limited() {
    let relay = TestRelay::start_with(signal_config("signal_max_rooms_per_connection = 2")).await;
    let mut busy = open(&relay).await;
    let mut watcher = open(&relay).await;
    join(&mut watcher, "r3").await;
    sync(&mut watcher).await;
    join(&mut busy, "r1").await;
    join(&mut busy, "r2").await;
    join(&mut busy, "r3").await;
    let error = next(&mut busy).await;
    assert_eq!(error["detail"], "too many rooms");
    assert_eq!(error["call_id"], "r3");
    send(&mut busy, json!({"type": "leave", "call_id": "r1"})).await;
    join(&mut busy, "r3").await;
    assert_eq!(next(&mut watcher).await, peer_join("r3"));
    relay.stop().await;
}

#[tokio::test]
async fn closing_a_socket_tells_its_peers_and_the_room_vanishes() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, mut b) = pair(&relay, "c").await;
    b.close(None).await.unwrap();
    assert_eq!(next(&mut a).await, peer_leave("c"));
    assert_eq!(signal_gauges(&relay).await, (1, 1));
    send(&mut a, json!({"type": "leave", "call_id": "c"})).await;
    sync(&mut a).await;
    assert_eq!(
        signal_gauges(&relay).await,
        (0, 0),
        "the empty room is gone"
    );
    relay.stop().await;
}

/// (whispr_signal_rooms, whispr_signal_members) from `/metrics`.
async fn signal_gauges(relay: &TestRelay) -> (i64, i64) {
    let text = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    (gauge("whispr_signal_rooms"), gauge("whispr_signal_members"))
}

#[tokio::test]
async fn shutdown_closes_signal_sockets_with_1001() {
    let relay = TestRelay::start_with(signal_config("")).await;
    let (mut a, _b) = pair(&relay, "c").await;
    let stopping = tokio::spawn(relay.stop());
    assert_eq!(close_code(&mut a).await, RawEnd::Close(1001));
    stopping.await.unwrap();
}

#[tokio::test]
async fn switched_off_signal_is_404() {
    let relay = TestRelay::start_with(config_with("compat_whispr_v1 = false")).await;
    let resp = reqwest::get(format!("{}/signal", relay.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let url = format!("ws://{}/signal", relay.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    relay.stop().await;
}

/// Two relays on `redis`.
async fn two_nodes(redis: &RedisServer, extra: &str) -> (TestRelay, TestRelay) {
    TestRelay::pair(signal_config(&format!(
        "store = \"redis\"\nredis_url = {:?}\n{extra}",
        redis.url
    )))
    .await
}

/// Waits until `n` connections are subscribed to `call`'s channel (5 s guard), so a
/// join published next is heard by every node in the room.
async fn subscribers(redis: &RedisServer, call: &str, n: i64) {
    let name = channel(&CallId::string(call).unwrap());
    crate::support::wait_subscribers(&redis.url, &name, n).await;
}

/// A subscriber of `call`'s channel, to see what the nodes published.
async fn watch(redis_url: &str, call: &str) -> redis::aio::PubSub {
    let client = redis::Client::open(redis_url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(channel(&CallId::string(call).unwrap()))
        .await
        .unwrap();
    pubsub
}

/// Waits (5 s guard) for the next event of kind `k` on a watched channel: once a
/// node's join is seen, that node is subscribed and its join is out, so a socket
/// joining next on another node is not told of it.
async fn seen(pubsub: &mut redis::aio::PubSub, k: &str) {
    let mut messages = pubsub.on_message();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("published within 5 s")
            .expect("subscribed");
        let payload: String = msg.get_payload().unwrap();
        let event: Value = serde_json::from_str(&payload).unwrap();
        if event["k"] == k {
            return;
        }
    }
}

/// `a` on `node_a` and `b` on `node_b` in `call`; `a` has seen `b` join.
/// `redis_url`: any node of the Redis the relays use (on a cluster, classic pub/sub
/// reaches every node).
pub(crate) async fn cross_pair(
    redis_url: &str,
    node_a: &TestRelay,
    node_b: &TestRelay,
    call: &str,
) -> (Ws, Ws) {
    let mut watcher = watch(redis_url, call).await;
    let mut a = open(node_a).await;
    join(&mut a, call).await;
    seen(&mut watcher, "j").await;
    let mut b = open(node_b).await;
    join(&mut b, call).await;
    assert_eq!(next(&mut a).await, peer_join(call));
    (a, b)
}

#[tokio::test]
async fn peers_on_two_nodes_exchange_offer_and_answer() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (node_a, node_b) = two_nodes(&redis, "signal_max_peers_per_room = 2").await;
    let (mut a, mut b) = cross_pair(&redis.url, &node_a, &node_b, "x-call").await;

    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    signal(&mut a, "x-call", offer.clone()).await;
    assert_eq!(next(&mut b).await, signalled("x-call", offer));
    let answer = json!({"type": "answer", "sdp": "v=0\r\n", "n": 1.50});
    signal(&mut b, "x-call", answer.clone()).await;
    assert_eq!(
        next(&mut a).await,
        signalled("x-call", answer),
        "no echo of a's offer came back first"
    );
    let candidate =
        json!({"candidate": "candidate:1 1 udp 1 10.0.0.2 5000 typ host", "sdpMid": "0"});
    signal(&mut b, "x-call", candidate.clone()).await;
    assert_eq!(next(&mut a).await, signalled("x-call", candidate));

    // Node A heard of b: the room is full there too.
    let mut third = open(&node_a).await;
    join(&mut third, "x-call").await;
    assert_eq!(next(&mut third).await["detail"], "room full");

    b.close(None).await.unwrap();
    assert_eq!(next(&mut a).await, peer_leave("x-call"));
    node_a.stop().await;
    node_b.stop().await;
}

#[tokio::test]
async fn rooms_span_nodes_again_after_pub_sub_reconnects() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (node_a, node_b) = two_nodes(&redis, "").await;
    let (mut a, mut b) = cross_pair(&redis.url, &node_a, &node_b, "y").await;

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Local rooms keep working meanwhile; both nodes subscribe again.
    subscribers(&redis, "y", 2).await;
    signal(&mut a, "y", json!("after the reconnect")).await;
    assert_eq!(
        next(&mut b).await,
        signalled("y", json!("after the reconnect"))
    );
    signal(&mut b, "y", json!("back")).await;
    assert_eq!(next(&mut a).await, signalled("y", json!("back")));
    node_a.stop().await;
    node_b.stop().await;
}
