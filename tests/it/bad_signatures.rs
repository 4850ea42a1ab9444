//! The budget of bad signatures: a client IP whose signatures fail is refused before
//! they are checked (429), another IP is not; a WebSocket session is closed after its
//! own bad signatures (4008). Client IPs come from `X-Forwarded-For` through a trusted
//! proxy (127.0.0.1), so one test plays several addresses.

use base64::Engine;
use serde_json::Value;
use whispr::client::ClientError;
use whispr::error::close_code;
use whispr::protocol::{Envelope, ErrorCode, HttpAuth, Identity, ServerFrame};

use crate::support::{config_with, next, TestRelay};

/// The same envelope with one bit of its signature flipped.
fn forged(mut envelope: Envelope) -> Envelope {
    let mut sig = envelope.signature.to_bytes();
    sig[0] ^= 1;
    envelope.signature = whispr::protocol::Signature::from_slice(&sig).unwrap();
    envelope
}

/// `POST /v1/send` as client `ip`: status, `Retry-After`, JSON body.
async fn send_as(relay: &TestRelay, ip: &str, envelope: &Envelope) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/send", relay.base))
        .header("X-Forwarded-For", ip)
        .json(envelope)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap())
}

/// A relay behind a trusted proxy (the test) with a budget of one bad signature per
/// second per IP and a burst of `burst`.
async fn relay_with_burst(burst: u32) -> TestRelay {
    TestRelay::start_with(config_with(&format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n\
         max_bad_signatures_per_second_per_ip = 1\nburst_bad_signatures_per_ip = {burst}"
    )))
    .await
}

#[tokio::test]
async fn bad_signatures_spend_their_ips_budget_and_no_one_elses() {
    let relay = relay_with_burst(3).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mallory_ip, other_ip) = ("203.0.113.7", "198.51.100.9");
    let bad = forged(relay.seal(&alice, bob.public_key(), "forged"));

    for i in 0..3 {
        let (status, _, body) = send_as(&relay, mallory_ip, &bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("bad_signature")),
            "#{i}"
        );
    }
    // The budget is spent: refused before the signature is checked, good or bad.
    let good = relay.seal(&alice, bob.public_key(), "genuine");
    for envelope in [&bad, &good] {
        let (status, retry, body) = send_as(&relay, mallory_ip, envelope).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (429, Some("rate_limited")),
            "{body}"
        );
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["retry_after_ms"], 1000);
        assert!(
            body["detail"].as_str().unwrap().contains("bad signatures"),
            "{body}"
        );
    }
    // Signed reads from that IP too.
    let origin = relay.addr.to_string();
    let auth = HttpAuth::sign(&bob, relay.clock.now_ms(), &origin, "GET", "/v1/inbox");
    let poll = reqwest::Client::new()
        .get(format!("{}/v1/inbox", relay.base))
        .header("X-Forwarded-For", mallory_ip)
        .header("Authorization", auth.header_value())
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status().as_u16(), 429);

    // Another IP is unaffected, and has its own budget.
    let (status, _, body) = send_as(&relay, other_ip, &good).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = send_as(&relay, other_ip, &bad).await;
    assert_eq!(status, 422);

    // One token comes back per second (relay clock): a good signature passes and
    // costs nothing, so the next one passes too.
    relay.clock.advance_ms(1000);
    for body in ["later", "later again"] {
        let good = relay.seal(&alice, bob.public_key(), body);
        let (status, _, answer) = send_as(&relay, mallory_ip, &good).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, _, _) = send_as(&relay, mallory_ip, &bad).await;
    assert_eq!(status, 422, "the returned token pays for one more check");
    let (status, _, _) = send_as(&relay, mallory_ip, &bad).await;
    assert_eq!(status, 429);
    relay.stop().await;
}

#[tokio::test]
async fn a_v1_send_with_a_bad_signature_spends_the_same_budget() {
    let relay = relay_with_burst(1).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let alice = Identity::generate();
    let v1 = |signature: Vec<u8>| {
        serde_json::json!({
            "to": "ab".repeat(32),
            "from_": alice.public_key().to_hex(),
            "enc_pub": "cd".repeat(32),
            "message": b64(b"sealed"),
            "signature": b64(&signature),
        })
    };
    let good = alice.sign(b"sealed").to_bytes().to_vec();
    let mut bad = good.clone();
    bad[0] ^= 1;
    let post = |body: Value| {
        reqwest::Client::new()
            .post(format!("{}/send", relay.base))
            .header("X-Forwarded-For", "203.0.113.8")
            .json(&body)
            .send()
    };
    // v1 answers a bad signature with 400 {"detail": "Invalid signature"}.
    assert_eq!(post(v1(bad.clone())).await.unwrap().status().as_u16(), 400);
    assert_eq!(post(v1(good)).await.unwrap().status().as_u16(), 429);
    relay.stop().await;
}

#[tokio::test]
async fn a_session_is_closed_at_its_last_allowed_bad_signature() {
    let relay = TestRelay::start_with(config_with("max_bad_signatures_per_session = 2")).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&alice).await;
    let bad = forged(relay.seal(&alice, bob.public_key(), "forged"));

    ws.send(&bad, Some(1)).await.unwrap();
    let stale = Envelope::seal(&alice, bob.public_key(), 1, false, b"old".to_vec());
    ws.send(&stale, Some(2)).await.unwrap();
    ws.send(&relay.seal(&alice, bob.public_key(), "fine"), Some(3))
        .await
        .unwrap();
    ws.send(&bad, Some(4)).await.unwrap();
    let mut answers = Vec::new();
    let code = loop {
        match ws.next_frame().await {
            Ok(ServerFrame::Error {
                code, reference, ..
            }) => answers.push((reference, code.as_str())),
            Ok(ServerFrame::Accepted { reference, .. }) => answers.push((reference, "accepted")),
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => break code,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        answers,
        [
            (Some(1), "bad_signature"),
            (Some(2), "stale_timestamp"),
            (Some(3), "accepted"),
            (Some(4), "bad_signature"),
        ],
        "the second bad signature is answered, then the session closes"
    );
    assert_eq!(code, close_code::BAD_SIGNATURES);

    // A new session starts with a clean count.
    let (mut ws, _) = relay.connect(&alice).await;
    ws.send(&bad, Some(5)).await.unwrap();
    let answer = loop {
        if let ServerFrame::Error {
            code, reference, ..
        } = next(&mut ws).await
        {
            break (reference, code);
        }
    };
    assert_eq!(answer, (Some(5), ErrorCode::BadSignature));
    ws.send(&relay.seal(&alice, bob.public_key(), "still open"), Some(6))
        .await
        .unwrap();
    let accepted = loop {
        if let ServerFrame::Accepted { reference, .. } = next(&mut ws).await {
            break reference;
        }
    };
    assert_eq!(accepted, Some(6));
    relay.stop().await;
}
