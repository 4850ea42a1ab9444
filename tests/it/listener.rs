//! The client library's `Listener` against a real relay: deduplication by id and the
//! cursor file, below the command line.

use std::time::Duration;

use crate::support::{scratch_dir, TestRelay};
use whispr::client::{Delivery, ListenEvent, Listener, ListenerConfig, StateFile, Tls};
use whispr::protocol::{Cursor, Identity};

fn poll_only(relay: &TestRelay) -> ListenerConfig {
    let mut config = ListenerConfig::new(relay.base.clone(), Tls::webpki().unwrap());
    config.websocket = false;
    config.poll_interval = Duration::from_millis(50);
    config
}

/// The next message, skipping connection and sync events (at most 5 s away).
async fn next_message(listener: &mut Listener) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match listener.next().await.expect("listener event") {
                ListenEvent::Message(d) => return d,
                ListenEvent::Connected { .. } | ListenEvent::Synced => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .expect("a message within 5 s")
}

#[tokio::test]
async fn a_redelivered_message_is_recognised_by_id_and_not_shown_again() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    for text in ["one", "two"] {
        http.send(&relay.seal(&alice, bob.public_key(), text))
            .await
            .unwrap();
    }
    let file = StateFile::new(scratch_dir("listener-dedupe").join("bob.cursor"));
    let mut listener = Listener::new(
        poll_only(&relay),
        Identity::from_seed(bob.seed()),
        Some(file.clone()),
    )
    .unwrap();
    for expected in ["one", "two"] {
        let d = next_message(&mut listener).await;
        assert_eq!(d.envelope.body, expected.as_bytes());
        listener.ack(&d).await.unwrap();
    }
    let epoch = listener.cursor().unwrap().epoch;
    drop(listener);

    // The saved cursor falls behind what was processed (as when a process dies after
    // showing a message but before its position is written); the ids still know.
    let mut state = file.load().unwrap();
    state.adopt(Cursor { epoch, seq: 0 });
    file.save(&state).unwrap();
    http.send(&relay.seal(&alice, bob.public_key(), "three"))
        .await
        .unwrap();
    let mut listener = Listener::new(
        poll_only(&relay),
        Identity::from_seed(bob.seed()),
        Some(file),
    )
    .unwrap();
    let d = next_message(&mut listener).await;
    assert_eq!(d.envelope.body, b"three", "one and two are not shown again");
    listener.ack(&d).await.unwrap();
    assert_eq!(listener.cursor(), Some(Cursor { epoch, seq: 3 }));
    relay.stop().await;
}
