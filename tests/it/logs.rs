//! The relay's own log, read from `whispr serve`'s stderr as an operator's file or
//! journal would: plain text, and a line for each failure a client causes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr};

use whispr::client::{Tls, WsClient};
use whispr::protocol::{auth_signing_bytes, ClientFrame, Codec, Identity, ServerFrame};

use crate::support::{scratch_dir, self_signed_cert};

/// `whispr serve` with its stderr on a pipe (not a terminal), read line by line.
struct ServeProcess {
    child: Child,
    stderr: tokio::io::Lines<BufReader<ChildStderr>>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl ServeProcess {
    async fn start(args: &[&str]) -> Self {
        let mut child = crate::cli::whispr()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start whispr serve");
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut relay = ServeProcess {
            child,
            stderr,
            seen: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = relay.line_with("whispr relay listening").await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("the listening line names its address");
        relay.addr = addr.parse().expect("an address");
        relay
    }

    /// Reads stderr until a line containing `needle` (the relay logging it is the
    /// event waited for; 20 s only bounds a broken relay).
    async fn line_with(&mut self, needle: &str) -> String {
        let read = async {
            while let Some(line) = self.stderr.next_line().await.expect("stderr") {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            panic!(
                "whispr serve ended without logging {needle:?}: {:?}",
                self.seen
            )
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.seen))
    }

    async fn stop(mut self) -> Vec<String> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.seen
    }
}

#[tokio::test]
async fn a_piped_log_is_plain_text_with_failed_handshakes_and_sign_ins() {
    if !crate::support::have_program("openssl") {
        return;
    }
    let dir = scratch_dir("logs");
    let (cert, key) = self_signed_cert(&dir, "relay");
    let mut relay = ServeProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    // A plain-HTTP client on the TLS port: the handshake fails, with the client's IP.
    let mut plain = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let line = relay.line_with("TLS handshake failed").await;
    assert!(
        line.contains("INFO") && line.contains("ip=127.0.0.1") && line.contains("reason="),
        "{line}"
    );

    // A sign-in signed by another key than the one it claims.
    let tls = Tls::with_ca_file(&cert).unwrap();
    let base = format!("https://{}", relay.addr);
    let (mut ws, challenge, origin) = WsClient::open_with(&base, Codec::Json, Some(&tls))
        .await
        .unwrap();
    let ServerFrame::Challenge { nonce, .. } = challenge else {
        panic!("challenge first")
    };
    let (claimed, signer) = (Identity::generate(), Identity::generate());
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let nonce: [u8; 32] = nonce.try_into().unwrap();
    let sig = signer.sign(&auth_signing_bytes(
        &nonce,
        &claimed.public_key(),
        ts,
        &origin,
    ));
    ws.send_frame(&ClientFrame::Auth {
        key: claimed.public_key().as_bytes().to_vec(),
        timestamp: ts,
        signature: sig.to_bytes().to_vec(),
        cursor: None,
    })
    .await
    .unwrap();
    let line = relay.line_with("authentication refused").await;
    assert!(
        line.contains("INFO") && line.contains("ip=127.0.0.1") && line.contains("reason="),
        "{line}"
    );

    // Forwarding headers from a peer outside trusted_proxies: one WARN naming the key.
    let https = crate::support::https_client(&cert);
    for _ in 0..2 {
        let resp = https
            .get(format!("{base}/v1/info"))
            .header("X-Forwarded-For", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let line = relay.line_with("not in trusted_proxies").await;
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );

    let lines = relay.stop().await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("not in trusted_proxies"))
            .count(),
        1,
        "once an hour per peer: {lines:?}"
    );
    for line in lines {
        assert!(
            !line.contains('\x1b'),
            "ANSI escape in a piped log: {line:?}"
        );
    }
}
