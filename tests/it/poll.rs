//! The HTTP fallback: signed inbox reads with a cursor, health and info.

use serde_json::Value;
use whispr::protocol::{Codec, Cursor, HttpAuth, Identity};

use crate::support::{config_with, TestRelay};

async fn get_with_auth(
    relay: &TestRelay,
    path_and_query: &str,
    auth: Option<String>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{}", relay.base, path_and_query));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn polling_pages_through_the_inbox_and_since_acknowledges() {
    let relay = TestRelay::start_with(config_with("poll_max_messages = 4")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    for codec in [Codec::Json, Codec::MsgPack] {
        let http = relay.http_with(codec);
        for n in 0..6 {
            http.send(&relay.seal(&alice, bob.public_key(), &format!("{codec:?}{n}")))
                .await
                .unwrap();
        }
        let page = http.poll(&bob, None, None).await.unwrap();
        assert_eq!(page.messages.len(), 4, "limited by poll_max_messages");
        assert!(page.more);
        assert!(!page.gap);
        let page2 = http.poll(&bob, Some(page.next), Some(10)).await.unwrap();
        assert_eq!(page2.messages.len(), 2);
        assert!(!page2.more);
        let bodies: Vec<String> = page
            .messages
            .iter()
            .chain(&page2.messages)
            .map(|m| String::from_utf8(m.envelope.body.clone()).unwrap())
            .collect();
        let expected: Vec<String> = (0..6).map(|n| format!("{codec:?}{n}")).collect();
        assert_eq!(bodies, expected);
        for m in page.messages.iter().chain(&page2.messages) {
            assert_eq!(m.id, m.envelope.id());
        }
        // `since` acknowledged the first page: a poll without a cursor shows only page 2.
        let fresh = http.poll(&bob, None, None).await.unwrap();
        assert_eq!(
            fresh.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            page2.messages.iter().map(|m| m.seq).collect::<Vec<_>>()
        );
        let done = http.poll(&bob, Some(page2.next), None).await.unwrap();
        assert!(done.messages.is_empty());
        assert_eq!(done.next, page2.next);
    }
    relay.stop().await;
}

#[tokio::test]
async fn polling_refuses_anyone_who_cannot_prove_the_key() {
    let relay = TestRelay::start().await;
    let (alice, bob, mallory) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "for bob"))
        .await
        .unwrap();
    let origin = relay.addr.to_string();
    let now = relay.clock.now_ms();
    let pq = "/v1/inbox";

    let (status, body) = get_with_auth(&relay, pq, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    for bad in [
        "Bearer abc",
        "Whispr key=zz, ts=1, sig=AA==",
        "Whispr key=00, ts=1",
    ] {
        let (status, body) = get_with_auth(&relay, pq, Some(bad.into())).await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Mallory signs, claiming bob's key.
    let mut forged = HttpAuth::sign(&mallory, now, &origin, "GET", pq);
    forged.key = bob.public_key();
    let (status, _) = get_with_auth(&relay, pq, Some(forged.header_value())).await;
    assert_eq!(status, 401);
    // Bob's signature for another query cannot be reused for this one.
    let other = HttpAuth::sign(&bob, now, &origin, "GET", "/v1/inbox?limit=1");
    let (status, _) = get_with_auth(&relay, pq, Some(other.header_value())).await;
    assert_eq!(status, 401);
    // Nor for another origin, nor when stale.
    let elsewhere = HttpAuth::sign(&bob, now, "other.example", "GET", pq);
    assert_eq!(
        get_with_auth(&relay, pq, Some(elsewhere.header_value()))
            .await
            .0,
        401
    );
    let stale = HttpAuth::sign(&bob, now - 301_000, &origin, "GET", pq);
    let (status, body) = get_with_auth(&relay, pq, Some(stale.header_value())).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("timestamp"));

    let ok = HttpAuth::sign(&bob, now, &origin, "GET", pq);
    let (status, body) = get_with_auth(&relay, pq, Some(ok.header_value())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        1,
        "nothing was taken by the refused requests"
    );
    relay.stop().await;
}

#[tokio::test]
async fn cursor_errors_are_clear() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let http = relay.http();
    http.send(&relay.seal(&alice, bob.public_key(), "one"))
        .await
        .unwrap();
    let page = http.poll(&bob, None, None).await.unwrap();
    match http
        .poll(
            &bob,
            Some(Cursor {
                epoch: page.epoch,
                seq: 5,
            }),
            None,
        )
        .await
    {
        // A cursor past the head is a witness of lost history, not an error: a new
        // epoch, the gap, and everything still stored.
        Ok(again) => {
            assert_ne!(again.epoch, page.epoch);
            assert_eq!(
                again.gap_reason,
                Some(whispr::protocol::GapReason::EpochChanged)
            );
            assert_eq!(again.messages.len(), 1);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    let origin = relay.addr.to_string();
    let pq = "/v1/inbox?since=1";
    let auth = HttpAuth::sign(&bob, relay.clock.now_ms(), &origin, "GET", pq);
    let (status, body) = get_with_auth(&relay, pq, Some(auth.header_value())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed")),
        "since without epoch"
    );
    let pq = "/v1/inbox?since=abc&epoch=1";
    let auth = HttpAuth::sign(&bob, relay.clock.now_ms(), &origin, "GET", pq);
    assert_eq!(
        get_with_auth(&relay, pq, Some(auth.header_value())).await.0,
        400
    );
    // The message is still there after the refused polls.
    assert_eq!(http.poll(&bob, None, None).await.unwrap().messages.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn health_readiness_and_info() {
    let relay = TestRelay::start_with(config_with(
        "max_message_bytes = 4096\nmessage_ttl_seconds = 3600",
    ))
    .await;
    let (status, body) = get_with_auth(&relay, "/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get_with_auth(&relay, "/readyz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let (status, info) = get_with_auth(&relay, "/v1/info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["protocol_versions"][0], "whispr.v1");
    assert_eq!(info["limits"]["max_message_bytes"], 4096);
    assert_eq!(info["limits"]["message_ttl_seconds"], 3600);
    assert_eq!(
        info["subprotocols"],
        serde_json::json!(["whispr.v1.json", "whispr.v1.msgpack"])
    );
    relay.stop().await;
}

#[tokio::test]
async fn v1_info_publishes_exactly_the_limits_the_spec_lists() {
    // The example in PROTOCOL.md 8.5 is the defaults: a limit missing from either side
    // is a limit a client author cannot plan with.
    let spec = include_str!("../../proto/PROTOCOL.md");
    let section = spec.split("### 8.5 `GET /v1/info`").nth(1).unwrap();
    let example = section
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    let example: serde_json::Value = serde_json::from_str(example).unwrap();
    let relay = TestRelay::start_with(whispr::config::Config::default()).await;
    let (status, info) = get_with_auth(&relay, "/v1/info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["limits"], example["limits"]);
    relay.stop().await;
}
