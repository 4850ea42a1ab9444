//! Speaking the Whispr v1 API as the Python desktop client does: its two keypairs, its
//! JSON requests, its push socket.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use whispr::protocol::{Identity, PublicKey};

use super::TestRelay;

pub(crate) type V1Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A v1 user: the two keypairs of the Python client.
pub(crate) struct V1User {
    pub(crate) enc: crypto_box::SecretKey,
    pub(crate) sign: Identity,
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

    pub(crate) fn sign_pub(&self) -> String {
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
