//! Starting real relays on 127.0.0.1:0 and talking to them.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use whispr::client::{HttpClient, Ready, WsClient};
use whispr::clock::Clock;
use whispr::config::Config;
use whispr::protocol::{Codec, Cursor, Envelope, Identity, PublicKey, ServerFrame};
use whispr::server::Server;

mod close;
mod redis_server;
pub mod v1;

pub use close::close_code;
pub(crate) use redis_server::{
    free_port, inbox_key, plain_conn, single, store_with, wait_subscribers, RedisServer,
};

/// A relay running in this process on a free port.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub base: String,
    pub clock: Clock,
    /// Notify to reload the TLS certificate (what SIGHUP does in the binary).
    pub reload: std::sync::Arc<tokio::sync::Notify>,
    /// When the relay's periodic catch-up first re-reads every inbox: no sooner than
    /// `ws_catch_up_seconds` after the relay was started.
    catch_up: tokio::time::Instant,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Defaults with limits high enough that tests hit only the limit they test.
pub fn config() -> Config {
    Config::from_toml(
        "max_messages_per_second = 100000\nburst_messages = 100000\nmax_messages_per_second_per_ip = 100000\nburst_messages_per_ip = 100000\nmax_messages_per_recipient = 5000\nlog_level = \"warn\"\n",
    )
    .expect("test config")
}

/// A config from TOML on top of [`config`]'s lenient limits.
pub fn config_with(toml: &str) -> Config {
    let base = toml::to_string(&config()).expect("serialise config");
    let mut table: toml::Table = base.parse().expect("parse config");
    let extra: toml::Table = toml.parse().expect("test TOML");
    table.extend(extra);
    Config::from_toml(&table.to_string()).expect("valid test config")
}

impl TestRelay {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_clocked(config, Clock::manual()).await
    }

    /// Two relay nodes with one configuration and one clock (several nodes on one
    /// Redis).
    pub async fn pair(config: Config) -> (TestRelay, TestRelay) {
        let a = TestRelay::start_with(config.clone()).await;
        let b = TestRelay::start_clocked(config, a.clock.clone()).await;
        (a, b)
    }

    pub async fn start_clocked(config: Config, clock: Clock) -> Self {
        // Taken before the relay exists, so its catch-up task starts later than this.
        let catch_up =
            tokio::time::Instant::now() + Duration::from_secs(config.ws_catch_up_seconds);
        whispr::telemetry::init(&config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let server = Server::new(config).with_clock(clock.clone());
        let reload = server.reload_handle();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("relay ran");
        });
        TestRelay {
            addr,
            base: format!("http://{addr}"),
            clock,
            reload,
            catch_up,
            stop: Some(tx),
            task,
        }
    }

    /// `what`, which must finish before this relay's first periodic catch-up: a
    /// delivery then came from a wake-up (pub/sub across nodes), since the catch-up that
    /// would make up for a lost one had not run yet.
    pub async fn before_catch_up<F: std::future::Future>(&self, what: F) -> F::Output {
        tokio::time::timeout_at(self.catch_up, what)
            .await
            .expect("delivered before the catch-up bound (ws_catch_up_seconds), so by a wake-up")
    }

    /// Signals shutdown and waits for the relay to finish draining.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("relay stops within its grace period")
            .expect("relay task");
    }

    pub fn http(&self) -> HttpClient {
        HttpClient::new(&self.base, Codec::Json).expect("client")
    }

    pub fn http_with(&self, codec: Codec) -> HttpClient {
        HttpClient::new(&self.base, codec).expect("client")
    }

    pub async fn connect(&self, who: &Identity) -> (WsClient, Ready) {
        self.connect_at(who, None, Codec::Json).await
    }

    pub async fn connect_at(
        &self,
        who: &Identity,
        cursor: Option<Cursor>,
        codec: Codec,
    ) -> (WsClient, Ready) {
        WsClient::connect(&self.base, who, cursor, codec)
            .await
            .expect("connect and authenticate")
    }

    /// The value of the `/metrics` sample whose line starts with `sample` (name and
    /// labels, e.g. `whispr_http_connections{pool="served"}`); 0 when absent.
    /// The status of `GET /readyz`.
    pub async fn readyz(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.base))
            .await
            .expect("GET /readyz")
            .status()
            .as_u16()
    }

    /// Waits (10 s guard) until `/readyz` answers 200, e.g. once the store is back.
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if self.readyz().await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz did not answer 200 within 10 s");
    }

    pub async fn metric(&self, sample: &str) -> i64 {
        metric_at(&reqwest::Client::new(), &self.base, sample).await
    }

    /// An envelope signed now (by the relay's clock).
    pub fn seal(&self, from: &Identity, to: PublicKey, body: &str) -> Envelope {
        Envelope::seal(
            from,
            to,
            self.clock.now_ms(),
            false,
            body.as_bytes().to_vec(),
        )
    }
}

/// The next frame within 5 s.
pub async fn next(ws: &mut WsClient) -> ServerFrame {
    tokio::time::timeout(Duration::from_secs(5), ws.next_frame())
        .await
        .expect("a frame within 5 s")
        .expect("a frame")
}

/// Receives until `synced`, returning the delivered (seq, body) pairs and acking each.
pub async fn drain_until_synced(ws: &mut WsClient, ack: bool) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    loop {
        match next(ws).await {
            ServerFrame::Deliver {
                seq: Some(seq),
                envelope,
                ..
            } => {
                got.push((seq, String::from_utf8(envelope.body.clone()).expect("utf8")));
                if ack {
                    ws.ack(seq).await.expect("ack");
                }
            }
            ServerFrame::Synced { .. } => return got,
            other => panic!("unexpected frame while draining: {other:?}"),
        }
    }
}

/// Receives `n` deliveries (acking each when `ack`).
pub async fn receive(ws: &mut WsClient, n: usize, ack: bool) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(ws).await {
            ServerFrame::Deliver {
                seq: Some(seq),
                envelope,
                ..
            } => {
                got.push((seq, String::from_utf8(envelope.body.clone()).expect("utf8")));
                if ack {
                    ws.ack(seq).await.expect("ack");
                }
            }
            ServerFrame::Synced { .. } => {}
            other => panic!("unexpected frame while receiving: {other:?}"),
        }
    }
    got
}

/// Asserts that nothing arrives for `ms` milliseconds.
pub async fn assert_silent(ws: &mut WsClient, ms: u64) {
    if let Ok(frame) = tokio::time::timeout(Duration::from_millis(ms), ws.next_frame()).await {
        panic!("expected silence, got {frame:?}");
    }
}

/// Whether an external program is installed. Missing: a loud skip, or a failure under
/// `WHISPR_TEST_STRICT=1` (which CI sets, after installing it).
pub fn have_program(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|dir| dir.join(name).is_file())
        })
        .unwrap_or(false);
    if !found {
        if std::env::var("WHISPR_TEST_STRICT").as_deref() == Ok("1") {
            panic!("{name} is not installed and WHISPR_TEST_STRICT=1: install it (see .ci/run)");
        }
        eprintln!("\n*** SKIPPED: {name} is not installed; this test needs it (set WHISPR_TEST_STRICT=1 to fail instead) ***\n");
    }
    found
}

/// A fresh directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "whispr-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A self-signed certificate for 127.0.0.1 made with the operator guide's openssl
/// command (RSA 2048 instead of 4096 to keep tests quick), plus
/// `basicConstraints=critical,CA:FALSE` so that rustls clients (webpki) accept it as a
/// trusted end-entity certificate (the README says why). Returns (cert, key).
pub fn self_signed_cert(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", "/C=BG/ST=Sofia/L=Sofia/O=Whispr/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// A TCP connection to `addr` from the local address `from` (any of 127.0.0.0/8 on
/// Linux), so a test can be several clients as the relay's per-address caps see them.
pub async fn connect_from(from: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind the client address");
    socket.connect(addr).await.expect("connect")
}

/// One HTTP/1.1 answer read off a raw socket: status, headers (lower-case names) and
/// body (by its Content-Length).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads one answer (within 10 s); `None` when the relay closed the connection (or
/// reset it) before a byte of one.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<RawResponse> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) if buf.is_empty() => return None,
                Ok(0) | Err(_) => panic!("connection ended inside an answer's head"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("a length"));
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("body");
            assert!(n > 0, "connection ended inside a body");
            body.extend_from_slice(&chunk[..n]);
        }
        Some(RawResponse {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer or a close within 10 s")
}

/// Writes `request` and reads its answer.
pub async fn raw_request(stream: &mut tokio::net::TcpStream, request: &str) -> Option<RawResponse> {
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    read_response(stream).await
}

/// Waits (up to 30 s) until the relay closes `stream`, discarding what it sends first.
pub async fn closed_by_relay(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let until_closed = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), until_closed)
        .await
        .expect("the relay closes the connection");
    got
}

/// [`TestRelay::metric`] from the relay at `base` through `client` (an https one for a
/// TLS relay).
pub async fn metric_at(client: &reqwest::Client, base: &str, sample: &str) -> i64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    text.lines()
        .find_map(|l| l.strip_prefix(sample))
        .map_or(0, |v| v.trim().parse().expect("an integer sample"))
}

/// An https client that trusts exactly `ca`.
pub fn https_client(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read the CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("https client")
}

impl TestRelay {
    /// [`TestRelay::metric`] as a float, for the tests that compare with one.
    pub async fn metric_value(&self, series: &str) -> f64 {
        self.metric(series).await as f64
    }

    /// Scrapes until `series` reaches `at_least` (an event the relay reports, not a
    /// guess at how long it takes), for at most 30 s.
    pub async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        for _ in 0..3000 {
            let v = self.metric_value(series).await;
            if v >= at_least {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{series} never reached {at_least}");
    }
}

/// A WebSocket client that writes frames as the test builds them (unmasked, RSV bits,
/// reserved opcodes, bad UTF-8: what no library sends) and reads the relay's raw.
pub struct RawWs {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// What the relay's side of a [`RawWs`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum RawEnd {
    /// A close frame with this code.
    Close(u16),
    /// The connection ended without a close frame (a client library reports 1006).
    NoClose(String),
}

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const FIN: u8 = 0x80;

impl RawWs {
    /// Upgrades `path` on the relay.
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        Self::connect_with(socket, addr, path).await
    }

    /// Upgrades `path` over a socket the caller configured (a small receive buffer).
    pub async fn connect_with(socket: tokio::net::TcpSocket, addr: SocketAddr, path: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.expect("response");
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        RawWs {
            stream,
            buf: buf[end..].to_vec(),
        }
    }

    /// One frame: `first` is FIN, RSV and opcode; masked as a client must unless told.
    pub fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Writes bytes; an error (the relay already closed) is returned, not a panic.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// The next frame from the relay: (opcode, payload), or why there is none.
    pub async fn read_frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((op, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok((op, payload));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err("end of stream".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// (opcode, payload, bytes used) of the first whole unmasked frame in `buf`.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((b0 & 0x0f, payload, at + len))
}
