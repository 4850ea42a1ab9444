//! The chat commands over other transports: TLS with a self-signed certificate, and
//! HTTP polling when a proxy refuses WebSockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::cli::{keygen, relay, run, send, stderr, stdout, Listen};
use crate::support::{config_with, have_program, scratch_dir, TestRelay};
use whispr::clock::Clock;

/// A certificate made the way a user would for a private relay: plain
/// `openssl req -x509` (which marks it as a CA; the client accepts it by pinning).
fn users_self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

#[tokio::test]
async fn chat_over_tls_with_a_self_signed_certificate() {
    if !have_program("openssl") {
        return;
    }
    let dir = scratch_dir("cli-tls");
    let (cert, key) = users_self_signed_cert(&dir);
    let config = config_with(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let relay = TestRelay::start_clocked(config, Clock::system()).await;
    let https = format!("https://{}", relay.addr);
    let wss = format!("wss://{}", relay.addr);
    let ca = cert.to_str().unwrap();
    let (alice_key, _) = keygen(&dir, "alice").await;
    let (bob_key, bob) = keygen(&dir, "bob").await;
    let alice = alice_key.to_str().unwrap();

    // Without --ca the certificate is not trusted: unreachable (3), saying why.
    let out = run(&[
        "send", "--server", &https, "--key", alice, "--to", &bob, "hi",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );

    let mut listen = Listen::start(&wss, &bob_key, &["--ca", ca]);
    listen.stderr_line_with("connected (WebSocket)").await;
    let out = run(&[
        "send", "--server", &https, "--ca", ca, "--key", alice, "--to", &bob, "over TLS",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listen.next().await["text"], "over TLS");
    listen.stop().await;
    relay.stop().await;
}

/// A reverse proxy that answers every WebSocket upgrade with 404 (as a proxy without
/// WebSocket support might) and passes plain HTTP through to `upstream`.
async fn proxy_refusing_websockets(upstream: SocketAddr) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let n = client.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
                if text.contains("upgrade: websocket") {
                    let body = r#"{"error":"not_found","detail":"no WebSockets here"}"#;
                    let answer = format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                if server.write_all(&head[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn listen_falls_back_to_http_polling_when_websockets_are_refused() {
    let relay = relay().await;
    let proxy = format!("http://{}", proxy_refusing_websockets(relay.addr).await);
    let dir = scratch_dir("cli-poll");
    let (alice_key, _) = keygen(&dir, "alice").await;
    let (bob_key, bob) = keygen(&dir, "bob").await;
    send(&proxy, &alice_key, &bob, "queued").await;
    let mut listen = Listen::start(&proxy, &bob_key, &[]);
    let line = listen.stderr_line_with("polling").await;
    assert!(line.contains("404"), "{line}");
    assert_eq!(listen.next().await["text"], "queued");
    send(&proxy, &alice_key, &bob, "live").await;
    assert_eq!(listen.next().await["text"], "live");
    listen.stop().await;
    // Both were acknowledged (the saved cursor carries the last): a read finds nothing.
    let out = run(&[
        "inbox",
        "--server",
        &relay.base,
        "--key",
        bob_key.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    relay.stop().await;
}
