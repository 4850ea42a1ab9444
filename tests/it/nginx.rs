//! The shipped nginx configuration in front of a relay, with a real nginx: TLS, the
//! HTTP redirect, WebSocket upgrades, polling, headers, and client IPs.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;
use whispr::client::{HttpClient, Tls, WsClient};
use whispr::protocol::{Codec, Identity, ServerFrame};

use crate::support::{
    config_with, drain_until_synced, free_port, have_program, next, scratch_dir, self_signed_cert,
    TestRelay,
};

struct Nginx {
    child: Child,
    dir: PathBuf,
    http: u16,
    https: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers before it exits. Killed
        // outright it leaves them running, orphaned, after the tests.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nginx/whispr.conf` with its ports, upstream and certificate put on this machine.
/// Several relays: listed in the upstream with consistent hashing turned on, as the
/// README's scaling section says.
fn render(relays: &[SocketAddr], http: u16, https: u16, cert: &Path, key: &Path) -> String {
    let servers: Vec<String> = relays
        .iter()
        .map(|r| format!("server {r} max_fails=3 fail_timeout=10s;"))
        .collect();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/whispr.conf")).unwrap();
    let swaps = [
        (
            "listen 80;".to_string(),
            format!("listen 127.0.0.1:{http};"),
        ),
        ("    listen [::]:80;\n".to_string(), String::new()),
        (
            "listen 443 ssl http2;".to_string(),
            format!("listen 127.0.0.1:{https} ssl http2;"),
        ),
        (
            "    listen [::]:443 ssl http2;\n".to_string(),
            String::new(),
        ),
        (
            "server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;".to_string(),
            servers.join("\n    "),
        ),
        (
            "# hash $remote_addr consistent;".to_string(),
            if relays.len() > 1 {
                "hash $remote_addr consistent;".to_string()
            } else {
                "# hash $remote_addr consistent;".to_string()
            },
        ),
        (
            "/etc/letsencrypt/live/chat.example.com/fullchain.pem".to_string(),
            cert.display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/chat.example.com/privkey.pem".to_string(),
            key.display().to_string(),
        ),
    ];
    let mut text = shipped;
    for (from, to) in swaps {
        assert!(
            text.contains(&from),
            "nginx/whispr.conf no longer contains {from:?}"
        );
        text = text.replace(&from, &to);
    }
    text
}

impl Nginx {
    /// Renders the config into a throwaway prefix, checks it with `nginx -t`, starts it.
    fn start(relays: &[SocketAddr], cert: &Path, key: &Path) -> Nginx {
        let dir = scratch_dir("nginx");
        let (http, https) = (free_port(), free_port());
        std::fs::write(
            dir.join("whispr.conf"),
            render(relays, http, https, cert, key),
        )
        .unwrap();
        let d = dir.display();
        let main = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/whispr.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let args = |extra: &[&str]| {
            let mut c = Command::new("nginx");
            c.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"));
            c.args(extra);
            c
        };
        let test = args(&["-t"]).output().expect("run nginx -t");
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = args(&["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            dir,
            http,
            https,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
        );
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.https)
    }
}

/// Opens a WebSocket through nginx from the given local address (all of 127/8 is
/// loopback), so nginx sees a client address different from its own.
async fn upgrade_from(
    local: IpAddr,
    nginx: &Nginx,
    tls: &Tls,
    spoofed_xff: Option<&str>,
) -> Result<impl Sized, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], nginx.https).into())
        .await
        .unwrap();
    let mut request = format!("wss://127.0.0.1:{}/v1/ws", nginx.https)
        .into_client_request()
        .unwrap();
    if let Some(xff) = spoofed_xff {
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    match tokio_tungstenite::client_async_tls_with_config(
        request,
        stream,
        None,
        Some(Connector::Rustls(tls.rustls_config())),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn a_relay_behind_the_shipped_nginx_config_serves_wss_https_and_real_client_ips() {
    if !have_program("nginx") || !have_program("openssl") {
        return;
    }
    let certs = scratch_dir("nginx-certs");
    let (cert, key) = self_signed_cert(&certs, "nginx");
    let relay = TestRelay::start_with(config_with(
        "trusted_proxies = [\"127.0.0.1/32\"]\nmax_connections_per_ip = 1",
    ))
    .await;
    let nginx = tokio::task::spawn_blocking({
        let (cert, key, addr) = (cert.clone(), key.clone(), relay.addr);
        move || Nginx::start(&[addr], &cert, &key)
    })
    .await
    .unwrap();
    let tls = Tls::with_ca_file(&cert).unwrap();
    let raw = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // HTTP redirects to HTTPS; HTTPS carries the security headers; /metrics is hidden.
    let resp = raw
        .get(format!("http://127.0.0.1:{}/v1/info", nginx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    assert!(resp.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://"));
    let resp = raw
        .get(format!("{}/readyz", nginx.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    for h in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
    ] {
        assert!(resp.headers().contains_key(h), "missing {h}");
    }
    assert_eq!(
        raw.get(format!("{}/metrics", nginx.base()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    // A wss session and an https send and poll, all through nginx.
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = WsClient::connect_with(&nginx.base(), &bob, None, Codec::MsgPack, Some(&tls))
        .await
        .unwrap();
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    let http = HttpClient::with_tls(&nginx.base(), Codec::Json, &tls).unwrap();
    let env = relay.seal(&alice, bob.public_key(), "through nginx");
    http.send(&env).await.unwrap();
    match next(&mut ws).await {
        ServerFrame::Deliver { envelope, .. } => assert_eq!(envelope.body, b"through nginx"),
        other => panic!("expected deliver, got {other:?}"),
    }
    ws.close().await;
    let carol = Identity::generate();
    http.send(&relay.seal(&alice, carol.public_key(), "polled"))
        .await
        .unwrap();
    let page = http.poll(&carol, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);

    // A Whispr v1 client's WebSocket through nginx gets a v1 message pushed.
    let (v1_alice, v1_bob) = (
        crate::support::v1::V1User::new(),
        crate::support::v1::V1User::new(),
    );
    let request = format!("wss://127.0.0.1:{}/ws/{}", nginx.https, v1_bob.enc_pub())
        .into_client_request()
        .unwrap();
    let (mut v1_ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(Connector::Rustls(tls.rustls_config())),
    )
    .await
    .expect("v1 WebSocket through nginx");
    let body = v1_alice.message(&v1_bob, "v1 via nginx", 1.0);
    let resp = raw
        .post(format!("{}/send", nginx.base()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let pushed = loop {
        use futures::StreamExt;
        match tokio::time::timeout(Duration::from_secs(5), v1_ws.next())
            .await
            .expect("a push")
            .unwrap()
            .unwrap()
        {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()
            }
            _ => continue,
        }
    };
    assert_eq!(pushed["to"], v1_bob.enc_pub());
    assert_eq!(v1_bob.open(&pushed), "v1 via nginx");
    drop(v1_ws);

    // Per-IP connection limits apply to the address nginx saw, and a forged
    // X-Forwarded-For from the client changes nothing.
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    let three: IpAddr = "127.0.0.3".parse().unwrap();
    let held = upgrade_from(two, &nginx, &tls, None)
        .await
        .expect("first connection from .2");
    assert_eq!(
        upgrade_from(two, &nginx, &tls, None).await.err(),
        Some(429),
        "second from .2"
    );
    assert_eq!(
        upgrade_from(two, &nginx, &tls, Some("198.51.100.7"))
            .await
            .err(),
        Some(429),
        "forged XFF"
    );
    let other = upgrade_from(three, &nginx, &tls, None).await;
    assert!(other.is_ok(), "another client IP has its own limit");
    drop(held);
    drop(other);
    drop(nginx);
    relay.stop().await;
    let _ = std::fs::remove_dir_all(certs);
}

#[tokio::test]
async fn two_nodes_on_one_redis_behind_nginx_deliver_whatever_node_takes_the_send() {
    if !have_program("nginx") || !have_program("openssl") {
        return;
    }
    let Some(redis) = crate::support::RedisServer::start().await else {
        return;
    };
    let certs = scratch_dir("nginx-certs");
    let (cert, key) = self_signed_cert(&certs, "nginx");
    // The README's recipe: the same settings on both nodes, store = "redis".
    let (a, b) = TestRelay::pair(
        redis.config("trusted_proxies = [\"127.0.0.1/32\"]\nws_catch_up_seconds = 60"),
    )
    .await;
    let nginx = tokio::task::spawn_blocking({
        let (cert, key, nodes) = (cert.clone(), key.clone(), [a.addr, b.addr]);
        move || Nginx::start(&nodes, &cert, &key)
    })
    .await
    .unwrap();
    let tls = Tls::with_ca_file(&cert).unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = WsClient::connect_with(&nginx.base(), &bob, None, Codec::MsgPack, Some(&tls))
        .await
        .expect("wss through nginx to one of the nodes");
    assert!(drain_until_synced(&mut ws, true).await.is_empty());

    // A send through nginx and one straight to each node: whichever node stores it,
    // the session (on one of them) gets each message once, promptly.
    let via_nginx = HttpClient::with_tls(&nginx.base(), Codec::Json, &tls).unwrap();
    let sends = [
        (via_nginx, "through nginx"),
        (a.http(), "through node a"),
        (b.http(), "through node b"),
    ];
    for (n, (client, body)) in sends.into_iter().enumerate() {
        client
            .send(&a.seal(&alice, bob.public_key(), body))
            .await
            .unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            crate::support::receive(&mut ws, 1, true),
        )
        .await
        .expect("delivered across nodes well before the 60 s catch-up");
        assert_eq!(got, vec![(n as u64 + 1, body.to_string())]);
    }
    crate::support::assert_silent(&mut ws, 300).await;
    ws.close().await;
    drop(nginx);
    a.stop().await;
    b.stop().await;
}
