//! Relays on Redis when Redis misbehaves or is shared: rate limits that hold across
//! nodes, and Redis killed and restarted under traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use whispr::client::ClientError;
use whispr::protocol::{ErrorCode, Identity};

use crate::redis_store::{free_port, RedisServer};
use crate::support::{config_with, drain_until_synced, receive, scratch_dir, TestRelay};

/// Sends `body` from `from` to `to` through `relay`; the refusal's code and status.
async fn send(
    relay: &TestRelay,
    from: &Identity,
    to: &Identity,
    body: &str,
) -> Result<(), (ErrorCode, Option<u16>)> {
    match relay
        .http()
        .send(&relay.seal(from, to.public_key(), body))
        .await
    {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { code, status, .. }) => Err((code, status)),
        Err(other) => panic!("expected an answer from the relay, got {other}"),
    }
}

#[tokio::test]
async fn rate_limits_are_shared_by_every_node_on_one_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // One message per second per sender with a burst of three; per-IP roomy.
    let config = config_with(&format!(
        "store = \"redis\"\nredis_url = {:?}\nmax_messages_per_second = 1\nburst_messages = 3\n\
         max_messages_per_second_per_ip = 1000\nburst_messages_per_ip = 1000",
        redis.url
    ));
    let a = TestRelay::start_with(config.clone()).await;
    let b = TestRelay::start_clocked(config, a.clock.clone()).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());

    send(&a, &alice, &bob, "1").await.unwrap();
    send(&b, &alice, &bob, "2").await.unwrap();
    send(&a, &alice, &bob, "3").await.unwrap();
    // Per-node buckets would let this through on b (its own bucket holds one token).
    assert_eq!(
        send(&b, &alice, &bob, "4").await,
        Err((ErrorCode::RateLimited, Some(429)))
    );
    // Another sender has its own bucket.
    let carol = Identity::generate();
    send(&b, &carol, &bob, "5").await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn per_ip_limits_are_shared_too() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let config = config_with(&format!(
        "store = \"redis\"\nredis_url = {:?}\nmax_messages_per_second_per_ip = 1\n\
         burst_messages_per_ip = 2",
        redis.url
    ));
    let a = TestRelay::start_with(config.clone()).await;
    let b = TestRelay::start_clocked(config, a.clock.clone()).await;
    let bob = Identity::generate();
    send(&a, &Identity::generate(), &bob, "1").await.unwrap();
    send(&b, &Identity::generate(), &bob, "2").await.unwrap();
    assert_eq!(
        send(&a, &Identity::generate(), &bob, "3").await,
        Err((ErrorCode::RateLimited, Some(429)))
    );
    a.stop().await;
    b.stop().await;
}

/// `GET /readyz`'s status.
async fn readyz(relay: &TestRelay) -> u16 {
    reqwest::get(format!("{}/readyz", relay.base))
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

#[tokio::test]
async fn redis_killed_and_restarted_under_traffic_loses_no_accepted_message() {
    let dir = scratch_dir("redis-aof");
    let port = free_port();
    // Every write is on disk before Redis answers: an accepted message survives a kill.
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let Some(redis) = RedisServer::start_in(port, &dir, &durable).await else {
        return;
    };
    let config = config_with(&format!(
        "store = \"redis\"\nredis_url = {:?}\nws_catch_up_seconds = 1\n\
         max_messages_per_second = 1000\nburst_messages = 1000",
        redis.url
    ));
    let relay = TestRelay::start_with(config).await;
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    assert_eq!(readyz(&relay).await, 200);

    // Traffic before, during and after the outage; every answer is either "accepted"
    // or a clear 503.
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    let mut redis = Some(redis);
    for n in 0..60u32 {
        if n == 20 {
            // Carol is offline: her message waits in Redis through the outage.
            send(&relay, &alice, &carol, "for carol").await.unwrap();
            drop(redis.take());
            assert_eq!(readyz(&relay).await, 503, "unready while Redis is away");
        }
        if n == 40 {
            redis = RedisServer::start_in(port, &dir, &durable).await;
            let mut ready = false;
            for _ in 0..100 {
                if readyz(&relay).await == 200 {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ready, "ready again once Redis is back");
        }
        match send(&relay, &alice, &bob, &format!("m{n}")).await {
            Ok(()) => {
                accepted.insert(format!("m{n}"));
            }
            Err((code, status)) => {
                assert_eq!((code, status), (ErrorCode::Unavailable, Some(503)));
                assert!((20..40).contains(&n), "m{n} refused while Redis was up");
                refused += 1;
            }
        }
    }
    assert!(refused >= 15, "sends were refused during the outage");
    assert!(accepted.len() >= 40);

    // Bob's session stayed up through the outage and gets every accepted message once.
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        receive(&mut ws, accepted.len(), true),
    )
    .await
    .expect("every accepted message arrives");
    let bodies: Vec<String> = got.into_iter().map(|(_, body)| body).collect();
    let unique: BTreeSet<String> = bodies.iter().cloned().collect();
    assert_eq!(unique.len(), bodies.len(), "no duplicates: {bodies:?}");
    assert_eq!(unique, accepted);

    // Carol's message, accepted before Redis was killed, is still there.
    let (mut carol_ws, _) = relay.connect(&carol).await;
    let carol_got = drain_until_synced(&mut carol_ws, true).await;
    assert_eq!(
        carol_got.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        vec!["for carol".to_owned()]
    );
    ws.close().await;
    carol_ws.close().await;
    relay.stop().await;
}
