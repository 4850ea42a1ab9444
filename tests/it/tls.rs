//! TLS termination in the relay: real certificates from openssl, real handshakes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    config_with, free_port, have_program, https_client, metric_at, scratch_dir, self_signed_cert,
    TestRelay,
};

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> whispr::config::Config {
    config_with(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ))
}

#[tokio::test]
async fn https_serves_with_the_guides_certificate_and_plain_http_fails_cleanly() {
    if !have_program("openssl") {
        return;
    }
    let dir = scratch_dir("tls");
    let (cert, key) = self_signed_cert(&dir, "a");
    let relay = TestRelay::start_with(tls_config(&cert, &key)).await;
    let url = format!("https://{}/readyz", relay.addr);
    let resp = https_client(&cert).get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Plain HTTP to the TLS port: the handshake fails, the connection closes, nothing hangs.
    let mut tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the relay closes a non-TLS connection promptly"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // An untrusting client is refused by its own verification; the relay keeps serving.
    assert!(reqwest::get(&url).await.is_err());
    assert_eq!(
        https_client(&cert)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    relay.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_with_a_readable_error() {
    if !have_program("openssl") {
        return;
    }
    let dir = scratch_dir("tls-bad");
    let (cert_a, key_a) = self_signed_cert(&dir, "a");
    let (_cert_b, key_b) = self_signed_cert(&dir, "b");
    let missing = dir.join("missing.pem");
    let cases = [
        (tls_config(&missing, &key_a), "missing.pem"),
        (tls_config(&cert_a, &missing), "missing.pem"),
        (tls_config(&key_a, &key_a), "certificate"),
        (tls_config(&cert_a, &cert_a), "key"),
        (tls_config(&cert_a, &key_b), "do not belong together"),
    ];
    for (config, expected) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = whispr::server::Server::new(config)
            .run(listener, std::future::pending())
            .await
            .expect_err("refuses to start");
        let text = err.to_string();
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until the relay has counted `n` TLS reloads that ended with `result`, scraped
/// from its plain-HTTP metrics listener at `metrics` (whichever certificate is served).
async fn wait_reloads(metrics: &str, result: &str, n: i64) {
    let client = reqwest::Client::new();
    let sample = format!("whispr_tls_reloads_total{{result=\"{result}\"}}");
    for _ in 0..3000 {
        if metric_at(&client, metrics, &sample).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sample} never reached {n}");
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_only() {
    if !have_program("openssl") {
        return;
    }
    let dir = scratch_dir("tls-reload");
    let (cert_a, key_a) = self_signed_cert(&dir, "a");
    let (cert_b, key_b) = self_signed_cert(&dir, "b");
    let live_cert = dir.join("live-cert.pem");
    let live_key = dir.join("live-key.pem");
    std::fs::copy(&cert_a, &live_cert).unwrap();
    std::fs::copy(&key_a, &live_key).unwrap();
    let metrics_port = free_port();
    let mut config = tls_config(&live_cert, &live_key);
    config.metrics_listen = Some(([127, 0, 0, 1], metrics_port).into());
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let relay = TestRelay::start_with(config).await;
    let url = format!("https://{}/healthz", relay.addr);
    // A client that keeps its connection open across the reload.
    let old = https_client(&cert_a);
    assert_eq!(old.get(&url).send().await.unwrap().status().as_u16(), 200);

    // A WebSocket session made before the reload, which must outlive it.
    let (alice, bob) = (
        whispr::protocol::Identity::generate(),
        whispr::protocol::Identity::generate(),
    );
    let tls_a = whispr::client::Tls::with_ca_file(&cert_a).unwrap();
    let wss = format!("wss://{}", relay.addr);
    let (mut session, _) = whispr::client::WsClient::connect_with(
        &wss,
        &bob,
        None,
        whispr::protocol::Codec::Json,
        Some(&tls_a),
    )
    .await
    .unwrap();
    crate::support::drain_until_synced(&mut session, true).await;

    // Rotate the files, as certbot would, then reload.
    std::fs::copy(&cert_b, &live_cert).unwrap();
    std::fs::copy(&key_b, &live_key).unwrap();
    relay.reload.notify_one();
    // The reload ran and succeeded before anything is asserted about certificates.
    wait_reloads(&metrics, "ok", 1).await;
    let mut switched = false;
    for _ in 0..50 {
        if https_client(&cert_b).get(&url).send().await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "new connections get the new certificate");
    assert!(
        https_client(&cert_a).get(&url).send().await.is_err(),
        "and no longer the old one"
    );
    assert_eq!(
        old.get(&url).send().await.unwrap().status().as_u16(),
        200,
        "the connection made before the reload still works"
    );

    let https_b = whispr::client::HttpClient::with_tls(
        &format!("https://{}", relay.addr),
        whispr::protocol::Codec::Json,
        &whispr::client::Tls::with_ca_file(&cert_b).unwrap(),
    )
    .unwrap();
    https_b
        .send(&relay.seal(&alice, bob.public_key(), "after the reload"))
        .await
        .unwrap();
    match crate::support::next(&mut session).await {
        whispr::protocol::ServerFrame::Deliver { envelope, .. } => {
            assert_eq!(envelope.body, b"after the reload")
        }
        other => panic!("the old session should still deliver, got {other:?}"),
    }
    session.close().await;

    // A broken rotation keeps the working certificate.
    std::fs::write(&live_cert, b"garbage").unwrap();
    relay.reload.notify_one();
    // It ran, and failed: what follows is about a reload that happened.
    wait_reloads(&metrics, "failed", 1).await;
    let client = reqwest::Client::new();
    let ok = metric_at(&client, &metrics, "whispr_tls_reloads_total{result=\"ok\"}").await;
    assert_eq!(ok, 1, "the broken rotation was not counted as a reload");
    assert_eq!(
        https_client(&cert_b)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    relay.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
