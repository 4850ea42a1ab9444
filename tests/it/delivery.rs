//! The first promise: nothing accepted is lost or duplicated, and gaps are reported.

use whispr::protocol::{Codec, Cursor, GapReason, Identity, ServerFrame};

use crate::support::{assert_silent, config_with, drain_until_synced, next, receive, TestRelay};

#[tokio::test]
async fn online_push_reaches_the_recipient_at_once() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut bob_ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut bob_ws, true).await.is_empty());
    let (mut alice_ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut alice_ws, true).await;

    let env = relay.seal(&alice, bob.public_key(), "hello bob");
    alice_ws.send(&env, Some(7)).await.unwrap();
    match next(&mut alice_ws).await {
        ServerFrame::Accepted {
            reference,
            id,
            duplicate,
            online,
        } => {
            assert_eq!(reference, Some(7));
            assert_eq!(id, env.id());
            assert!(!duplicate);
            assert_eq!(online, None);
        }
        other => panic!("expected accepted, got {other:?}"),
    }
    match next(&mut bob_ws).await {
        ServerFrame::Deliver { seq, id, envelope } => {
            assert_eq!(seq, Some(1));
            assert_eq!(id, env.id());
            assert_eq!(*envelope, env, "the envelope arrives byte for byte");
        }
        other => panic!("expected deliver, got {other:?}"),
    }
    relay.stop().await;
}

#[tokio::test]
async fn offline_queue_replays_a_thousand_messages_exactly_once_in_order() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for n in 0..1000 {
        let res = http
            .send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
        assert!(!res.duplicate);
    }
    // A session that never acks gets exactly one window, then waits (flow control).
    let (mut ws, ready) = relay.connect_at(&bob, None, Codec::Json).await;
    let window = ready.window as usize;
    let got = receive(&mut ws, window, false).await;
    assert_eq!(
        got.last(),
        Some(&(window as u64, format!("m{}", window - 1)))
    );
    assert_silent(&mut ws, 300).await;
    ws.close().await;
    // A session that acks gets everything, in order, once, then `synced`.
    let (mut ws, _) = relay.connect_at(&bob, None, Codec::MsgPack).await;
    let got = drain_until_synced(&mut ws, true).await;
    let expected: Vec<(u64, String)> = (0..1000).map(|n| (n as u64 + 1, format!("m{n}"))).collect();
    assert_eq!(got, expected, "every message once, in order");
    ws.close().await;
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(
        drain_until_synced(&mut ws, true).await.is_empty(),
        "acked messages never come back"
    );
    relay.stop().await;
}

#[tokio::test]
async fn unacked_messages_are_redelivered_and_acked_ones_never_again() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for n in 1..=10 {
        http.send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    let (mut ws, ready) = relay.connect(&bob).await;
    let got = drain_until_synced(&mut ws, false).await;
    assert_eq!(got.len(), 10);
    ws.ack(4).await.unwrap();
    // Drop the connection without a close handshake, as a network failure would.
    drop(ws);

    // Resuming with the cursor we acked through.
    let cursor = Cursor {
        epoch: ready.epoch,
        seq: 4,
    };
    let (mut ws, _) = relay.connect_at(&bob, Some(cursor), Codec::Json).await;
    let got = drain_until_synced(&mut ws, false).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
    // The cursor acknowledged through 6 as well: a session claiming seq 6 means it has it.
    drop(ws);
    let (ws, _) = relay
        .connect_at(
            &bob,
            Some(Cursor {
                epoch: ready.epoch,
                seq: 6,
            }),
            Codec::Json,
        )
        .await;
    drop(ws);
    let (mut ws, _) = relay.connect(&bob).await;
    let seqs: Vec<u64> = drain_until_synced(&mut ws, false)
        .await
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        seqs,
        (7..=10).collect::<Vec<_>>(),
        "without a cursor: exactly the unacked ones"
    );
    relay.stop().await;
}

#[tokio::test]
async fn resending_the_same_envelope_is_a_no_op() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let env = relay.seal(&alice, bob.public_key(), "once");
    let http = relay.http();
    let first = http.send(&env).await.unwrap();
    let second = http.send(&env).await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.id, second.id);
    let (mut ws, _) = relay.connect(&bob).await;
    ws.send(&env, Some(1)).await.unwrap();
    let got = drain_until_synced(&mut ws, true).await;
    assert_eq!(got, vec![(1, "once".to_string())]);
    match next(&mut ws).await {
        ServerFrame::Accepted { duplicate, .. } => assert!(duplicate, "over WebSocket too"),
        other => panic!("expected accepted, got {other:?}"),
    }
    http.send(&env).await.unwrap();
    assert_silent(&mut ws, 300).await;
    relay.stop().await;
}

#[tokio::test]
async fn ttl_expiry_is_reported_as_a_gap() {
    let relay = TestRelay::start_with(config_with("message_ttl_seconds = 60")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (ws, ready) = relay.connect(&bob).await;
    ws.close().await;
    let http = relay.http();
    http.send(&relay.seal(&alice, bob.public_key(), "will expire"))
        .await
        .unwrap();
    relay.clock.advance_ms(30_000);
    http.send(&relay.seal(&alice, bob.public_key(), "survives"))
        .await
        .unwrap();
    relay.clock.advance_ms(31_000);

    let cursor = Cursor {
        epoch: ready.epoch,
        seq: 0,
    };
    let (mut ws, _) = relay.connect_at(&bob, Some(cursor), Codec::Json).await;
    match next(&mut ws).await {
        ServerFrame::Gap { epoch, seq, reason } => {
            assert_eq!(
                (epoch, seq),
                (ready.epoch, 1),
                "the cursor steps over the expired seq 1"
            );
            assert_eq!(reason, GapReason::Expired);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        drain_until_synced(&mut ws, false).await,
        vec![(2, "survives".to_string())]
    );
    http.send(&relay.seal(&alice, bob.public_key(), "later"))
        .await
        .unwrap();
    assert_eq!(
        receive(&mut ws, 1, false).await,
        vec![(3, "later".to_string())],
        "the loss is reported once, not again before the next delivery"
    );
    ws.close().await;

    let page = http.poll(&bob, Some(cursor), None).await.unwrap();
    assert!(page.gap);
    assert_eq!(page.gap_reason, Some(GapReason::Expired));
    assert_eq!(page.messages.len(), 2, "{page:?}");
    assert_eq!(page.next.seq, 3);
    let after = http.poll(&bob, Some(page.next), None).await.unwrap();
    assert!(!after.gap, "the next poll from `next` sees no gap");
    assert!(after.messages.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn a_cursor_from_an_old_epoch_is_reported_as_a_gap() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "new epoch"))
        .await
        .unwrap();
    let (probe, ready) = relay.connect(&bob).await;
    probe.close().await;
    let stale = Cursor {
        epoch: ready.epoch ^ 0x5a5a,
        seq: 40,
    };
    let (mut ws, _) = relay.connect_at(&bob, Some(stale), Codec::MsgPack).await;
    match next(&mut ws).await {
        ServerFrame::Gap { epoch, seq, reason } => {
            assert_eq!((epoch, seq), (ready.epoch, 0));
            assert_eq!(reason, GapReason::EpochChanged);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        drain_until_synced(&mut ws, false).await,
        vec![(1, "new epoch".to_string())]
    );
    ws.close().await;
    let page = relay.http().poll(&bob, Some(stale), None).await.unwrap();
    assert_eq!(page.gap_reason, Some(GapReason::EpochChanged));
    assert_eq!(
        page.messages.len(),
        1,
        "nothing was acked by the stale cursor"
    );
    relay.stop().await;
}

#[tokio::test]
async fn live_messages_during_backlog_replay_arrive_once_in_order() {
    let relay = TestRelay::start_with(config_with("ws_max_inflight = 8")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for n in 0..50 {
        http.send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    let (mut ws, _) = relay.connect(&bob).await;
    // Sends race the replay: the window of 8 forces many store reads in between.
    let sender = {
        let base = relay.base.clone();
        let bob_key = bob.public_key();
        let clock = relay.clock.clone();
        tokio::spawn(async move {
            let http = whispr::client::HttpClient::new(&base, Codec::MsgPack).unwrap();
            for n in 50..150 {
                let env = whispr::protocol::Envelope::seal(
                    &alice,
                    bob_key,
                    clock.now_ms(),
                    false,
                    format!("m{n}").into_bytes(),
                );
                http.send(&env).await.unwrap();
            }
        })
    };
    let got = receive(&mut ws, 150, true).await;
    sender.await.unwrap();
    let expected: Vec<(u64, String)> = (0..150).map(|n| (n as u64 + 1, format!("m{n}"))).collect();
    assert_eq!(got, expected);
    // `synced` may come last, when the replay first caught up; nothing else may.
    if let Ok(frame) =
        tokio::time::timeout(std::time::Duration::from_millis(200), ws.next_frame()).await
    {
        assert!(
            matches!(frame, Ok(ServerFrame::Synced { seq: 150, .. })),
            "{frame:?}"
        );
    }
    assert_silent(&mut ws, 200).await;
    relay.stop().await;
}

#[tokio::test]
async fn ephemeral_messages_go_to_live_sessions_only_and_are_never_queued() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let typing = |relay: &TestRelay| {
        whispr::protocol::Envelope::seal(
            &alice,
            bob.public_key(),
            relay.clock.now_ms(),
            true,
            b"typing".to_vec(),
        )
    };
    let offline = relay.http().send(&typing(&relay)).await.unwrap();
    assert_eq!(offline.online, Some(false));

    let (mut ws, _) = relay.connect(&bob).await;
    assert!(
        drain_until_synced(&mut ws, true).await.is_empty(),
        "the offline one was not queued"
    );
    relay.clock.advance_ms(1);
    let env = typing(&relay);
    let online = relay.http().send(&env).await.unwrap();
    assert_eq!(online.online, Some(true));
    match next(&mut ws).await {
        ServerFrame::Deliver { seq, id, envelope } => {
            assert_eq!(seq, None, "ephemeral deliveries carry no seq");
            assert_eq!(id, env.id());
            assert!(envelope.ephemeral);
        }
        other => panic!("expected an ephemeral deliver, got {other:?}"),
    }
    ws.close().await;
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ephemeral_messages_is_delivered_whole() {
    // Pushes that land while the session is busy wake it once (one stored permit):
    // the session must take every queued envelope then, not one per wake-up.
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    let envelopes: Vec<_> = (0..12u8)
        .map(|i| {
            whispr::protocol::Envelope::seal(
                &alice,
                bob.public_key(),
                relay.clock.now_ms(),
                true,
                vec![b't', i],
            )
        })
        .collect();
    let http = relay.http();
    let sent = futures::future::join_all(envelopes.iter().map(|e| http.send(e))).await;
    for answer in sent {
        assert_eq!(answer.unwrap().online, Some(true));
    }
    let mut got = std::collections::HashSet::new();
    while got.len() < envelopes.len() {
        match next(&mut ws).await {
            ServerFrame::Deliver { seq: None, id, .. } => {
                assert!(got.insert(id), "delivered twice")
            }
            other => panic!("expected an ephemeral deliver, got {other:?}"),
        }
    }
    let want: std::collections::HashSet<_> = envelopes.iter().map(|e| e.id()).collect();
    assert_eq!(got, want);
    relay.stop().await;
}

#[tokio::test]
async fn a_graceful_restart_with_a_snapshot_keeps_messages_cursors_and_dedupe() {
    let path = crate::support::scratch_dir("snapshot").join("memory.snapshot");
    let config = config_with(&format!(
        "memory_snapshot_path = {:?}",
        path.display().to_string()
    ));
    let (alice, bob) = (Identity::generate(), Identity::generate());

    let relay = TestRelay::start_with(config.clone()).await;
    let mut sent = Vec::new();
    for n in 1..=5 {
        let env = relay.seal(&alice, bob.public_key(), &format!("m{n}"));
        relay.http().send(&env).await.unwrap();
        sent.push(env);
    }
    let (mut ws, ready) = relay.connect(&bob).await;
    assert_eq!(receive(&mut ws, 5, false).await.len(), 5);
    ws.ack(2).await.unwrap();
    ws.close().await;
    let clock = relay.clock.clone();
    relay.stop().await;
    assert!(path.exists(), "shutdown wrote the snapshot");

    let relay = TestRelay::start_clocked(config.clone(), clock).await;
    let cursor = Cursor {
        epoch: ready.epoch,
        seq: 2,
    };
    let (mut ws, again) = relay.connect_at(&bob, Some(cursor), Codec::MsgPack).await;
    assert!(
        !path.exists(),
        "a loaded snapshot is deleted, so a crash cannot bring it back"
    );
    assert_eq!(again.epoch, ready.epoch, "the epoch survives, so no gap");
    let got = drain_until_synced(&mut ws, true).await;
    assert_eq!(
        got,
        vec![(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
    );
    let res = relay.http().send(&sent[0]).await.unwrap();
    assert!(res.duplicate, "dedupe memory survives the restart");
    let fresh = relay.seal(&alice, bob.public_key(), "m6");
    relay.http().send(&fresh).await.unwrap();
    assert_eq!(
        receive(&mut ws, 1, true).await,
        vec![(6, "m6".into())],
        "seqs continue"
    );
    ws.close().await;
    relay.stop().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn a_corrupt_snapshot_stops_the_relay_with_a_readable_error() {
    let path = crate::support::scratch_dir("snapshot").join("memory.snapshot");
    std::fs::write(&path, b"not a snapshot").unwrap();
    let config = config_with(&format!(
        "memory_snapshot_path = {:?}",
        path.display().to_string()
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = whispr::server::Server::new(config)
        .run(listener, std::future::pending())
        .await
        .expect_err("refuses to start");
    let text = err.to_string();
    assert!(
        text.contains("corrupt snapshot") && text.contains(&path.display().to_string()),
        "{text}"
    );
    assert!(
        path.exists(),
        "the operator decides what to do with the file"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Sends pipelined by one session (written back to back, no answer awaited) share the
/// verifier's batches, yet each is answered and stored in the order it came, and a bad
/// signature among them refuses only its own send.
#[tokio::test]
async fn pipelined_sends_are_answered_and_stored_in_order_and_a_bad_one_refuses_only_itself() {
    let relay = TestRelay::start_with(config_with("ws_max_pipelined_sends = 8")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut alice_ws, _) = relay.connect(&alice).await;
    drain_until_synced(&mut alice_ws, true).await;
    let bad_ref = 17;
    let mut want = Vec::new();
    for i in 1..=40u64 {
        let mut env = relay.seal(&alice, bob.public_key(), &format!("m{i}"));
        if i == bad_ref {
            let mut sig = env.signature.to_bytes();
            sig[0] ^= 1;
            env.signature = whispr::protocol::Signature::from_slice(&sig).unwrap();
        } else {
            want.push(format!("m{i}"));
        }
        alice_ws.send(&env, Some(i)).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < 40 {
        match next(&mut alice_ws).await {
            ServerFrame::Accepted { reference, .. } => answers.push((reference.unwrap(), true)),
            ServerFrame::Error {
                reference: Some(r),
                code,
                ..
            } => {
                assert_eq!(code, whispr::protocol::ErrorCode::BadSignature);
                answers.push((r, false));
            }
            _ => {}
        }
    }
    let expected: Vec<(u64, bool)> = (1..=40).map(|i| (i, i != bad_ref)).collect();
    assert_eq!(answers, expected, "answered in the order sent");
    let (mut bob_ws, _) = relay.connect(&bob).await;
    let got: Vec<String> = drain_until_synced(&mut bob_ws, true)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(got, want, "stored in the order sent");
    relay.stop().await;
}
