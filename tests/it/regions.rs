//! Two "regions" on loopback, as README's "Past one region" designs them: each region is
//! a relay group (two nodes) on its own Redis, and they share nothing. An inbox lives in
//! its owner's home region; a sender homed elsewhere hands the signed envelope to the
//! recipient's home relay, so no relay forwards to another. Losing a region stops only
//! the inboxes homed there, which refuse rather than accept; restoring it from its AOF
//! brings back everything it accepted, and a retried envelope is stored once.

use whispr::client::{ClientError, WsClient};
use whispr::protocol::{Envelope, ErrorCode, Identity};

use crate::support::{
    assert_silent, drain_until_synced, free_port, receive, scratch_dir, RedisServer, TestRelay,
};

/// Every write on disk before Redis answers: what a region accepted survives its loss.
const DURABLE: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

/// One region: two relay nodes on `redis`. The periodic catch-up is slow, so a delivery
/// before it shows the push path inside the region.
async fn region(redis: &RedisServer) -> (TestRelay, TestRelay) {
    TestRelay::pair(redis.config("ws_catch_up_seconds = 60")).await
}

/// `n` deliveries to a session on `node`, acked, before that node's first periodic
/// catch-up: pushed by a wake-up inside the region.
async fn pushed(node: &TestRelay, ws: &mut WsClient, n: usize) -> Vec<(u64, String)> {
    node.before_catch_up(receive(ws, n, true)).await
}

/// Hands `envelope` to `relay`: `Ok(duplicate)`, or the refusal's code and status.
async fn hand(relay: &TestRelay, envelope: &Envelope) -> Result<bool, (ErrorCode, Option<u16>)> {
    match relay.http().send(envelope).await {
        Ok(result) => Ok(result.duplicate),
        Err(ClientError::Refused { code, status, .. }) => Err((code, status)),
        Err(other) => panic!("expected an answer from the relay, got {other}"),
    }
}

#[tokio::test]
async fn two_regions_share_nothing_and_losing_one_loses_nothing_it_accepted() {
    let (dir_a, dir_b) = (scratch_dir("region-a"), scratch_dir("region-b"));
    let port_b = free_port();
    let Some(redis_a) = RedisServer::start_in(free_port(), &dir_a, &DURABLE).await else {
        return;
    };
    let Some(redis_b) = RedisServer::start_in(port_b, &dir_b, &DURABLE).await else {
        return;
    };
    let (a1, a2) = region(&redis_a).await;
    let (b1, b2) = region(&redis_b).await;
    // Alice and Carol are homed in region A, Bob in region B.
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let (mut alice_ws, _) = a1.connect(&alice).await;
    assert!(drain_until_synced(&mut alice_ws, true).await.is_empty());
    let (mut bob_ws, _) = b2.connect(&bob).await;
    assert!(drain_until_synced(&mut bob_ws, true).await.is_empty());

    // Across regions, the sender's client hands the envelope to the recipient's home
    // region (any node of it); the recipient's session there is pushed at once.
    assert_eq!(
        hand(&b1, &b1.seal(&alice, bob.public_key(), "a to b")).await,
        Ok(false)
    );
    assert_eq!(
        pushed(&b2, &mut bob_ws, 1).await,
        vec![(1, "a to b".to_owned())]
    );
    assert_eq!(
        hand(&a2, &a2.seal(&bob, alice.public_key(), "b to a")).await,
        Ok(false)
    );
    assert_eq!(
        pushed(&a1, &mut alice_ws, 1).await,
        vec![(1, "b to a".to_owned())]
    );

    // Regions share nothing: an envelope handed to a region that is not the recipient's
    // home waits there for a session that never signs in there. Bob's home never sees it.
    assert_eq!(
        hand(&a1, &a1.seal(&carol, bob.public_key(), "misrouted")).await,
        Ok(false)
    );
    assert_silent(&mut bob_ws, 300).await;

    // Bob goes offline; a message waits for him in his home region's Redis.
    bob_ws.close().await;
    assert_eq!(
        hand(&b1, &b1.seal(&alice, bob.public_key(), "queued")).await,
        Ok(false)
    );

    // Region B is lost (its Redis killed): both its nodes refuse with 503 rather than
    // accept what they cannot store, and say so on /readyz.
    drop(redis_b);
    let during = b1.seal(&alice, bob.public_key(), "sent during the outage");
    for node in [&b1, &b2] {
        assert_eq!(
            hand(node, &during).await,
            Err((ErrorCode::Unavailable, Some(503)))
        );
        assert_eq!(node.readyz().await, 503);
    }
    // Region A is untouched: its sessions, sends and readiness.
    assert_eq!(a2.readyz().await, 200);
    assert_eq!(
        hand(&a2, &a2.seal(&carol, alice.public_key(), "still up")).await,
        Ok(false)
    );
    assert_eq!(
        pushed(&a1, &mut alice_ws, 1).await,
        vec![(2, "still up".to_owned())]
    );

    // Region B comes back from its AOF. The sender's client retries the envelope it kept:
    // stored once (a second retry is a duplicate), and Bob gets everything region B ever
    // accepted for him, once each, with no gap: nothing it accepted was lost.
    let redis_b = RedisServer::start_in(port_b, &dir_b, &DURABLE)
        .await
        .expect("redis-server restarts");
    b1.wait_ready().await;
    assert_eq!(hand(&b1, &during).await, Ok(false));
    assert_eq!(hand(&b2, &during).await, Ok(true));
    let (mut bob_ws, _) = b1.connect(&bob).await;
    assert_eq!(
        drain_until_synced(&mut bob_ws, true).await,
        vec![
            (2, "queued".to_owned()),
            (3, "sent during the outage".to_owned())
        ]
    );

    bob_ws.close().await;
    alice_ws.close().await;
    for node in [a1, a2, b1, b2] {
        node.stop().await;
    }
    drop((redis_a, redis_b));
}
