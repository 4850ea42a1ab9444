//! `redis-server` processes started by the tests on free ports, and waiting for what a
//! relay subscribed to.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use whispr::testing::redis_link::RedisTarget;

use super::{have_program, scratch_dir};

/// A `redis-server` without persistence, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    pub(crate) url: String,
}

/// A plain connection to the Redis at `url`, for what a test reads or injects itself.
pub(crate) async fn plain_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

/// The key `part` of `who`'s native inbox, named as the relay names it.
pub(crate) fn inbox_key(who: &whispr::protocol::Identity, part: &str) -> String {
    whispr::testing::redis_keys::inbox(&who.public_key().into(), part)
}

/// One Redis server as the store's target.
pub(crate) fn single(url: &str) -> RedisTarget {
    RedisTarget::single(url)
}

/// A Redis store on the server at `url` with the conformance limits and `options`, its
/// connection timing out after `options.response_timeout` as the relay's does.
pub(crate) async fn store_with(
    url: &str,
    options: whispr::testing::store::RedisOptions,
) -> std::sync::Arc<whispr::testing::store::RedisStore> {
    let link = whispr::testing::redis_link::RedisLink::connect_with_timeout(
        &single(url),
        options.response_timeout,
    )
    .await
    .expect("connect to the test redis");
    let store = whispr::testing::store::RedisStore::open(
        link,
        whispr::testing::store::conformance::LIMITS,
        options,
    )
    .await
    .expect("open the store");
    std::sync::Arc::new(store)
}

impl RedisServer {
    /// The test configuration with `store = "redis"` on this server, plus `extra` TOML.
    pub(crate) fn config(&self, extra: &str) -> whispr::config::Config {
        crate::support::config_with(&format!(
            "store = \"redis\"\nredis_url = {:?}\n{extra}",
            self.url
        ))
    }

    /// A plain connection to this server (see [`plain_conn`]).
    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        plain_conn(&self.url).await
    }

    /// Starts one and waits until it answers PING; `None` when it is not installed.
    pub(crate) async fn start() -> Option<Self> {
        Self::start_with(free_port(), &[]).await
    }

    /// Starts one on `port` with extra `redis-server` arguments.
    pub(crate) async fn start_with(port: u16, extra: &[&str]) -> Option<Self> {
        Self::start_in(port, &scratch_dir("redis"), extra).await
    }

    /// Starts one on `port` working in `dir` (where persistence files go), so a
    /// restart in the same directory reads back what the last one wrote.
    pub(crate) async fn start_in(port: u16, dir: &std::path::Path, extra: &[&str]) -> Option<Self> {
        if !have_program("redis-server") {
            return None;
        }
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // With `--requirepass`, the URL carries the password (checks and tests use it).
        let auth = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map_or(String::new(), |pw| format!(":{pw}@"));
        let server = RedisServer {
            child,
            port,
            url: format!("redis://{auth}127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        Some(server)
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "redis-server at {} did not answer PING within 5 s",
            self.url
        );
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server process.
    pub(crate) fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} redis-server");
    }

    /// Empties the server, so a check's sweep and depth see only its own inboxes.
    pub(crate) async fn flush(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("FLUSHALL");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (5 s guard) until `n` connections are subscribed to `channel` on the Redis at
/// `url`: a node has subscribed, so what is published next reaches it.
pub(crate) async fn wait_subscribers(url: &str, channel: &str, n: i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..500 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        if count == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{channel} never had {n} subscribers");
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
