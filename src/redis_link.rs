//! One way to talk to Redis for everything that shares state between nodes (the store,
//! the shared rate limits): a single server through redis-rs's self-reconnecting
//! `ConnectionManager`, or a Redis Cluster through its cluster connection, which routes
//! each command by its key's slot and follows MOVED/ASK and topology changes.
//!
//! Callers write commands and Lua scripts once; every multi-key command and script
//! touches the keys of one hash tag (one slot), so the same code runs on both. The only
//! operation that differs is `SCAN`, which on a cluster has to visit every master.

use futures::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{
    AsyncCommands, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ScanOptions,
    TlsCertificates, Value,
};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod settings;

/// Where Redis is: one server, or the seed nodes of a cluster; and, for `rediss://`,
/// which CA to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub nodes: RedisNodes,
    /// PEM file of the CA that signed Redis's certificate; `None`: the system's roots.
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisNodes {
    Single(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    pub fn single(url: &str) -> Self {
        RedisTarget {
            nodes: RedisNodes::Single(url.to_owned()),
            tls_ca: None,
        }
    }

    pub fn cluster(urls: Vec<String>) -> Self {
        RedisTarget {
            nodes: RedisNodes::Cluster(urls),
            tls_ca: None,
        }
    }

    pub fn with_tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }

    /// The URLs with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        match &self.nodes {
            RedisNodes::Single(url) => redact(url),
            RedisNodes::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| redact(u)).collect();
                format!("cluster {}", urls.join(","))
            }
        }
    }

    /// The CA for `rediss://`, read from `tls_ca`.
    fn certificates(&self) -> RedisResult<Option<TlsCertificates>> {
        let Some(path) = &self.tls_ca else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            RedisError::from((
                ErrorKind::Io,
                "cannot read redis_tls_ca",
                format!("{}: {e}", path.display()),
            ))
        })?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// A client for one server's URL, trusting `tls_ca` when set.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        match self.certificates()? {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        }
    }

    /// A cluster client on `seeds`, trusting `tls_ca` when set.
    pub fn cluster_client(
        &self,
        seeds: &[String],
        resp3_pushes: Option<PushSender>,
        response_timeout: Duration,
    ) -> RedisResult<ClusterClient> {
        let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response_timeout)
            .retries(2);
        if let Some(certs) = self.certificates()? {
            builder = builder.certs(certs);
        }
        if let Some(pushes) = resp3_pushes {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes);
        }
        builder.build()
    }
}

/// Runs a Redis call with [`RESPONSE_TIMEOUT`]: redis-rs's pub/sub connections have no
/// response timeout of their own, and a black-holed Redis must not hold a task (and
/// the commands queued behind it) for the minutes TCP takes to give up.
pub async fn bounded<T>(call: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(RESPONSE_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "redis did not answer in time",
            )))
        })
}

/// Publishes pub/sub batches for the tasks that fan events out to other nodes (wake-ups,
/// call signalling): `PUBLISH` pipelined on one server (its connection made on first
/// use and remade by redis-rs), `SPUBLISH` per channel on a cluster (each channel lives
/// on its own slot's master). Pub/sub is at most once: a batch that fails is reported
/// and dropped, never retried.
pub enum Publisher {
    Single {
        client: Box<redis::Client>,
        conn: Option<ConnectionManager>,
    },
    Cluster(ClusterConnection),
}

impl Publisher {
    pub fn single(client: redis::Client) -> Self {
        Publisher::Single {
            client: Box::new(client),
            conn: None,
        }
    }

    /// The connection, made on first use (then remade by redis-rs as needed).
    pub async fn link(&mut self) -> RedisResult<RedisLink> {
        match self {
            Publisher::Single { client, conn } => {
                // A cheap clone of the shared, self-reconnecting connection.
                if let Some(c) = conn {
                    return Ok(RedisLink::Single(c.clone()));
                }
                let made = bounded(client.get_connection_manager()).await?;
                Ok(RedisLink::Single(conn.insert(made).clone()))
            }
            Publisher::Cluster(conn) => Ok(RedisLink::Cluster(conn.clone())),
        }
    }

    /// Publishes and empties `batch` (`(channel, payload)` pairs).
    pub async fn publish(&mut self, batch: &mut Vec<(String, String)>) -> RedisResult<()> {
        let link = self.link().await.inspect_err(|_| batch.clear())?;
        match link {
            RedisLink::Single(mut c) => {
                let mut pipe = redis::pipe();
                for (channel, payload) in batch.drain(..) {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                }
                bounded(pipe.query_async::<()>(&mut c)).await
            }
            RedisLink::Cluster(conn) => {
                let sends = batch.drain(..).map(|(channel, payload)| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("SPUBLISH")
                            .arg(channel)
                            .arg(payload)
                            .query_async::<()>(&mut conn)
                            .await
                    }
                });
                futures::future::try_join_all(sends).await.map(|_| ())
            }
        }
    }
}

/// Pub/sub events queued for a [`Publisher`] at most; beyond it they are dropped
/// (pub/sub is at most once, and memory must stay bounded while Redis is slow).
pub const PUBLISH_QUEUE: usize = 4096;
/// Events sent per pipelined round trip.
pub const PUBLISH_BATCH: usize = 256;

/// The task that empties a publish queue into Redis in batches until `stop`; a failed
/// batch is logged (as `what`) and dropped.
pub async fn run_publisher(
    mut target: Publisher,
    mut outbox: tokio::sync::mpsc::Receiver<(String, String)>,
    stop: tokio_util::sync::CancellationToken,
    what: &'static str,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = outbox.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
        }
        let queued = batch.len();
        if let Err(e) = target.publish(&mut batch).await {
            tracing::warn!(error = %e, dropped = queued, "{what}: publish failed");
        }
    }
}

/// Where a RESP3 connection sends its pushes (pub/sub messages, disconnections).
pub type PushSender = tokio::sync::mpsc::UnboundedSender<redis::PushInfo>;

/// `redis://user:secret@host` -> `redis://user:***@host`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Never echo what we could not parse: it may hold a password.
        Err(_) => "(unparseable redis url)".into(),
    }
}

/// A cheap-to-clone handle on Redis; clones share the underlying connections.
#[derive(Clone)]
pub enum RedisLink {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys a `SCAN` step looks at. Redis's default, 10, made a relay with 1,000 inboxes
/// send hundreds of SCANs per sweep (0.3 per message at 2,000 msgs/s).
const SCAN_COUNT: usize = 500;
/// How long a command may take before it counts as failed (Redis unavailable).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl RedisLink {
    /// Connects and checks with PING. Both kinds reconnect by themselves afterwards;
    /// a command issued while Redis is away fails (it is never queued for later).
    pub async fn connect(target: &RedisTarget) -> RedisResult<Self> {
        Self::connect_with_timeout(target, RESPONSE_TIMEOUT).await
    }

    /// [`RedisLink::connect`] with another response timeout (for large values).
    pub async fn connect_with_timeout(
        target: &RedisTarget,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        let mut link = match &target.nodes {
            RedisNodes::Single(url) => {
                let client = target.client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(2)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                RedisLink::Single(client.get_connection_manager_with_config(config).await?)
            }
            RedisNodes::Cluster(urls) => {
                let client = target.cluster_client(urls, None, response_timeout)?;
                RedisLink::Cluster(client.get_async_connection().await?)
            }
        };
        let _: String = redis::cmd("PING").query_async(&mut link).await?;
        Ok(link)
    }

    /// Every key matching `pattern`, gathered with SCAN (never KEYS); on a cluster,
    /// from every master in turn, [`SCAN_COUNT`] keys a step.
    pub async fn scan_match(&self, pattern: &str) -> RedisResult<Vec<String>> {
        match self {
            RedisLink::Single(conn) => {
                let mut conn = conn.clone();
                let options = ScanOptions::default()
                    .with_pattern(pattern)
                    .with_count(SCAN_COUNT);
                let mut iter = conn.scan_options::<String>(options).await?;
                let mut keys = Vec::new();
                while let Some(key) = iter.next().await {
                    keys.push(key?);
                }
                Ok(keys)
            }
            RedisLink::Cluster(conn) => {
                let mut conn = conn.clone();
                let mut keys = Vec::new();
                for (host, port) in masters(&mut conn).await? {
                    let mut cursor = 0u64;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(SCAN_COUNT);
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let reply = conn.route_command(scan, route).await?;
                        let (next, batch): (u64, Vec<String>) =
                            redis::FromRedisValue::from_redis_value(reply)?;
                        keys.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(keys)
            }
        }
    }

    /// Runs `cmd` on the one server, or on every master of a cluster in turn; answers
    /// with each node's address (`host:port`, empty for the one server) and its reply.
    pub async fn on_each_master(&self, cmd: &Cmd) -> RedisResult<Vec<(String, Value)>> {
        match self {
            RedisLink::Single(conn) => {
                let reply: Value = cmd.query_async(&mut conn.clone()).await?;
                Ok(vec![(String::new(), reply)])
            }
            RedisLink::Cluster(conn) => {
                let mut conn = conn.clone();
                let mut replies = Vec::new();
                for (host, port) in masters(&mut conn).await? {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    });
                    let reply = conn.route_command(cmd.clone(), route).await?;
                    replies.push((format!("{host}:{port}"), reply));
                }
                Ok(replies)
            }
        }
    }

    /// Runs `cmd` on the one server (`at` = `None`), or on the cluster node at `at`
    /// (`host`, `port`), wherever the slots have moved. Either way the answer is that
    /// node's reply, and an error reply is an `Err`: a cluster connection answers a
    /// command routed to one node as a map of one entry (that node's address to its
    /// reply, an error reply included), or as the reply itself.
    pub async fn query_at(&self, at: Option<&(String, u16)>, cmd: &Cmd) -> RedisResult<Value> {
        match (self, at) {
            (RedisLink::Cluster(conn), Some((host, port))) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = conn.clone().route_command(cmd.clone(), route).await?;
                let reply = match reply {
                    Value::Map(mut entries) if entries.len() == 1 => entries.remove(0).1,
                    other => other,
                };
                match reply {
                    Value::ServerError(e) => Err(e.into()),
                    other => Ok(other),
                }
            }
            (link, _) => cmd.query_async(&mut link.clone()).await,
        }
    }

    /// On a cluster, the master serving `slot` now (from `CLUSTER SLOTS`) and every slot
    /// range it serves; `None` on the one server or when no master serves `slot`.
    pub async fn master_of(&self, slot: Slot) -> RedisResult<Option<SlotOwner>> {
        let RedisLink::Cluster(conn) = self else {
            return Ok(None);
        };
        let reply = conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let ranges = parse_ranges(&reply);
        let serves = |lo: u16, hi: u16| (lo..=hi).any(|n| Slot::new(n) == Some(slot));
        let Some((_, _, owner)) = ranges.iter().find(|(lo, hi, _)| serves(*lo, *hi)) else {
            return Ok(None);
        };
        Ok(Some(SlotOwner {
            slots: ranges
                .iter()
                .filter(|(_, _, m)| m == owner)
                .map(|(lo, hi, _)| (*lo, *hi))
                .collect(),
            node: owner.clone(),
        }))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisLink::Cluster(_))
    }
}

/// A cluster master and the slot ranges (inclusive) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOwner {
    pub node: (String, u16),
    pub slots: Vec<(u16, u16)>,
}

/// The cluster's masters as `(host, port)`, from `CLUSTER SLOTS` on any node: the same
/// endpoints (IP or announced hostname) redis-rs keys its connections by, which is what
/// routing by address needs.
async fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    Ok(parse_masters(&reply))
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`; each master
/// once, in the order first seen.
fn parse_masters(reply: &Value) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    for (_, _, master) in parse_ranges(reply) {
        if !masters.contains(&master) {
            masters.push(master);
        }
    }
    masters
}

/// `CLUSTER SLOTS` as `(first slot, last slot, master)`, skipping ranges whose master
/// does not know its own address yet (`""` or `"?"`).
fn parse_ranges(reply: &Value) -> Vec<(u16, u16, (String, u16))> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let (Some(lo), Some(hi), Some(port)) =
            (int(fields.first()), int(fields.get(1)), int(master.get(1)))
        else {
            continue;
        };
        if host.is_empty() || host == "?" {
            continue;
        }
        out.push((lo, hi, (host, port)));
    }
    out
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisLink::Single(c) => c.req_packed_command(cmd),
            RedisLink::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisLink::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisLink::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisLink::Single(c) => c.get_db(),
            RedisLink::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        let t = RedisTarget::cluster(vec!["redis://u:p@h:1".into(), "redis://h:2".into()]);
        assert_eq!(t.redacted(), "cluster redis://u:***@h:1,redis://h:2");
    }

    #[test]
    fn masters_are_parsed_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |lo: i64, hi: i64, master: Value, replica: Value| {
            Value::Array(vec![Value::Int(lo), Value::Int(hi), master, replica])
        };
        let reply = Value::Array(vec![
            range(0, 5460, node("10.0.0.1", 7000), node("10.0.0.4", 7000)),
            range(5461, 10922, node("redis-b.internal", 7000), node("x", 1)),
            range(10923, 12000, node("10.0.0.1", 7000), node("x", 1)),
            range(12001, 16383, node("?", 7000), node("x", 1)),
        ]);
        assert_eq!(
            parse_masters(&reply),
            vec![
                ("10.0.0.1".to_owned(), 7000),
                ("redis-b.internal".to_owned(), 7000)
            ]
        );
        assert!(parse_masters(&Value::Nil).is_empty());
        let ranges = parse_ranges(&reply);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[2], (10923, 12000, ("10.0.0.1".to_owned(), 7000)));
    }
}
