//! Relays on Redis when Redis misbehaves or is shared: rate limits that hold across
//! nodes, and Redis killed and restarted under traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use whispr::client::ClientError;
use whispr::protocol::{ErrorCode, Identity};

use crate::redis_store::script_calls;
use crate::support::{config_with, drain_until_synced, receive, scratch_dir, TestRelay};
use crate::support::{free_port, RedisServer};

/// Sends `body` from `from` to `to` through `relay`; the refusal's code and status.
async fn send(
    relay: &TestRelay,
    from: &Identity,
    to: &Identity,
    body: &str,
) -> Result<(), (ErrorCode, Option<u16>)> {
    match relay
        .http()
        .send(&relay.seal(from, to.public_key(), body))
        .await
    {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { code, status, .. }) => Err((code, status)),
        Err(other) => panic!("expected an answer from the relay, got {other}"),
    }
}

#[tokio::test]
async fn rate_limits_are_shared_by_every_node_on_one_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // One message per second per sender with a burst of three; per-IP roomy.
    let (a, b) = TestRelay::pair(redis.config(
        "max_messages_per_second = 1\nburst_messages = 3\n\
         max_messages_per_second_per_ip = 1000\nburst_messages_per_ip = 1000",
    ))
    .await;
    let (alice, bob) = (Identity::generate(), Identity::generate());

    send(&a, &alice, &bob, "1").await.unwrap();
    send(&b, &alice, &bob, "2").await.unwrap();
    send(&a, &alice, &bob, "3").await.unwrap();
    // Per-node buckets would let this through on b (its own bucket holds one token).
    assert_eq!(
        send(&b, &alice, &bob, "4").await,
        Err((ErrorCode::RateLimited, Some(429)))
    );
    // Another sender has its own bucket.
    let carol = Identity::generate();
    send(&b, &carol, &bob, "5").await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn per_ip_limits_are_shared_too() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = TestRelay::pair(
        redis.config("max_messages_per_second_per_ip = 1\nburst_messages_per_ip = 2"),
    )
    .await;
    let bob = Identity::generate();
    send(&a, &Identity::generate(), &bob, "1").await.unwrap();
    send(&b, &Identity::generate(), &bob, "2").await.unwrap();
    assert_eq!(
        send(&a, &Identity::generate(), &bob, "3").await,
        Err((ErrorCode::RateLimited, Some(429)))
    );
    a.stop().await;
    b.stop().await;
}

/// Two nodes leasing tokens from one shared bucket: in every window of length `T`, all
/// nodes together admit at most `burst + rate × (T + lease)` (the bound in
/// `relay::ratelimit`'s module doc), and a node pays one Redis call per lease, not per
/// message.
#[tokio::test]
async fn leased_tokens_overshoot_a_shared_limit_by_at_most_rate_times_lease() {
    use std::sync::Arc;
    use std::time::Instant;
    use whispr::testing::redis_link::{RedisLink, RedisTarget};
    use whispr::testing::relay::RateLimits;

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (rate, burst, lease) = (2000u32, 100u32, Duration::from_millis(50));
    let link = RedisLink::connect(&RedisTarget::single(&redis.url))
        .await
        .unwrap();
    let node = || {
        let mut limits = RateLimits::new((rate, burst), (1_000_000, 1_000_000)).with_lease(lease);
        limits.share(link.clone());
        Arc::new(limits)
    };
    let (a, b) = (node(), node());
    let sender = Identity::generate().public_key();
    // The burst, taken by one node: one lease of `rate × lease` = 100 tokens per call.
    let before = script_calls(&redis.url).await;
    for _ in 0..burst {
        a.check_sender(&sender).await.unwrap();
    }
    // SCRIPT LOAD is no call; a refill during the loop may cost one more lease.
    let leases = script_calls(&redis.url).await - before;
    assert!(leases <= 2, "{burst} tokens took {leases} script calls");

    // Both nodes, four tasks each, as fast as Redis answers.
    let admitted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = [a, b]
        .into_iter()
        .flat_map(|n| std::iter::repeat_n(n, 4))
        .map(|limits| {
            let admitted = admitted.clone();
            tokio::spawn(async move {
                for _ in 0..1500 {
                    if limits.check_sender(&sender).await.is_ok() {
                        admitted.lock().unwrap().push(Instant::now());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut at = admitted.lock().unwrap().clone();
    at.sort();
    assert!(at.len() > burst as usize, "{} admitted", at.len());
    let window = Duration::from_millis(100);
    let bound = burst as f64 + rate as f64 * (window + lease).as_secs_f64() + 1.0;
    let mut busiest = 0;
    for (i, start) in at.iter().enumerate() {
        let inside = at[i..].iter().take_while(|t| **t - *start < window).count();
        busiest = busiest.max(inside);
    }
    eprintln!(
        "admitted {} in total; the busiest {window:?} held {busiest}, bound {bound}",
        at.len()
    );
    assert!(
        busiest as f64 <= bound,
        "{busiest} admitted in {window:?}, bound {bound}"
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_under_traffic_loses_no_accepted_message() {
    let dir = scratch_dir("redis-aof");
    let port = free_port();
    // Every write is on disk before Redis answers: an accepted message survives a kill.
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let Some(redis) = RedisServer::start_in(port, &dir, &durable).await else {
        return;
    };
    let config = redis
        .config("ws_catch_up_seconds = 1\nmax_messages_per_second = 1000\nburst_messages = 1000");
    let relay = TestRelay::start_with(config).await;
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let (mut ws, _) = relay.connect(&bob).await;
    assert!(drain_until_synced(&mut ws, true).await.is_empty());
    assert_eq!(relay.readyz().await, 200);

    // Traffic before, during and after the outage; every answer is either "accepted"
    // or a clear 503.
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    let mut redis = Some(redis);
    for n in 0..60u32 {
        if n == 20 {
            // Carol is offline: her message waits in Redis through the outage.
            send(&relay, &alice, &carol, "for carol").await.unwrap();
            drop(redis.take());
            assert_eq!(relay.readyz().await, 503, "unready while Redis is away");
        }
        if n == 40 {
            redis = RedisServer::start_in(port, &dir, &durable).await;
            relay.wait_ready().await;
        }
        match send(&relay, &alice, &bob, &format!("m{n}")).await {
            Ok(()) => {
                accepted.insert(format!("m{n}"));
            }
            Err((code, status)) => {
                assert_eq!((code, status), (ErrorCode::Unavailable, Some(503)));
                assert!((20..40).contains(&n), "m{n} refused while Redis was up");
                refused += 1;
            }
        }
    }
    assert!(refused >= 15, "sends were refused during the outage");
    assert!(accepted.len() >= 40);

    // Bob's session stayed up through the outage and gets every accepted message once.
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        receive(&mut ws, accepted.len(), true),
    )
    .await
    .expect("every accepted message arrives");
    let bodies: Vec<String> = got.into_iter().map(|(_, body)| body).collect();
    let unique: BTreeSet<String> = bodies.iter().cloned().collect();
    assert_eq!(unique.len(), bodies.len(), "no duplicates: {bodies:?}");
    assert_eq!(unique, accepted);

    // Carol's message, accepted before Redis was killed, is still there.
    let (mut carol_ws, _) = relay.connect(&carol).await;
    let carol_got = drain_until_synced(&mut carol_ws, true).await;
    assert_eq!(
        carol_got.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        vec!["for carol".to_owned()]
    );
    ws.close().await;
    carol_ws.close().await;
    relay.stop().await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn ca_and_server_cert(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (cert, key, csr) = (
        dir.join("redis.pem"),
        dir.join("redis-key.pem"),
        dir.join("redis.csr"),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl")
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let s = |p: &std::path::Path| p.as_os_str().to_owned();
    let o = |t: &str| std::ffi::OsString::from(t);
    run(&[
        &o("req"),
        &o("-x509"),
        &o("-nodes"),
        &o("-days"),
        &o("2"),
        &o("-newkey"),
        &o("rsa:2048"),
        &o("-keyout"),
        &s(&ca_key),
        &o("-out"),
        &s(&ca),
        &o("-subj"),
        &o("/CN=whispr test CA"),
        &o("-addext"),
        &o("basicConstraints=critical,CA:TRUE"),
    ]);
    run(&[
        &o("req"),
        &o("-nodes"),
        &o("-newkey"),
        &o("rsa:2048"),
        &o("-keyout"),
        &s(&key),
        &o("-out"),
        &s(&csr),
        &o("-subj"),
        &o("/CN=127.0.0.1"),
    ]);
    run(&[
        &o("x509"),
        &o("-req"),
        &o("-in"),
        &s(&csr),
        &o("-CA"),
        &s(&ca),
        &o("-CAkey"),
        &s(&ca_key),
        &o("-CAcreateserial"),
        &o("-days"),
        &o("2"),
        &o("-extfile"),
        &s(&ext),
        &o("-out"),
        &s(&cert),
    ]);
    [ca, cert, key]
}

/// A process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_relay_reaches_redis_over_tls_with_a_password_and_a_private_ca() {
    if !crate::support::have_program("redis-server") || !crate::support::have_program("openssl") {
        return;
    }
    let dir = scratch_dir("redis-tls");
    let [ca, cert, key] = ca_and_server_cert(&dir);
    let port = free_port();
    let _redis = Killed(
        std::process::Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--requirepass", "s3cret"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server with TLS"),
    );
    let url = format!("rediss://:s3cret@127.0.0.1:{port}");
    let toml = |url: &str| {
        format!(
            "store = \"redis\"\nredis_url = {url:?}\nredis_tls_ca = {:?}",
            ca.display().to_string()
        )
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relay = TestRelay::start_with(config_with(&toml(&url))).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    send(&relay, &alice, &bob, "over tls").await.unwrap();
    let (mut ws, _) = relay.connect(&bob).await;
    let got = drain_until_synced(&mut ws, true).await;
    assert_eq!(got, vec![(1, "over tls".to_owned())]);
    ws.close().await;
    relay.stop().await;

    // A wrong password is a readable start-up error that does not print the password.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wrong = format!("rediss://:wrong-pass@127.0.0.1:{port}");
    let err = whispr::server::Server::new(config_with(&toml(&wrong)))
        .run(listener, std::future::pending())
        .await
        .expect_err("a wrong Redis password stops the start");
    let text = err.to_string();
    assert!(!text.contains("wrong-pass"), "password redacted: {text}");
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
}
