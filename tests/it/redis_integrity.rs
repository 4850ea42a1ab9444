//! Nothing accepted is lost silently on Redis: a Redis rolled back to an older snapshot,
//! flushed, evicting, full or stopped is detected, reported to readers as a gap, and
//! survived. Real `redis-server` processes on free ports.

use std::collections::BTreeSet;
use std::time::Duration;

use whispr::client::{ClientError, WsClient};
use whispr::protocol::{Cursor, ErrorCode, GapReason, Identity, ServerFrame};
use whispr::testing::store::conformance::envelope;
use whispr::testing::store::{MessageStore, RedisOptions, StoreError};

use crate::support::{drain_until_synced, scratch_dir, TestRelay};
use crate::support::{free_port, inbox_key, store_with, RedisServer};

async fn send(
    relay: &TestRelay,
    from: &Identity,
    to: &Identity,
    body: &str,
) -> Result<(), (ErrorCode, String)> {
    match relay
        .http()
        .send(&relay.seal(from, to.public_key(), body))
        .await
    {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { code, detail, .. }) => Err((code, detail)),
        Err(other) => panic!("expected an answer from the relay, got {other}"),
    }
}

async fn status(relay: &TestRelay, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}{path}", relay.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

/// Waits (10 s guard) until `/readyz` is 200 again after Redis came back.
async fn wait_ready(relay: &TestRelay) {
    wait_ready_within(relay, 100).await
}

/// A reader's session and the cursor it keeps, reconnecting as a client must when the
/// relay closes with 4007 (the inbox moved to a new epoch).
struct Reader<'a> {
    relay: &'a TestRelay,
    who: &'a Identity,
    ws: WsClient,
    cursor: Cursor,
}

impl<'a> Reader<'a> {
    async fn connect(relay: &'a TestRelay, who: &'a Identity) -> Reader<'a> {
        let (mut ws, ready) = relay.connect(who).await;
        assert!(drain_until_synced(&mut ws, true).await.is_empty());
        let cursor = Cursor {
            epoch: ready.epoch,
            seq: 0,
        };
        Reader {
            relay,
            who,
            ws,
            cursor,
        }
    }

    /// Receives until the bodies in `want` have all arrived (acking each), returning
    /// every body delivered, every gap reported and how many times it had to reconnect.
    async fn collect(&mut self, want: &BTreeSet<String>) -> (Vec<String>, Vec<GapReason>, usize) {
        let (mut bodies, mut gaps, mut reconnects) = (Vec::new(), Vec::new(), 0);
        while !want.iter().all(|w| bodies.contains(w)) {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next_frame())
                .await
                .unwrap_or_else(|_| {
                    panic!("still waiting for {want:?}; got {bodies:?}, gaps {gaps:?}")
                });
            match frame {
                Ok(ServerFrame::Deliver {
                    seq: Some(seq),
                    envelope,
                    ..
                }) => {
                    bodies.push(String::from_utf8(envelope.body.clone()).unwrap());
                    self.cursor.seq = seq;
                    self.ws.ack(seq).await.unwrap();
                }
                Ok(ServerFrame::Gap { epoch, seq, reason }) => {
                    gaps.push(reason);
                    self.cursor = Cursor { epoch, seq };
                }
                Ok(ServerFrame::Synced { .. }) => {}
                Ok(other) => panic!("unexpected frame: {other:?}"),
                Err(ClientError::Closed { code: 4007, .. }) => {
                    reconnects += 1;
                    let (ws, _) = self
                        .relay
                        .connect_at(self.who, Some(self.cursor), whispr::protocol::Codec::Json)
                        .await;
                    self.ws = ws;
                }
                Err(e) => panic!("session failed: {e}"),
            }
        }
        (bodies, gaps, reconnects)
    }
}

fn bodies(prefix: &str, range: std::ops::RangeInclusive<u32>) -> BTreeSet<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

/// The deterministic form of the `appendfsync everysec` loss: Redis comes back from an
/// older snapshot with `head 5, acked 5` while a live session and a polling reader are
/// already past seq 10. Messages accepted afterwards must reach both, under a new epoch
/// with a gap, instead of being skipped (their seqs at or below what was delivered) and
/// then deleted by the next cumulative ack.
#[tokio::test]
async fn a_redis_restored_from_an_older_snapshot_is_a_gap_never_a_silent_loss() {
    let dir = scratch_dir("redis-rollback");
    let port = free_port();
    let Some(redis) = RedisServer::start_in(port, &dir, &[]).await else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("ws_catch_up_seconds = 1")).await;
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut bob_reader = Reader::connect(&relay, &bob).await;
    let http = relay.http();
    let mut cursor: Option<Cursor> = None;
    let poll = |at: Option<Cursor>| {
        let (http, carol) = (&http, &carol);
        async move { http.poll(carol, at, None).await.expect("poll") }
    };

    for n in 1..=5 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    bob_reader.collect(&bodies("m", 1..=5)).await;
    let page = poll(cursor).await;
    assert_eq!(page.messages.len(), 5);
    cursor = Some(page.next);
    // Carol acknowledges through 5 by polling after it, so both inboxes stand at
    // `head 5, acked 5` when the snapshot is taken.
    let page = poll(cursor).await;
    assert!(page.messages.is_empty());
    let _: () = redis::cmd("SAVE")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();

    for n in 6..=10 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    bob_reader.collect(&bodies("m", 6..=10)).await;
    let page = poll(cursor).await;
    assert_eq!(page.messages.len(), 5);
    cursor = Some(page.next);
    assert_eq!(cursor.unwrap().seq, 10);

    // kill -9, and back from the older snapshot.
    drop(redis);
    let redis = RedisServer::start_in(port, &dir, &[]).await.unwrap();
    wait_ready(&relay).await;

    for n in 11..=15 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    let (got, gaps, reconnects) = bob_reader.collect(&bodies("m", 11..=15)).await;
    assert_eq!(
        gaps,
        vec![GapReason::EpochChanged],
        "the live session is told once"
    );
    assert_eq!(
        reconnects, 1,
        "the session ended with 4007 and the client came back"
    );
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        got.len(),
        "no duplicates: {got:?}"
    );

    let page = poll(cursor).await;
    assert!(page.gap, "the poller is told");
    assert_eq!(page.gap_reason, Some(GapReason::EpochChanged));
    assert_ne!(page.epoch, cursor.unwrap().epoch);
    let polled: BTreeSet<String> = page
        .messages
        .iter()
        .map(|m| String::from_utf8(m.envelope.body.clone()).unwrap())
        .collect();
    assert_eq!(
        polled,
        bodies("c", 11..=15),
        "every message accepted after the rollback"
    );

    // A fresh session (no cursor) stands at the last acknowledgement: it may see again
    // what the closing session's last acks did not reach, never anything else.
    bob_reader.ws.close().await;
    let (mut again, ready) = relay
        .connect_at(&bob, None, whispr::protocol::Codec::Json)
        .await;
    assert_eq!(
        ready.epoch, bob_reader.cursor.epoch,
        "the epoch the reconnected session took is the inbox's"
    );
    let left = drain_until_synced(&mut again, true).await;
    assert!(left.iter().all(|(_, b)| got.contains(b)), "{left:?}");
    assert!(
        relay
            .metric("whispr_store_history_lost_total{reason=\"redis_restarted\"}")
            .await
            >= 2,
        "both inboxes are counted"
    );
    again.close().await;
    relay.stop().await;
    drop(redis);
}

#[tokio::test]
async fn flushall_under_traffic_is_a_gap_and_later_mail_arrives() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("")).await;
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut bob_reader = Reader::connect(&relay, &bob).await;
    for n in 1..=5 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    bob_reader.collect(&bodies("m", 1..=5)).await;
    let page = relay.http().poll(&carol, None, None).await.unwrap();
    let cursor = page.next;

    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    for n in 6..=8 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    let (_, gaps, _) = bob_reader.collect(&bodies("m", 6..=8)).await;
    assert_eq!(gaps, vec![GapReason::EpochChanged]);
    let page = relay.http().poll(&carol, Some(cursor), None).await.unwrap();
    assert_eq!(page.gap_reason, Some(GapReason::EpochChanged));
    assert_eq!(page.messages.len(), 3);
    bob_reader.ws.close().await;
    relay.stop().await;
}

/// Starts a relay on `config` and expects it to refuse; the error text.
async fn refused_start(config: whispr::config::Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    whispr::server::Server::new(config)
        .run(listener, std::future::pending())
        .await
        .expect_err("the relay must refuse to start")
        .to_string()
}

#[tokio::test]
async fn evicting_policies_are_refused_unless_allowed_and_then_evictions_are_gaps() {
    for policy in ["allkeys-lru", "volatile-lru"] {
        let Some(redis) =
            RedisServer::start_with(free_port(), &["--maxmemory-policy", policy]).await
        else {
            return;
        };
        let text = refused_start(redis.config("")).await;
        assert!(
            text.contains(policy) && text.contains("noeviction"),
            "{text}"
        );
        assert!(text.contains("redis_allow_eviction"), "{text}");
        // store = auto does not fall back to memory either: Redis answered.
        let auto =
            crate::support::config_with(&format!("store = \"auto\"\nredis_url = {:?}", redis.url));
        assert!(refused_start(auto).await.contains(policy));
    }

    // The opt-out: the relay runs, and every eviction it notices is a gap.
    let Some(redis) =
        RedisServer::start_with(free_port(), &["--maxmemory-policy", "allkeys-lru"]).await
    else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("redis_allow_eviction = true")).await;
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    for n in 1..=3 {
        send(&relay, &alice, &bob, &format!("m{n}")).await.unwrap();
        send(&relay, &alice, &carol, &format!("c{n}"))
            .await
            .unwrap();
    }
    let page = relay.http().poll(&bob, None, Some(1)).await.unwrap();
    let bob_cursor = page.next;
    let page = relay.http().poll(&carol, None, Some(1)).await.unwrap();
    let carol_cursor = page.next;
    // What an eviction does: whole keys disappear. Bob loses his metadata, Carol her
    // queue.
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(inbox_key(&bob, "meta"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(inbox_key(&carol, "queue"))
        .query_async(&mut conn)
        .await
        .unwrap();

    let page = relay
        .http()
        .poll(&bob, Some(bob_cursor), None)
        .await
        .unwrap();
    assert_eq!(page.gap_reason, Some(GapReason::EpochChanged));
    assert_eq!(
        page.messages.len(),
        3,
        "whatever is left is handed out again"
    );
    // Carol's messages went with her queue: nothing to hand out, and the gap says so.
    let page = relay
        .http()
        .poll(&carol, Some(carol_cursor), None)
        .await
        .unwrap();
    assert_eq!(page.gap_reason, Some(GapReason::EpochChanged));
    assert_eq!(page.messages.len(), 0);
    // New mail after the eviction never reuses a seq still queued.
    send(&relay, &alice, &bob, "m4").await.unwrap();
    let page = relay.http().poll(&bob, None, None).await.unwrap();
    let seqs: BTreeSet<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), page.messages.len());
    assert_eq!(
        relay
            .metric("whispr_store_history_lost_total{reason=\"metadata_missing\"}")
            .await,
        1
    );
    assert_eq!(
        relay
            .metric("whispr_store_history_lost_total{reason=\"evicted\"}")
            .await,
        1
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_full_redis_refuses_with_507_and_recovers_once_recipients_read() {
    let Some(redis) = RedisServer::start_with(
        free_port(),
        &["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"],
    )
    .await
    else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let big = "x".repeat(48 * 1024);
    let mut stored = 0;
    let detail = loop {
        match send(&relay, &alice, &bob, &format!("{stored}{big}")).await {
            Ok(()) => stored += 1,
            Err((code, detail)) => {
                assert_eq!(code, ErrorCode::StoreFull, "{detail}");
                break detail;
            }
        }
        assert!(stored < 500, "Redis never filled up");
    };
    assert!(
        detail.contains("Redis is full") && !detail.contains("script"),
        "{detail}"
    );
    assert!(stored > 5);
    // A WebSocket sender is told the same.
    let (mut sender, _) = relay.connect(&alice).await;
    drain_until_synced(&mut sender, true).await;
    sender
        .send(&relay.seal(&alice, bob.public_key(), &big), Some(7))
        .await
        .unwrap();
    match crate::support::next(&mut sender).await {
        ServerFrame::Error {
            code, reference, ..
        } => {
            assert_eq!((code, reference), (ErrorCode::StoreFull, Some(7)));
        }
        other => panic!("expected store_full, got {other:?}"),
    }

    // Bob reads: his acks run at maxmemory and free the space.
    let (mut ws, _) = relay.connect(&bob).await;
    assert_eq!(drain_until_synced(&mut ws, true).await.len(), stored);
    let mut sent_again = false;
    for _ in 0..50 {
        if send(&relay, &alice, &bob, "after the reads").await.is_ok() {
            sent_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sent_again,
        "sends succeed again without restarting anything"
    );
    assert!(relay.metric("whispr_store_full_total").await >= 2);
    ws.close().await;
    sender.close().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_stopped_redis_is_a_quick_503_and_a_late_insert_stores_nothing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("redis_response_timeout_ms = 500")).await;
    let store = store_with(
        &redis.url,
        RedisOptions {
            response_timeout: Duration::from_millis(300),
            ..RedisOptions::default()
        },
    )
    .await;
    // A second store, with a longer timeout, for the queue behind a stuck call.
    let slow = store_with(
        &redis.url,
        RedisOptions {
            response_timeout: Duration::from_millis(1000),
            calls_in_flight: 1,
            ..RedisOptions::default()
        },
    )
    .await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    assert_eq!(status(&relay, "/readyz").await, 200);

    redis.signal("STOP");
    // Readiness answers (503) well before a load balancer's probe times out.
    let readyz = reqwest::Client::new()
        .get(format!("{}/readyz", relay.base))
        .timeout(Duration::from_millis(1500))
        .send()
        .await
        .expect("readyz answers while Redis is stopped");
    assert_eq!(readyz.status().as_u16(), 503);
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        send(&relay, &alice, &bob, "while stopped"),
    )
    .await
    .expect("a send is answered within the response timeout");
    assert!(
        matches!(refused, Err((ErrorCode::Unavailable, _))),
        "{refused:?}"
    );
    // The store's own insert, queued in the stopped Redis's socket, times out too...
    let now = 1_800_000_000_000;
    let late = store
        .insert(&envelope(&alice, bob.public_key(), 1, now), now)
        .await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    // With one call out at a time, a read queued behind a stuck one is answered within
    // the response timeout too: not after the stuck call's timeout and then its own.
    let inbox: whispr::protocol::InboxId = bob.public_key().into();
    let stuck = tokio::spawn({
        let slow = slow.clone();
        async move { slow.fetch(&inbox, None, 10, now).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let queued = slow.fetch(&inbox, None, 10, now).await;
    assert!(
        matches!(queued, Err(StoreError::Unavailable(_))),
        "{queued:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1600),
        "queued behind the stuck call, answered after {:?}",
        started.elapsed()
    );
    assert!(stuck.await.unwrap().is_err());

    redis.signal("CONT");
    wait_ready(&relay).await;
    // ...and Redis, running it late, stored nothing.
    let batch = store
        .fetch(&bob.public_key().into(), None, 10, now)
        .await
        .unwrap();
    assert!(batch.messages.is_empty(), "{:?}", batch.messages);
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    send(&relay, &alice, &bob, "after").await.unwrap();
    ws.close().await;
    relay.stop().await;
}

#[tokio::test]
async fn store_selection_cannot_surprise() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // redis_url with the default store = memory stops, naming what to add.
    let err =
        whispr::config::Config::from_toml(&format!("redis_url = {:?}", redis.url)).unwrap_err();
    assert!(
        err.to_string().contains("redis_url") && err.to_string().contains("store = \"redis\""),
        "{err}"
    );

    // /v1/info names the store in use, never "auto".
    let auto =
        crate::support::config_with(&format!("store = \"auto\"\nredis_url = {:?}", redis.url));
    let relay = TestRelay::start_with(auto).await;
    let info: serde_json::Value = reqwest::get(format!("{}/v1/info", relay.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["store"], "redis");
    relay.stop().await;
    let relay = TestRelay::start().await;
    let info: serde_json::Value = reqwest::get(format!("{}/v1/info", relay.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["store"], "memory");
    relay.stop().await;

    // store = auto with a wrong password stops: Redis answered, so it was meant.
    let Some(locked) = RedisServer::start_with(free_port(), &["--requirepass", "right"]).await
    else {
        return;
    };
    let wrong = format!("redis://:wrong@127.0.0.1:{}", locked.port);
    let auto = crate::support::config_with(&format!("store = \"auto\"\nredis_url = {wrong:?}"));
    let text = refused_start(auto).await;
    assert!(
        text.contains("cannot use Redis") && !text.contains("wrong"),
        "{text}"
    );
    // A refused SELECT too.
    let db = format!("{}/99", redis.url);
    let auto = crate::support::config_with(&format!("store = \"auto\"\nredis_url = {db:?}"));
    assert!(refused_start(auto).await.contains("cannot use Redis"));
}

/// The policy is checked again while the relay runs: an operator who switches Redis to an
/// evicting policy gets writes refused (and the node out of its load balancer) until it is
/// switched back, never silent evictions.
#[tokio::test]
async fn an_evicting_policy_set_while_running_refuses_writes_until_it_is_undone() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    send(&relay, &alice, &bob, "before").await.unwrap();
    let mut conn = redis.conn().await;
    let set = |policy: &'static str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .clone()
    };
    let _: () = set("allkeys-lru").query_async(&mut conn).await.unwrap();
    // The next check (every 10 s) finds it; 20 s guard.
    let mut refused = None;
    for _ in 0..200 {
        if let Err(e) = send(&relay, &alice, &bob, "during").await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, detail) = refused.expect("writes are refused once the policy is seen");
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(
        detail.contains("allkeys-lru") && detail.contains("noeviction"),
        "{detail}"
    );
    assert_eq!(status(&relay, "/readyz").await, 503);
    let _: () = set("noeviction").query_async(&mut conn).await.unwrap();
    wait_ready_within(&relay, 200).await;
    send(&relay, &alice, &bob, "after").await.unwrap();
    relay.stop().await;
}

/// Waits until `/readyz` is 200, polling every 100 ms at most `tries` times.
async fn wait_ready_within(relay: &TestRelay, tries: usize) {
    for _ in 0..tries {
        if status(relay, "/readyz").await == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the relay did not become ready again");
}
