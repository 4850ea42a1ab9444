//! Two relay nodes on one `redis-server`: a message sent through one node wakes the
//! recipient's session on the other at once, and a session on one node takes over from
//! an older one on the other.

use std::time::Duration;
use whispr::client::WsClient;
use whispr::protocol::{Codec, Identity};

use crate::support::{
    assert_silent, close_code, drain_until_synced, inbox_key, receive, RawEnd, RedisServer,
    TestRelay,
};

/// Two nodes on `redis`, sharing a clock. The periodic catch-up is slow, so a delivery
/// before its first run (`TestRelay::before_catch_up`) shows the pub/sub wake-up.
async fn two_nodes(redis: &RedisServer) -> (TestRelay, TestRelay) {
    TestRelay::pair(redis.config("ws_catch_up_seconds = 60")).await
}

/// `n` deliveries to a session on `node` before its catch-up could make them, acked.
async fn receive_soon(node: &TestRelay, ws: &mut WsClient, n: usize) -> Vec<(u64, String)> {
    node.before_catch_up(receive(ws, n, true)).await
}

#[tokio::test]
async fn a_message_sent_through_one_node_reaches_a_session_on_the_other_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = b.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());

    for n in 1..=2u64 {
        a.http()
            .send(&a.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
        assert_eq!(
            receive_soon(&b, &mut ws, 1).await,
            vec![(n, format!("m{n}"))]
        );
    }
    assert_silent(&mut ws, 300).await;
    ws.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_session_on_one_node_takes_over_from_the_other() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut first, _) = a.connect(&bob).await;
    assert!(drain_until_synced(&mut first, true).await.is_empty());
    a.http()
        .send(&a.seal(&alice, bob.public_key(), "m1"))
        .await
        .unwrap();
    assert_eq!(receive(&mut first, 1, false).await, vec![(1, "m1".into())]);

    let (mut second, _) = b.connect_at(&bob, None, Codec::MsgPack).await;
    assert_eq!(close_code(&mut first).await, RawEnd::Close(4001));
    // The unacked message moves to the new session on the other node.
    assert_eq!(
        drain_until_synced(&mut second, true).await,
        vec![(1, "m1".to_string())]
    );
    a.http()
        .send(&a.seal(&alice, bob.public_key(), "m2"))
        .await
        .unwrap();
    assert_eq!(
        receive_soon(&b, &mut second, 1).await,
        vec![(2, "m2".into())]
    );
    second.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_wake_up_lost_while_pub_sub_reconnects_is_caught_up() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = b.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());

    // Drop every subscriber connection; the message may be published to nobody.
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .expect("client kill");
    a.http()
        .send(&a.seal(&alice, bob.public_key(), "m1"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), receive(&mut ws, 1, true))
        .await
        .expect("caught up after the reconnect, long before the periodic catch-up");
    assert_eq!(got, vec![(1, "m1".into())]);
    ws.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_takeover_during_a_pub_sub_outage_still_leaves_one_session() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let bob = Identity::generate();
    let (mut first, _) = a.connect(&bob).await;
    assert!(drain_until_synced(&mut first, true).await.is_empty());

    // Every subscriber connection drops; the takeover from b may reach nobody.
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .expect("client kill");
    let (mut second, _) = b.connect_at(&bob, None, Codec::MsgPack).await;

    // Whatever was lost, the nodes re-announce their sessions after reconnecting:
    // within a few seconds exactly one of the two sessions is closed as taken over.
    let (closed, mut survivor) = tokio::select! {
        code = close_code(&mut first) => (code, second),
        code = close_code(&mut second) => (code, first),
    };
    assert_eq!(closed, RawEnd::Close(4001));
    // The other one stays open (its ready/synced frames may still be unread).
    let ended = tokio::time::timeout(Duration::from_millis(2500), async {
        loop {
            if let Err(e) = survivor.next_frame().await {
                return e;
            }
        }
    })
    .await;
    assert!(
        ended.is_err(),
        "the surviving session stays open: {ended:?}"
    );
    survivor.close().await;
    a.stop().await;
    b.stop().await;
}

/// The inbox's last takeover number and who took it.
async fn last_number(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> (u64, String) {
    let (order, owner): (Option<u64>, Option<String>) = redis::cmd("HMGET")
        .arg(key)
        .arg("order")
        .arg("owner")
        .query_async(conn)
        .await
        .unwrap();
    (order.unwrap_or(0), owner.unwrap_or_default())
}

/// Polls until the inbox's takeover number is above `above`; the number.
async fn number_above(conn: &mut redis::aio::MultiplexedConnection, key: &str, above: u64) -> u64 {
    for _ in 0..100 {
        let (order, _) = last_number(conn, key).await;
        if order > above {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no takeover number above {above} was given out");
}

/// Takeover numbers rise above the last one given out whatever Redis's clock says (a
/// clock stepping back, a replica that lags), are kept an hour, and are given out by a
/// Redis at `maxmemory` too: there the older session still closes.
#[tokio::test]
async fn takeover_numbers_rise_above_the_last_given_and_a_full_redis_still_orders_sessions() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let bob = Identity::generate();
    let key = inbox_key(&bob, "takeover");
    let mut conn = redis.conn().await;
    // A number far past Redis's clock, as a clock stepped back would leave.
    let ahead: u64 = 9_000_000_000_000_000;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("order")
        .arg(ahead)
        .arg("owner")
        .arg("t 0 0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (mut first, _) = a.connect(&bob).await;
    assert!(drain_until_synced(&mut first, true).await.is_empty());
    assert_eq!(number_above(&mut conn, &key, ahead).await, ahead + 1);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "kept an hour: {ttl}");

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (second, _) = b.connect_at(&bob, None, Codec::MsgPack).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), close_code(&mut first)).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        closed.expect("the older session closes"),
        RawEnd::Close(4001)
    );
    let (order, owner) = last_number(&mut conn, &key).await;
    assert_eq!(order, ahead + 2);
    assert!(owner.starts_with("t ") && owner != "t 0 0", "{owner}");
    second.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_v1_message_sent_through_one_node_is_pushed_to_a_v1_socket_on_the_other() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Catch-up every 60 s: a push before it runs is the pub/sub wake-up.
    let (a, b) = two_nodes(&redis).await;
    let (alice, bob) = (
        crate::support::v1::V1User::new(),
        crate::support::v1::V1User::new(),
    );
    let url = format!("ws://{}/ws/{}", b.addr, bob.enc_pub());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    for n in 1..=3 {
        let body = alice.message(&bob, &format!("v1 m{n}"), 1_700_000_000.0 + n as f64);
        let res = reqwest::Client::new()
            .post(format!("{}/send", a.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let frame = b
            .before_catch_up(async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => return t.to_string(),
                        Some(Ok(_)) => continue,
                        other => panic!("v1 socket ended: {other:?}"),
                    }
                }
            })
            .await;
        let m: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(bob.open(&m), format!("v1 m{n}"));
    }
    ws.close(None).await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_ephemeral_envelope_reaches_a_session_on_the_other_node() {
    use whispr::protocol::ServerFrame;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = two_nodes(&redis).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let typing = |n: u64| {
        whispr::protocol::Envelope::seal(
            &alice,
            bob.public_key(),
            a.clock.now_ms() + n,
            true,
            format!("typing {n}").into_bytes(),
        )
    };
    // Nobody anywhere: offline.
    assert_eq!(a.http().send(&typing(0)).await.unwrap().online, Some(false));

    // A v1 socket on b listens for its inbox's wake-ups, not for ephemeral envelopes:
    // one addressed to that (derived) inbox is not "online".
    let carol = crate::support::v1::V1User::new();
    let url = format!("ws://{}/ws/{}", b.addr, carol.enc_pub());
    let (mut v1_socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let carol_inbox = whispr::protocol::whispr_v1::inbox_key(
        &whispr::protocol::PublicKey::from_hex(&carol.enc_pub(), whispr::protocol::KeyField::Key)
            .unwrap(),
    );
    // Until b has subscribed to the v1 inbox's wake-ups.
    let wakeups = whispr::testing::notify::channel(&carol_inbox);
    crate::support::wait_subscribers(&redis.url, &wakeups, 1).await;
    let probe = whispr::protocol::Envelope::seal(
        &alice,
        carol_inbox,
        a.clock.now_ms(),
        true,
        b"probe".to_vec(),
    );
    assert_eq!(a.http().send(&probe).await.unwrap().online, Some(false));
    v1_socket.close(None).await.unwrap();

    let (mut ws, _) = b.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    // The session is on b; sent through a, it is online and arrives, never stored.
    let env = typing(1);
    let mut answer = a.http().send(&env).await.unwrap();
    // b subscribes to bob's channel right after the session registers: until then a
    // node cannot know, so the first answer may still say offline.
    for n in 2..50 {
        if answer.online == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = a.http().send(&typing(n)).await.unwrap();
    }
    assert_eq!(answer.online, Some(true));
    let frame = b
        .before_catch_up(async {
            loop {
                match ws.next_frame().await.expect("a frame") {
                    ServerFrame::Deliver {
                        seq: None,
                        envelope,
                        ..
                    } => return envelope,
                    ServerFrame::Deliver { .. } => panic!("an ephemeral envelope was stored"),
                    _ => continue,
                }
            }
        })
        .await;
    assert!(frame.ephemeral);
    assert!(String::from_utf8(frame.body.clone())
        .unwrap()
        .starts_with("typing"));
    ws.close().await;
    let (mut ws, _) = b.connect(&bob).await;
    assert!(
        drain_until_synced(&mut ws, true).await.is_empty(),
        "never queued"
    );
    ws.close().await;
    a.stop().await;
    b.stop().await;
}
