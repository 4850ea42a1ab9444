//! Attachments over real sockets: the Whispr v1 `POST /upload` and `GET /download`
//! routes as the Python client speaks them, the native signed `/v1/blobs`, every
//! refusal, expiry with the manual clock, the memory budget, and the same round trips
//! on a real Redis shared by two relays.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use whispr::protocol::{HttpAuth, Identity};
use whispr::testing::blobs::{conformance, BlobId, RedisBlobs};

use crate::support::v1::{get, post};
use crate::support::RedisServer;
use crate::support::{config_with, TestRelay};

/// A v1 user as the Python client holds one: an X25519 key (the address) and an
/// Ed25519 key that signs what it uploads.
struct V1User {
    enc: crypto_box::SecretKey,
    sign: Identity,
}

impl V1User {
    fn new() -> Self {
        V1User {
            enc: crypto_box::SecretKey::generate(&mut rand::rngs::OsRng),
            sign: Identity::generate(),
        }
    }

    fn enc_pub(&self) -> String {
        hex::encode(self.enc.public_key().as_bytes())
    }

    /// `plain` sealed to `to`, as the client encrypts a file before uploading it.
    fn seal_for(&self, to: &V1User, plain: &[u8]) -> Vec<u8> {
        to.enc
            .public_key()
            .seal(&mut rand::rngs::OsRng, plain)
            .unwrap()
    }

    /// The `POST /upload` body for `blob` to `to`.
    fn upload(&self, to: &V1User, blob: &[u8], name: &str) -> Value {
        json!({
            "to": to.enc_pub(),
            "from_": self.sign.public_key().to_hex(),
            "enc_pub": self.enc_pub(),
            "blob": STANDARD.encode(blob),
            "signature": STANDARD.encode(self.sign.sign(blob).to_bytes()),
            "name": name,
            "size": blob.len(),
            "sha256": BlobId::of(blob).to_hex(),
        })
    }
}

/// Status, content type, declared length and bytes of a raw download.
async fn get_raw(relay: &TestRelay, path: &str) -> (u16, String, Option<u64>, Vec<u8>) {
    let resp = reqwest::get(format!("{}{path}", relay.base)).await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let length = resp
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, kind, length, resp.bytes().await.unwrap().to_vec())
}

fn download_path(att_id: &str, recipient: &V1User) -> String {
    format!("/download/{att_id}?recipient={}", recipient.enc_pub())
}

fn raw_path(att_id: &str, recipient: &V1User) -> String {
    format!("/download/raw/{att_id}?recipient={}", recipient.enc_pub())
}

/// Uploads like the v1 client, downloads both ways, twice, and checks every byte.
async fn v1_round_trip(up: &TestRelay, down: &TestRelay) {
    let (alice, bob) = (V1User::new(), V1User::new());
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let blob = alice.seal_for(&bob, &plain);
    let (status, body) = post(
        up,
        "/upload",
        alice.upload(&bob, &blob, "photo.jpg").to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let att_id = BlobId::of(&blob).to_hex();
    assert_eq!(body, json!({"att_id": att_id, "status": "ok"}));

    // Not consumed by a download: the v1 client may fetch both forms.
    for _ in 0..2 {
        let (status, got) = get(down, &download_path(&att_id, &bob)).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["att_id"], att_id);
        assert_eq!(got["name"], "photo.jpg");
        assert_eq!(got["size"], blob.len());
        assert_eq!(got["from"], alice.sign.public_key().to_hex());
        assert_eq!(got["to"], bob.enc_pub());
        let bytes = STANDARD.decode(got["blob"].as_str().unwrap()).unwrap();
        assert_eq!(bob.enc.unseal(&bytes).unwrap(), plain);

        let (status, kind, length, raw) = get_raw(down, &raw_path(&att_id, &bob)).await;
        assert_eq!(status, 200);
        assert_eq!(kind, "application/octet-stream");
        assert_eq!(length, Some(blob.len() as u64));
        assert_eq!(raw, blob);
    }

    // A retried upload is the same attachment.
    let (status, body) = post(
        up,
        "/upload",
        alice.upload(&bob, &blob, "photo.jpg").to_string(),
    )
    .await;
    assert_eq!(
        (status, body["att_id"].as_str()),
        (200, Some(att_id.as_str()))
    );
}

#[tokio::test]
async fn v1_upload_then_download_as_json_and_raw() {
    let relay = TestRelay::start().await;
    v1_round_trip(&relay, &relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn v1_upload_refusals() {
    let relay = TestRelay::start_with(config_with("attachment_max_size_bytes = 1024")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let blob = alice.seal_for(&bob, b"a small file");
    let good = alice.upload(&bob, &blob, "f.txt");
    let with = |field: &str, value: Value| {
        let mut v = good.clone();
        v[field] = value;
        v.to_string()
    };
    let cases = [
        (
            "bad signature",
            with(
                "signature",
                json!(STANDARD.encode(alice.sign.sign(b"other").to_bytes())),
            ),
            400,
        ),
        (
            "signed by someone else",
            with("from_", json!(bob.sign.public_key().to_hex())),
            400,
        ),
        ("bad base64", with("blob", json!("not base64!")), 400),
        (
            "sha256 not hex",
            with("sha256", json!("zz".repeat(32))),
            400,
        ),
        ("sha256 too short", with("sha256", json!("ab")), 400),
        (
            "sha256 mismatch",
            with("sha256", json!(BlobId::of(b"other").to_hex())),
            400,
        ),
        (
            "declared size over the limit",
            with("size", json!(1025)),
            413,
        ),
        (
            "missing field",
            {
                let mut v = good.clone();
                v.as_object_mut().unwrap().remove("sha256");
                v.to_string()
            },
            422,
        ),
        ("not JSON", "{".to_string(), 422),
    ];
    for (what, body, want) in cases {
        let (status, answer) = post(&relay, "/upload", body).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert!(answer.get("detail").is_some(), "{what}: v1 shape: {answer}");
    }
    let (status, answer) = post(&relay, "/upload", with("signature", json!("%%"))).await;
    assert_eq!(
        (status, answer),
        (400, json!({"detail": "Invalid signature"}))
    );

    // Really over the limit: decoded, and a body too large to read at all.
    let big = vec![7u8; 1025];
    let (status, answer) = post(
        &relay,
        "/upload",
        alice.upload(&bob, &big, "big").to_string(),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let huge = vec![7u8; 64 * 1024];
    let (status, answer) = post(
        &relay,
        "/upload",
        alice.upload(&bob, &huge, "huge").to_string(),
    )
    .await;
    assert_eq!(status, 413, "{answer}");

    // Nothing refused was stored; the good one still goes through.
    let att_id = BlobId::of(&blob).to_hex();
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 404);
    assert_eq!(post(&relay, "/upload", good.to_string()).await.0, 200);
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn v1_download_refusals_and_expiry() {
    let relay = TestRelay::start_with(config_with("attachment_ttl_seconds = 60")).await;
    let (alice, bob, eve) = (V1User::new(), V1User::new(), V1User::new());
    let blob = alice.seal_for(&bob, b"for bob only");
    assert_eq!(
        post(
            &relay,
            "/upload",
            alice.upload(&bob, &blob, "f").to_string()
        )
        .await
        .0,
        200
    );
    let att_id = BlobId::of(&blob).to_hex();
    for path in [download_path(&att_id, &eve), raw_path(&att_id, &eve)] {
        let (status, body) = get(&relay, &path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["detail"].is_string());
    }
    let unknown = BlobId::of(b"nothing").to_hex();
    for path in [download_path(&unknown, &bob), raw_path(&unknown, &bob)] {
        assert_eq!(get(&relay, &path).await.0, 404, "{path}");
    }
    // An id that is not 64 hex names no attachment: 404, as the v1 spec lists (the
    // Python server looked it up and found nothing).
    for path in [download_path("abc", &bob), raw_path(&"g".repeat(64), &bob)] {
        let (status, body) = get(&relay, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    // A missing or malformed `recipient` is still a validation error.
    for path in [
        format!("/download/{att_id}"),
        format!("/download/{att_id}?recipient=xyz"),
        "/download/abc?recipient=xyz".to_string(),
    ] {
        assert_eq!(get(&relay, &path).await.0, 422, "{path}");
    }

    // Kept until its TTL, gone at it.
    relay.clock.advance_ms(59_999);
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 200);
    relay.clock.advance_ms(1);
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 404);
    assert_eq!(get_raw(&relay, &raw_path(&att_id, &bob)).await.0, 404);
    relay.stop().await;
}

#[tokio::test]
async fn a_full_attachment_store_refuses_with_507_until_attachments_expire() {
    // Each 1000-byte attachment costs about 1.5 KiB with its record: two fit in 4000.
    let relay = TestRelay::start_with(config_with(
        "attachment_max_size_bytes = 1024\nmax_attachment_store_bytes = 4000\nattachment_ttl_seconds = 60",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    for n in 0..2u8 {
        let (status, body) = post(
            &relay,
            "/upload",
            alice.upload(&bob, &[n; 1000], "f").to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(
        &relay,
        "/upload",
        alice.upload(&bob, &[9; 1000], "f").to_string(),
    )
    .await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("budget"),
        "{body}"
    );
    // The stored ones were not evicted.
    for n in 0..2u8 {
        let id = BlobId::of(&[n; 1000]).to_hex();
        assert_eq!(get(&relay, &download_path(&id, &bob)).await.0, 200);
    }
    let (status, metrics) = {
        let resp = reqwest::get(format!("{}/metrics", relay.base))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("whispr_attachment_bytes ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    relay.clock.advance_ms(60_000);
    let (status, body) = post(
        &relay,
        "/upload",
        alice.upload(&bob, &[9; 1000], "f").to_string(),
    )
    .await;
    assert_eq!(status, 200, "room again after expiry: {body}");
    relay.stop().await;
}

#[tokio::test]
async fn one_sender_cannot_fill_the_attachment_store() {
    use reqwest::Method;
    let relay = TestRelay::start_with(config_with(
        "attachment_max_size_bytes = 1024\nmax_attachment_bytes_per_sender = 2048\nattachment_ttl_seconds = 60",
    ))
    .await;
    let (alice, bob, carol) = (V1User::new(), V1User::new(), V1User::new());
    for n in 0..2u8 {
        let upload = alice.upload(&bob, &[n; 1000], "f").to_string();
        assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    }
    let (status, body) = post(
        &relay,
        "/upload",
        alice.upload(&bob, &[9; 1000], "f").to_string(),
    )
    .await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_attachment_bytes_per_sender"),
        "{body}"
    );
    // The same key through the native API shares the limit.
    let data = vec![7u8; 100];
    let resp = signed(
        &relay,
        &alice.sign,
        Method::POST,
        &blob_upload_path(&bob.sign, &data),
    )
    .body(data)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 507);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "store_full");
    // Other senders are not held back, and the sender has room again at expiry.
    let upload = carol.upload(&bob, &[9; 1000], "f").to_string();
    assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    relay.clock.advance_ms(60_000);
    let upload = alice.upload(&bob, &[8; 1000], "f").to_string();
    assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn uploads_share_the_senders_rate_limit() {
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second = 1\nburst_messages = 1",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    assert_eq!(
        post(
            &relay,
            "/upload",
            alice.upload(&bob, b"one", "f").to_string()
        )
        .await
        .0,
        200
    );
    let (status, body) = post(
        &relay,
        "/upload",
        alice.upload(&bob, b"two", "f").to_string(),
    )
    .await;
    assert_eq!(
        (status, body),
        (429, json!({"detail": "Rate limit exceeded"}))
    );
    relay.stop().await;
}

#[tokio::test]
async fn an_upload_takes_the_ips_token_before_its_body_is_read() {
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second_per_ip = 1\nburst_messages_per_ip = 1",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    // Garbage costs the IP a token, as a good upload does: nothing is read for free.
    assert_eq!(post(&relay, "/upload", "{".into()).await.0, 422);
    let (status, body) = post(
        &relay,
        "/upload",
        alice.upload(&bob, b"one", "f").to_string(),
    )
    .await;
    assert_eq!(
        (status, body),
        (429, json!({"detail": "Rate limit exceeded"}))
    );
    relay.stop().await;
}

#[tokio::test]
async fn downloads_take_a_token_from_the_ips_bucket() {
    use reqwest::Method;
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second_per_ip = 1\nburst_messages_per_ip = 2",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let blob = alice.seal_for(&bob, b"once");
    let upload = alice.upload(&bob, &blob, "f").to_string();
    assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    let att_id = BlobId::of(&blob).to_hex();
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 200);
    let resp = reqwest::get(format!("{}{}", relay.base, raw_path(&att_id, &bob)))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(get(&relay, &download_path(&att_id, &bob)).await.0, 429);
    let who = Identity::generate();
    let path = format!("/v1/blobs/{att_id}");
    let resp = signed(&relay, &who, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429, "native downloads too");
    relay.stop().await;
}

#[tokio::test]
async fn attachment_bytes_in_flight_are_bounded_across_requests() {
    use tokio::io::AsyncWriteExt;
    // The smallest budget allowed: one largest upload body (1024 bytes in base64 plus
    // 16 KiB of room), about 17 KiB.
    let relay = TestRelay::start_with(config_with(
        "attachment_max_size_bytes = 1024\nmax_attachment_inflight_bytes = 17752",
    ))
    .await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let stored = alice.seal_for(&bob, b"stored before");
    let upload = alice.upload(&bob, &stored, "f").to_string();
    assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    let att_id = BlobId::of(&stored).to_hex();

    // A slow client declares a large body and sends a little of it: its reservation
    // (twice the body, clamped to the budget) holds everything.
    let mut slow = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 17000\r\n\r\n{{\"to\": ",
        relay.addr
    );
    slow.write_all(head.as_bytes()).await.unwrap();

    // Until the slow upload ends, every other attachment request is refused at once.
    let small = alice
        .upload(&bob, &alice.seal_for(&bob, b"x"), "f")
        .to_string();
    let mut refused = None;
    for _ in 0..200 {
        let resp = reqwest::Client::new()
            .post(format!("{}/upload", relay.base))
            .header("content-type", "application/json")
            .body(small.clone())
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 503 {
            refused = Some(resp);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = refused.expect("an upload is refused while the budget is held");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_attachment_inflight_bytes"),
        "{body}"
    );
    let (status, _, _, _) = get_raw(&relay, &raw_path(&att_id, &bob)).await;
    assert_eq!(status, 503, "downloads share the budget");
    let metrics = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("whispr_attachments_busy_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The slow client gives up: its reservation is returned.
    drop(slow);
    let mut status = 0;
    for _ in 0..200 {
        status = get(&relay, &download_path(&att_id, &bob)).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "room again once the slow upload is gone");
    assert_eq!(post(&relay, "/upload", small).await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn v1_attachments_are_404_when_compat_is_off() {
    let relay = TestRelay::start_with(config_with("compat_whispr_v1 = false")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    assert_eq!(
        post(&relay, "/upload", alice.upload(&bob, b"x", "f").to_string())
            .await
            .0,
        404
    );
    let id = BlobId::of(b"x").to_hex();
    assert_eq!(get(&relay, &download_path(&id, &bob)).await.0, 404);
    assert_eq!(get(&relay, &raw_path(&id, &bob)).await.0, 404);
    relay.stop().await;
}

/// A signed native request: `Authorization` over method, path and query.
fn signed(
    relay: &TestRelay,
    who: &Identity,
    method: reqwest::Method,
    path_and_query: &str,
) -> reqwest::RequestBuilder {
    let auth = HttpAuth::sign(
        who,
        relay.clock.now_ms(),
        &relay.addr.to_string(),
        method.as_str(),
        path_and_query,
    );
    reqwest::Client::new()
        .request(method, format!("{}{path_and_query}", relay.base))
        .header("authorization", auth.header_value())
}

fn blob_upload_path(to: &Identity, data: &[u8]) -> String {
    format!(
        "/v1/blobs?to={}&sha256={}&name=notes.txt",
        to.public_key().to_hex(),
        BlobId::of(data).to_hex()
    )
}

/// The native round trip: upload signed by the sender, download signed by the
/// recipient, refusals for everyone else.
async fn native_round_trip(up: &TestRelay, down: &TestRelay) {
    use reqwest::Method;
    let (alice, bob, mallory) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let path = blob_upload_path(&bob, &data);
    let resp = signed(up, &alice, Method::POST, &path)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let answer: Value = resp.json().await.unwrap();
    let sha = BlobId::of(&data).to_hex();
    assert_eq!(answer["sha256"], sha);
    assert_eq!(answer["size"], data.len());
    assert!(answer["expires_at_ms"].as_u64().unwrap() > up.clock.now_ms());
    let resp = signed(up, &alice, Method::POST, &path)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "a retry");
    assert_eq!(resp.json::<Value>().await.unwrap()["duplicate"], true);

    let get_path = format!("/v1/blobs/{sha}");
    let resp = signed(down, &bob, Method::GET, &get_path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(
        resp.headers()["x-whispr-from"],
        alice.public_key().to_hex().as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    let resp = signed(down, &mallory, Method::GET, &get_path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "forbidden");
    let resp = reqwest::get(format!("{}{get_path}", down.base))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "unsigned");
    // A signature for another path proves nothing here.
    let resp = signed(down, &bob, Method::GET, "/v1/inbox")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let forged = HttpAuth::sign(
        &bob,
        down.clock.now_ms(),
        &down.addr.to_string(),
        "GET",
        "/v1/inbox",
    );
    let resp = reqwest::Client::new()
        .get(format!("{}{get_path}", down.base))
        .header("authorization", forged.header_value())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "signed for another path");
    let unknown = format!("/v1/blobs/{}", BlobId::of(b"nothing").to_hex());
    let resp = signed(down, &bob, Method::GET, &unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn native_blobs_round_trip_and_refusals() {
    use reqwest::Method;
    let relay = TestRelay::start_with(config_with(
        "attachment_max_size_bytes = 400000\nattachment_ttl_seconds = 60",
    ))
    .await;
    native_round_trip(&relay, &relay).await;

    let (alice, bob) = (Identity::generate(), Identity::generate());
    let data = b"some ciphertext".to_vec();
    let path = blob_upload_path(&bob, &data);
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", relay.base))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "unsigned upload");
    let resp = signed(&relay, &alice, Method::POST, &path)
        .body(b"other bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "body is not the signed sha256");
    let no_sha = format!("/v1/blobs?to={}", bob.public_key().to_hex());
    let resp = signed(&relay, &alice, Method::POST, &no_sha)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "sha256 is required");
    let big = vec![1u8; 400_001];
    let resp = signed(&relay, &alice, Method::POST, &blob_upload_path(&bob, &big))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "too_large");

    // Expiry, by the relay's clock.
    let resp = signed(&relay, &alice, Method::POST, &path)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    relay.clock.advance_ms(60_000);
    let get_path = format!("/v1/blobs/{}", BlobId::of(&data).to_hex());
    let resp = signed(&relay, &bob, Method::GET, &get_path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    relay.stop().await;
}

/// Native blobs are for signed downloads only and v1 blobs for v1 downloads only: the
/// unauthenticated v1 `?recipient=` must not read what the signed API stored, and the
/// same bytes through the other API do not change whose rules a blob follows.
async fn the_two_apis_do_not_share_blobs(relay: &TestRelay) {
    use reqwest::Method;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let data = b"native ciphertext for bob".to_vec();
    let resp = signed(relay, &alice, Method::POST, &blob_upload_path(&bob, &data))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let sha = BlobId::of(&data).to_hex();
    let recipient = bob.public_key().to_hex();
    for path in [
        format!("/download/{sha}?recipient={recipient}"),
        format!("/download/raw/{sha}?recipient={recipient}"),
    ] {
        let (status, body) = get(relay, &path).await;
        assert_eq!(
            status, 404,
            "v1 must not read a native blob: {path}: {body}"
        );
    }
    // The same bytes, same sender and recipient, through v1: refused, not merged.
    let v1_upload = json!({
        "to": recipient,
        "from_": alice.public_key().to_hex(),
        "enc_pub": "cd".repeat(32),
        "blob": STANDARD.encode(&data),
        "signature": STANDARD.encode(alice.sign(&data).to_bytes()),
        "name": "f",
        "size": data.len(),
        "sha256": sha,
    });
    let (status, body) = post(relay, "/upload", v1_upload.to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        get(relay, &format!("/download/{sha}?recipient={recipient}"))
            .await
            .0,
        404,
        "still native"
    );

    // A v1 blob addressed to a key that can sign: the signed GET does not serve it.
    let v1_data = b"v1 ciphertext for bob".to_vec();
    let mut v1_upload = v1_upload;
    v1_upload["blob"] = json!(STANDARD.encode(&v1_data));
    v1_upload["signature"] = json!(STANDARD.encode(alice.sign(&v1_data).to_bytes()));
    v1_upload["size"] = json!(v1_data.len());
    v1_upload["sha256"] = json!(BlobId::of(&v1_data).to_hex());
    let (status, body) = post(relay, "/upload", v1_upload.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let get_path = format!("/v1/blobs/{}", BlobId::of(&v1_data).to_hex());
    let resp = signed(relay, &bob, Method::GET, &get_path)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "native must not read a v1 blob"
    );
    let resp = signed(
        relay,
        &alice,
        Method::POST,
        &blob_upload_path(&bob, &v1_data),
    )
    .body(v1_data.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        403,
        "nor take it over by re-uploading"
    );
}

#[tokio::test]
async fn v1_downloads_cannot_read_native_blobs_nor_the_reverse() {
    let relay = TestRelay::start().await;
    the_two_apis_do_not_share_blobs(&relay).await;
    relay.stop().await;
}

#[tokio::test]
async fn redis_blobs_pass_conformance() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = RedisBlobs::connect(&crate::support::single(&redis.url), conformance::LIMITS)
        .await
        .expect("connect to the test redis");
    conformance::run_all(store).await;
}

#[tokio::test]
async fn attachments_on_redis_are_shared_by_relays_and_expire() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (one, two) = TestRelay::pair(redis.config("attachment_ttl_seconds = 60")).await;
    v1_round_trip(&one, &two).await;
    native_round_trip(&two, &one).await;
    the_two_apis_do_not_share_blobs(&two).await;

    let (alice, bob, eve) = (V1User::new(), V1User::new(), V1User::new());
    let blob = alice.seal_for(&bob, b"short-lived");
    assert_eq!(
        post(&one, "/upload", alice.upload(&bob, &blob, "f").to_string())
            .await
            .0,
        200
    );
    let att_id = BlobId::of(&blob).to_hex();
    // The same bytes for someone else: refused, not silently merged.
    let (status, body) = post(&two, "/upload", eve.upload(&eve, &blob, "f").to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(get(&two, &download_path(&att_id, &eve)).await.0, 403);
    one.clock.advance_ms(60_000);
    assert_eq!(get(&two, &download_path(&att_id, &bob)).await.0, 404);
    assert_eq!(get(&one, &download_path(&att_id, &bob)).await.0, 404);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn an_oversized_upload_without_content_length_is_cut_off_at_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start_with(config_with("attachment_max_size_bytes = 1024")).await;
    let (alice, bob) = (V1User::new(), V1User::new());
    let body = alice.upload(&bob, &[5; 64 * 1024], "f").to_string();
    // Chunked, so the relay cannot refuse from a declared length: it must stop reading
    // at the limit.
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        relay.addr
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    socket.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"detail\""), "{answer}");
    relay.stop().await;
}

#[tokio::test]
async fn an_upload_that_trickles_is_cut_off_with_408_and_frees_its_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start_with(config_with(
        "attachment_max_size_bytes = 1024\nmax_attachment_inflight_bytes = 17752\n\
         attachment_upload_timeout_seconds = 1",
    ))
    .await;
    // Declares a body and sends a little of it, then nothing.
    let mut slow = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 17000\r\n\r\n{{\"to\": ",
        relay.addr
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = slow.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered once the deadline passed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 1 s"), "{text}");

    // Its reservation is gone: a normal upload goes through.
    let (alice, bob) = (V1User::new(), V1User::new());
    let sealed = alice.seal_for(&bob, b"after");
    let upload = alice.upload(&bob, &sealed, "f").to_string();
    assert_eq!(post(&relay, "/upload", upload).await.0, 200);
    relay.stop().await;
}

#[tokio::test]
async fn an_upload_cut_short_is_a_broken_body_not_too_large() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start().await;
    let mut conn = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"to\": ",
        relay.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The client stops sending (half-close) well before its declared length.
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("answered")
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("ended before its Content-Length"), "{text}");
    relay.stop().await;
}
