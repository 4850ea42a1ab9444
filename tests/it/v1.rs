//! The Whispr v1 API, spoken exactly as the Python desktop client speaks it: an X25519
//! key for sealed boxes (the inbox address), an Ed25519 key signing the base64-decoded
//! ciphertext, hex keys, `from_` out and `from` back.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use whispr::protocol::whispr_v1::inbox_key;
use whispr::protocol::{Envelope, Identity, PublicKey};

use crate::support::{config_with, TestRelay};

pub(crate) type V1Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A v1 user: the two keypairs of the Python client.
pub(crate) struct V1User {
    enc: crypto_box::SecretKey,
    sign: Identity,
}

impl V1User {
    pub(crate) fn new() -> Self {
        V1User {
            enc: crypto_box::SecretKey::generate(&mut rand::rngs::OsRng),
            sign: Identity::generate(),
        }
    }

    /// The inbox address: the X25519 public key in hex.
    pub(crate) fn enc_pub(&self) -> String {
        hex::encode(self.enc.public_key().as_bytes())
    }

    fn sign_pub(&self) -> String {
        self.sign.public_key().to_hex()
    }

    /// The `POST /send` body for `text` sealed to `to`.
    pub(crate) fn message(&self, to: &V1User, text: &str, timestamp: f64) -> Value {
        let ciphertext = to
            .enc
            .public_key()
            .seal(&mut rand::rngs::OsRng, text.as_bytes())
            .unwrap();
        json!({
            "to": to.enc_pub(),
            "from_": self.sign_pub(),
            "enc_pub": self.enc_pub(),
            "message": STANDARD.encode(&ciphertext),
            "signature": STANDARD.encode(self.sign.sign(&ciphertext).to_bytes()),
            "timestamp": timestamp,
        })
    }

    /// What the client does with a polled or pushed message: check the signature by
    /// `from` over the decoded message, then open the sealed box.
    pub(crate) fn open(&self, m: &Value) -> String {
        let from = PublicKey::from_hex(
            m["from"].as_str().unwrap(),
            whispr::protocol::KeyField::Sender,
        )
        .unwrap();
        let ciphertext = STANDARD.decode(m["message"].as_str().unwrap()).unwrap();
        let sig = STANDARD.decode(m["signature"].as_str().unwrap()).unwrap();
        let sig = whispr::protocol::Signature::from_slice(&sig).unwrap();
        from.verify(&ciphertext, &sig).expect("signature verifies");
        String::from_utf8(self.enc.unseal(&ciphertext).unwrap()).unwrap()
    }
}

/// A JSON POST: the status and the JSON answer (null when it is not JSON).
pub(crate) async fn post(relay: &TestRelay, path: &str, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", relay.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

pub(crate) async fn send(relay: &TestRelay, message: &Value) -> (u16, Value) {
    post(relay, "/send", message.to_string()).await
}

/// A GET: the status and the JSON answer (null when it is not JSON).
pub(crate) async fn get(relay: &TestRelay, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", relay.base)).await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// The texts of a poll, opened by `who`.
async fn poll(relay: &TestRelay, who: &V1User, since: f64) -> Vec<String> {
    let (status, body) = get(relay, &format!("/inbox/{}?since={since}", who.enc_pub())).await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| who.open(m))
        .collect()
}

pub(crate) async fn connect(relay: &TestRelay, path: &str) -> V1Socket {
    let url = format!("ws://{}{path}", relay.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    ws
}

/// The next JSON text frame within 5 s (pings skipped).
pub(crate) async fn next_json(ws: &mut V1Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Asserts nothing but pings arrives for a short while.
async fn assert_quiet(ws: &mut V1Socket) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Some(Ok(Message::Text(t))) = msg {
            panic!("unexpected frame {t}");
        }
    }
}

#[tokio::test]
async fn send_then_poll_with_since_hands_each_message_out_once() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let early = bob.message(&alice, "first", 10.0);
    for (text, ts) in [("third", 30.0), ("second", 20.0)] {
        assert_eq!(
            send(&relay, &bob.message(&alice, text, ts)).await,
            (200, json!({"status": "ok"}))
        );
    }
    assert_eq!(send(&relay, &early).await.0, 200);

    let (_, body) = get(&relay, &format!("/inbox/{}?since=15", alice.enc_pub())).await;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    for m in messages {
        assert_eq!(m["from"], bob.sign_pub());
        assert_eq!(m["enc_pub"], bob.enc_pub());
        assert_eq!(m["id"].as_str().unwrap().len(), 64);
        assert!(m.get("to").is_none());
    }
    let texts: Vec<String> = messages.iter().map(|m| alice.open(m)).collect();
    assert_eq!(texts, ["second", "third"], "sorted by timestamp");
    assert_eq!(messages[0]["timestamp"], 20.0);

    // What `since` skipped stays queued; what was returned never comes back, not even
    // to a restarted client polling from 0.
    assert_eq!(poll(&relay, &alice, 0.0).await, ["first"]);
    assert!(poll(&relay, &alice, 0.0).await.is_empty());
    // Resending the same message is a no-op.
    assert_eq!(send(&relay, &early).await.0, 200);
    assert!(poll(&relay, &alice, 0.0).await.is_empty());
}

#[tokio::test]
async fn websocket_pushes_in_both_url_forms() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for path in [
        format!("/ws/{}", alice.enc_pub()),
        format!("/ws?recipient={}", alice.enc_pub()),
    ] {
        let mut ws = connect(&relay, &path).await;
        assert_eq!(send(&relay, &bob.message(&alice, &path, 1.0)).await.0, 200);
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["to"], alice.enc_pub());
        assert_eq!(frame["from"], bob.sign_pub());
        assert_eq!(alice.open(&frame), path);
        assert!(poll(&relay, &alice, 0.0).await.is_empty(), "delivered once");
    }
}

#[tokio::test]
async fn messages_queued_offline_arrive_once_in_order_on_reconnect() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for n in 0..10 {
        // Equal client timestamps: order and delivery do not depend on them.
        assert_eq!(
            send(&relay, &bob.message(&alice, &format!("m{n}"), 5.0))
                .await
                .0,
            200
        );
    }
    let path = format!("/ws/{}", alice.enc_pub());
    let mut ws = connect(&relay, &path).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(alice.open(&next_json(&mut ws).await));
    }
    let expected: Vec<String> = (0..10).map(|n| format!("m{n}")).collect();
    assert_eq!(got, expected);
    ws.close(None).await.unwrap();

    let mut again = connect(&relay, &path).await;
    assert_quiet(&mut again).await;
    assert_eq!(send(&relay, &bob.message(&alice, "live", 6.0)).await.0, 200);
    assert_eq!(alice.open(&next_json(&mut again).await), "live");
    assert!(poll(&relay, &alice, 0.0).await.is_empty());
}

#[tokio::test]
async fn the_senders_own_sockets_get_a_copy_with_to() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let mut bobs = connect(&relay, &format!("/ws/{}", bob.sign_pub())).await;
    let mut alices = connect(&relay, &format!("/ws/{}", alice.enc_pub())).await;
    assert_eq!(send(&relay, &bob.message(&alice, "hi", 1.0)).await.0, 200);
    let copy = next_json(&mut bobs).await;
    assert_eq!(copy["to"], alice.enc_pub());
    assert_eq!(copy["from"], bob.sign_pub());
    assert_eq!(alice.open(&copy), "hi");
    assert_eq!(alice.open(&next_json(&mut alices).await), "hi");
}

#[tokio::test]
async fn sending_too_fast_is_429() {
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second = 1\nburst_messages = 2",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for n in 0..2 {
        assert_eq!(
            send(&relay, &bob.message(&alice, &n.to_string(), 1.0))
                .await
                .0,
            200
        );
    }
    let (status, body) = send(&relay, &bob.message(&alice, "x", 1.0)).await;
    assert_eq!(
        (status, body),
        (429, json!({"detail": "Rate limit exceeded"}))
    );
}

#[tokio::test]
async fn every_v1_error_status() {
    let relay = TestRelay::start_with(config_with("max_message_bytes = 1024")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let invalid = (400, json!({"detail": "Invalid signature"}));

    let mut forged = bob.message(&alice, "x", 1.0);
    forged["signature"] = json!(STANDARD.encode(bob.sign.sign(b"other").to_bytes()));
    assert_eq!(send(&relay, &forged).await, invalid);
    let mut by_other = bob.message(&alice, "x", 1.0);
    by_other["from_"] = json!(alice.sign_pub());
    assert_eq!(send(&relay, &by_other).await, invalid);
    let mut not_b64 = bob.message(&alice, "x", 1.0);
    not_b64["message"] = json!("***");
    assert_eq!(send(&relay, &not_b64).await, invalid);
    let mut weak = bob.message(&alice, "x", 1.0);
    weak["from_"] = json!("00".repeat(32));
    assert_eq!(send(&relay, &weak).await, invalid);

    let mut missing = bob.message(&alice, "x", 1.0);
    missing.as_object_mut().unwrap().remove("signature");
    for body in [missing.to_string(), "not json".into(), "[]".into()] {
        let (status, answer) = post(&relay, "/send", body).await;
        assert_eq!(status, 422);
        assert!(answer["detail"].is_array(), "{answer}");
    }
    let mut bad_to = bob.message(&alice, "x", 1.0);
    bad_to["to"] = json!("alice");
    assert_eq!(send(&relay, &bad_to).await.0, 422);
    assert_eq!(
        send(&relay, &bob.message(&alice, &"x".repeat(2000), 1.0))
            .await
            .0,
        413
    );

    assert_eq!(get(&relay, "/inbox/nothex").await.0, 422);
    assert_eq!(
        get(&relay, &format!("/inbox/{}?since=soon", alice.enc_pub()))
            .await
            .0,
        422
    );
    assert_eq!(get(&relay, "/ws?other=1").await.0, 422);
    let (status, body) = get(&relay, &format!("/ws/{}", alice.enc_pub())).await;
    assert_eq!(status, 400, "not an upgrade: {body}");
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn public_key_is_stable_hex() {
    let relay = TestRelay::start().await;
    let (status, first) = get(&relay, "/public-key").await;
    assert_eq!(status, 200);
    assert_eq!(first["analytics"], false);
    assert_eq!(
        hex::decode(first["public_key"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(get(&relay, "/public-key").await.1, first);
}

#[tokio::test]
async fn switched_off_every_v1_path_is_404() {
    let relay = TestRelay::start_with(config_with("compat_whispr_v1 = false")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    assert_eq!(send(&relay, &bob.message(&alice, "x", 1.0)).await.0, 404);
    for path in [
        format!("/inbox/{}", alice.enc_pub()),
        format!("/ws/{}", alice.enc_pub()),
        format!("/ws?recipient={}", alice.enc_pub()),
        "/public-key".into(),
    ] {
        let (status, body) = get(&relay, &path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.is_object(), "JSON answer on {path}");
    }
    let url = format!("ws://{}/ws/{}", relay.addr, alice.enc_pub());
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn v1_and_native_inboxes_never_meet() {
    let relay = TestRelay::start().await;
    let native = Identity::generate();
    let carol = Identity::generate();
    let bob = V1User::new();
    let key = native.public_key();
    // A native message to K: a v1 poll of K sees nothing and takes nothing.
    relay
        .http()
        .send(&relay.seal(&carol, key, "native"))
        .await
        .unwrap();
    let (_, body) = get(&relay, &format!("/inbox/{}", key.to_hex())).await;
    assert_eq!(body, json!({"messages": []}));
    let page = relay.http().poll(&native, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1, "still in the native inbox");

    // A v1 message to K (as an X25519 key): the native owner of K never sees it.
    let v1_to_k = V1User {
        enc: crypto_box::SecretKey::generate(&mut rand::rngs::OsRng),
        sign: Identity::generate(),
    };
    let mut message = bob.message(&v1_to_k, "v1", 1.0);
    message["to"] = json!(key.to_hex());
    assert_eq!(send(&relay, &message).await.0, 200);
    let page = relay.http().poll(&native, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1, "only the native message");

    // A native envelope addressed to K's derived v1 inbox is never shown to v1 readers.
    relay
        .http()
        .send(&Envelope::seal(
            &carol,
            inbox_key(&key),
            relay.clock.now_ms(),
            false,
            b"{}".to_vec(),
        ))
        .await
        .unwrap();
    let (_, body) = get(&relay, &format!("/inbox/{}", key.to_hex())).await;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["from"], bob.sign_pub());
}

/// The forgery a shared key space allowed: a native envelope addressed to a v1 inbox's
/// derived key, its body shaped like a stored v1 message and signed by the sender's own
/// key, with an id and receive time of the attacker's choosing. Native and v1 inboxes are
/// separate namespaces in the store, so a v1 reader never sees it, on either store.
async fn a_forged_native_envelope_never_reaches_a_v1_reader(relay: &TestRelay) {
    let (mallory, victim) = (Identity::generate(), V1User::new());
    let to = PublicKey::from_hex(&victim.enc_pub(), whispr::protocol::KeyField::Recipient).unwrap();
    let message = b"forged ciphertext".to_vec();
    let forged = whispr::protocol::whispr_v1::StoredV1 {
        to: victim.enc_pub(),
        from: mallory.public_key().to_hex(),
        enc_pub: victim.enc_pub(),
        message: STANDARD.encode(&message),
        signature: STANDARD.encode(mallory.sign(&message).to_bytes()),
        timestamp: 1.0,
        received_ms: 42,
        id: "chosen-by-the-attacker".into(),
    };
    assert!(
        whispr::protocol::whispr_v1::StoredV1::open(
            &Envelope::seal(
                &mallory,
                inbox_key(&to),
                0,
                false,
                serde_json::to_vec(&forged).unwrap()
            ),
            &to
        )
        .is_some(),
        "the body passes the v1 reader's own checks: only the namespace stops it"
    );
    relay
        .http()
        .send(&Envelope::seal(
            &mallory,
            inbox_key(&to),
            relay.clock.now_ms(),
            false,
            serde_json::to_vec(&forged).unwrap(),
        ))
        .await
        .expect("a native send to any 32 bytes is accepted");
    let (_, body) = get(relay, &format!("/inbox/{}", victim.enc_pub())).await;
    assert_eq!(body, json!({"messages": []}), "the v1 reader sees nothing");
}

#[tokio::test]
async fn a_native_envelope_cannot_be_planted_in_a_v1_inbox_on_memory() {
    let relay = TestRelay::start().await;
    a_forged_native_envelope_never_reaches_a_v1_reader(&relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_native_envelope_cannot_be_planted_in_a_v1_inbox_on_redis() {
    let Some(redis) = crate::redis_store::RedisServer::start().await else {
        return;
    };
    let relay = TestRelay::start_with(redis.config("")).await;
    a_forged_native_envelope_never_reaches_a_v1_reader(&relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn v1_messages_expire_after_the_ttl() {
    let relay = TestRelay::start_with(config_with("message_ttl_seconds = 60")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    assert_eq!(send(&relay, &bob.message(&alice, "old", 1.0)).await.0, 200);
    relay.clock.advance_ms(61_000);
    assert_eq!(send(&relay, &bob.message(&alice, "new", 2.0)).await.0, 200);
    assert_eq!(poll(&relay, &alice, 0.0).await, ["new"]);
}

#[tokio::test]
async fn a_full_v1_inbox_refuses_instead_of_dropping() {
    let relay = TestRelay::start_with(config_with("max_messages_per_recipient = 2")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for n in 0..2 {
        assert_eq!(
            send(&relay, &bob.message(&alice, &n.to_string(), 1.0))
                .await
                .0,
            200
        );
    }
    let (status, body) = send(&relay, &bob.message(&alice, "2", 1.0)).await;
    assert_eq!(status, 507);
    assert!(body["detail"].as_str().unwrap().contains("inbox"), "{body}");
    assert_eq!(
        poll(&relay, &alice, 0.0).await,
        ["0", "1"],
        "nothing dropped"
    );
    assert_eq!(
        send(&relay, &bob.message(&alice, "2", 1.0)).await.0,
        200,
        "room again"
    );
}

#[tokio::test]
async fn a_v1_socket_that_never_answers_pings_is_closed_with_4005() {
    let relay = TestRelay::start_with(crate::support::config_with(
        "ws_ping_interval_seconds = 1\nws_pong_timeout_seconds = 1",
    ))
    .await;
    let key = hex::encode([7u8; 32]);
    let mut ws = connect(&relay, &format!("/ws/{key}")).await;
    // tungstenite answers pings only while we read; sleeping means no pong.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4005);
    // A socket that reads (and so answers pings) stays open through several pings.
    let mut ws = connect(&relay, &format!("/ws/{key}")).await;
    assert_quiet(&mut ws).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("the reading socket stays open, got {other:?}"),
        }
    }
    relay.stop().await;
}

#[tokio::test]
async fn an_enc_pub_that_is_not_hex_or_an_empty_message_is_refused() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for bad in [
        "",
        "bob",
        &"ab".repeat(31),
        &"zz".repeat(32),
        &"ab".repeat(33),
    ] {
        let mut m = bob.message(&alice, "x", 1.0);
        m["enc_pub"] = json!(bad);
        let (status, answer) = send(&relay, &m).await;
        assert_eq!(status, 422, "{bad:?}: {answer}");
        assert!(
            answer["detail"][0]["msg"]
                .as_str()
                .unwrap()
                .contains("enc_pub"),
            "{answer}"
        );
    }
    let mut empty = bob.message(&alice, "x", 1.0);
    empty["message"] = json!("");
    empty["signature"] = json!(STANDARD.encode(bob.sign.sign(b"").to_bytes()));
    assert_eq!(
        send(&relay, &empty).await,
        (400, json!({"detail": "message decodes to zero bytes"}))
    );
    assert!(
        poll(&relay, &alice, 0.0).await.is_empty(),
        "nothing was stored"
    );
}
