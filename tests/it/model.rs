//! A property test of the delivery promises: random sequences of send / receive / ack /
//! disconnect / reconnect / expire against a real relay over real sockets, checked
//! against a simple model. Nothing accepted is lost unless it expired (and then a gap
//! was reported), nothing is delivered twice in a session, nothing acked comes back,
//! and everything arrives in the order it was accepted.

use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use whispr::client::WsClient;
use whispr::protocol::{Codec, Cursor, Identity, MessageId, ServerFrame};

use crate::support::{config_with, TestRelay};

#[derive(Debug, Clone)]
enum Op {
    /// Alice sends this many messages to bob over HTTP.
    Send(u8),
    /// Bob acks everything he has received in this session.
    Ack,
    /// Bob's connection drops without a close handshake.
    Drop,
    /// Bob reconnects, with or without his cursor.
    Reconnect { with_cursor: bool },
    /// Time passes beyond the TTL.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Send),
        3 => Just(Op::Ack),
        1 => Just(Op::Drop),
        2 => any::<bool>().prop_map(|with_cursor| Op::Reconnect { with_cursor }),
        1 => Just(Op::Expire),
    ]
}

/// What bob has observed.
#[derive(Default)]
struct Observed {
    /// id -> seq, first receipt.
    received: HashMap<MessageId, u64>,
    /// Ids in order of first receipt.
    order: Vec<MessageId>,
    acked_through: u64,
    gap_after_expiry: bool,
}

struct Bob {
    id: Identity,
    ws: Option<WsClient>,
    epoch: u64,
    /// Highest seq delivered in the current session.
    session_high: u64,
}

const TTL_MS: u64 = 60_000;

impl Bob {
    async fn connect(&mut self, relay: &TestRelay, cursor: Option<Cursor>) {
        let (ws, ready) = WsClient::connect(&relay.base, &self.id, cursor, Codec::Json)
            .await
            .expect("connect");
        self.ws = Some(ws);
        self.epoch = ready.epoch;
        self.session_high = 0;
    }

    /// Reads frames until `quiet_ms` pass without one (or until `synced` if asked).
    /// In the final drain (`until_synced`), every delivery is acked at once so the
    /// window keeps moving.
    async fn settle(&mut self, seen: &mut Observed, until_synced: bool, expired_pending: bool) {
        let Some(ws) = self.ws.as_mut() else { return };
        loop {
            let wait = if until_synced { 5_000 } else { 15 };
            let frame =
                match tokio::time::timeout(Duration::from_millis(wait), ws.next_frame()).await {
                    Err(_) => {
                        assert!(!until_synced, "synced did not arrive");
                        return;
                    }
                    Ok(Err(e)) => panic!("session failed: {e}"),
                    Ok(Ok(f)) => f,
                };
            match frame {
                ServerFrame::Deliver {
                    seq: Some(seq), id, ..
                } => {
                    assert!(
                        seq > self.session_high,
                        "seq {seq} after {} in one session",
                        self.session_high
                    );
                    assert!(
                        seq > seen.acked_through,
                        "seq {seq} delivered after ack through {}",
                        seen.acked_through
                    );
                    self.session_high = seq;
                    if until_synced {
                        ws.ack(seq).await.expect("ack");
                        seen.acked_through = seq;
                    }
                    if let Some(prev) = seen.received.insert(id, seq) {
                        assert_eq!(prev, seq, "an id keeps its seq");
                    } else {
                        seen.order.push(id);
                    }
                }
                ServerFrame::Gap { .. } => {
                    assert!(expired_pending, "a gap without an expiry");
                    seen.gap_after_expiry = true;
                }
                ServerFrame::Synced { .. } if until_synced => return,
                ServerFrame::Synced { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let relay = TestRelay::start_with(config_with(&format!(
        "message_ttl_seconds = {}\nws_max_inflight = 4",
        TTL_MS / 1000
    )))
    .await;
    let alice = Identity::generate();
    let mut bob = Bob {
        id: Identity::generate(),
        ws: None,
        epoch: 0,
        session_high: 0,
    };
    let http = relay.http();
    let mut seen = Observed::default();
    let mut accepted: Vec<MessageId> = Vec::new();
    // Ids that were queued and unacked when time jumped past the TTL.
    let mut may_expire: HashSet<MessageId> = HashSet::new();
    let mut n = 0u32;
    bob.connect(&relay, None).await;
    for op in ops {
        match op {
            Op::Send(k) => {
                for _ in 0..k {
                    let env = relay.seal(&alice, bob.id.public_key(), &format!("m{n}"));
                    n += 1;
                    let res = http.send(&env).await.expect("accepted");
                    assert!(!res.duplicate);
                    accepted.push(res.id);
                }
            }
            Op::Ack => {
                if let Some(ws) = bob.ws.as_mut() {
                    if bob.session_high > 0 {
                        ws.ack(bob.session_high).await.expect("ack");
                        seen.acked_through = seen.acked_through.max(bob.session_high);
                    }
                }
            }
            Op::Drop => bob.ws = None,
            Op::Reconnect { with_cursor } => {
                let cursor = with_cursor.then_some(Cursor {
                    epoch: bob.epoch,
                    seq: seen.acked_through,
                });
                bob.ws = None;
                bob.connect(&relay, cursor).await;
            }
            Op::Expire => {
                // Acks in flight land before time moves.
                bob.settle(&mut seen, false, !may_expire.is_empty()).await;
                for id in &accepted {
                    if seen
                        .received
                        .get(id)
                        .is_none_or(|&s| s > seen.acked_through)
                    {
                        may_expire.insert(*id);
                    }
                }
                relay.clock.advance_ms(TTL_MS + 1);
            }
        }
        bob.settle(&mut seen, false, !may_expire.is_empty()).await;
    }
    // Final: a fresh session with the cursor drains everything that is left.
    bob.ws = None;
    let cursor = Cursor {
        epoch: bob.epoch,
        seq: seen.acked_through,
    };
    bob.connect(&relay, Some(cursor)).await;
    bob.settle(&mut seen, true, !may_expire.is_empty()).await;

    let lost: Vec<&MessageId> = accepted
        .iter()
        .filter(|id| !seen.received.contains_key(id))
        .collect();
    for id in &lost {
        assert!(
            may_expire.contains(id),
            "an accepted message was lost without expiring"
        );
    }
    if !lost.is_empty() {
        assert!(
            seen.gap_after_expiry,
            "messages expired but no gap was reported"
        );
    }
    let accepted_order: Vec<&MessageId> = accepted
        .iter()
        .filter(|id| seen.received.contains_key(id))
        .collect();
    let received_order: Vec<&MessageId> = seen.order.iter().collect();
    assert_eq!(
        received_order, accepted_order,
        "first receipt follows acceptance order"
    );
    // Hang up first, or shutdown waits for this client's half of the close handshake.
    drop(bob);
    relay.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn no_loss_duplicate_or_reordering(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run(ops));
    }
}
