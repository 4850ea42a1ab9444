//! What the store must know about the Redis it runs on, and the checks that keep that
//! knowledge true: at start (a bad answer stops the relay), then every
//! [`CHECK_INTERVAL`] and right after a failed call (which is how a reconnect shows).
//!
//! - **Eviction.** Any `maxmemory-policy` but `noeviction` deletes keys when Redis is
//!   full, and with them queued messages; `volatile-*` policies too, because the inboxes'
//!   metadata and dedupe keys have TTLs. The relay refuses such a Redis unless the
//!   operator opts out (`redis_allow_eviction`), and then warns at start and every hour
//!   while the scripts report each eviction they notice as a gap. Found on a re-check,
//!   an evicting policy makes the store refuse writes (and `/readyz` fail) until it is
//!   fixed.
//! - **Durability.** A Redis restart is lossless only with `appendonly yes` and
//!   `appendfsync always`, on a server that was never a replica promoted in this run
//!   (`second_repl_offset:-1`: a promoted replica may lag its old master). Whether the
//!   process a script runs on was verified so is handed to the script with each call
//!   ([`Guard::lossless`]); an inbox last written by another process moves to a new epoch
//!   unless it was (see the module doc of [`super`] and [`super::fence`]).
//! - **Clock.** Inserts carry a deadline on Redis's clock, so an insert that Redis runs
//!   after the relay already answered 503 (a stopped Redis resuming) stores nothing. The
//!   offset between Redis's clock and this machine's is measured with `TIME`.
//! - **Version.** The scripts use Redis 7's script flags.

use redis::FromRedisValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::redis_link::RedisLink;
use crate::store::StoreError;

/// How often the facts are read again when nothing failed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often the opt-out is recalled while Redis may evict.
const EVICTION_WARN_INTERVAL: Duration = Duration::from_secs(3600);
/// At most one "Redis is full" warning this often.
const FULL_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// One Redis server's (or cluster master's) answers that matter to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `host:port` of a cluster master; empty for the one server.
    pub node: String,
    pub version: String,
    pub run_id: String,
    pub policy: String,
    /// A restart of this process loses nothing acknowledged.
    pub durable: bool,
}

impl ServerFacts {
    fn name(&self) -> String {
        match self.node.as_str() {
            "" => "Redis".into(),
            node => format!("Redis at {node}"),
        }
    }

    /// Why the store must not run on this server, if it must not.
    fn refusal(&self, allow_eviction: bool) -> Option<String> {
        let major: u32 = self
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Some(format!(
                "{} runs version {}; the relay needs Redis 7.0 or newer (its scripts use script flags)",
                self.name(),
                self.version
            ));
        }
        if self.evicts() && !allow_eviction {
            return Some(format!(
                "{} has maxmemory-policy {}, which deletes queued messages when Redis is full \
                 (the store's metadata keys have TTLs, so volatile-* policies evict them too); \
                 set `maxmemory-policy noeviction` in redis.conf (or CONFIG SET maxmemory-policy noeviction), \
                 or set redis_allow_eviction = true to run anyway with every eviction the relay notices reported as a gap",
                self.name(),
                self.policy
            ));
        }
        None
    }

    fn evicts(&self) -> bool {
        self.policy != "noeviction"
    }
}

/// The value of `field` in an `INFO` answer (`field:value` lines).
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The facts of every master, from `INFO` and `CONFIG GET` (falling back to `INFO`
/// where `CONFIG` is renamed or disabled, as managed Redis services often do).
pub async fn read_facts(link: &RedisLink) -> redis::RedisResult<Vec<ServerFacts>> {
    let mut info = redis::cmd("INFO");
    info.arg("server").arg("memory").arg("replication");
    let infos = link.on_each_master(&info).await?;
    let mut config = redis::cmd("CONFIG");
    config
        .arg("GET")
        .arg("maxmemory-policy")
        .arg("appendonly")
        .arg("appendfsync");
    // Renamed or refused CONFIG: every node answers from INFO alone.
    let configs: HashMap<String, HashMap<String, String>> = match link.on_each_master(&config).await
    {
        Ok(replies) => replies
            .into_iter()
            .filter_map(|(node, v)| Some((node, HashMap::from_redis_value(v).ok()?)))
            .collect(),
        Err(_) => HashMap::new(),
    };
    let mut facts = Vec::new();
    for (node, reply) in infos {
        let text = String::from_redis_value(reply)?;
        let config = configs.get(&node);
        let setting = |key: &str| config.and_then(|c| c.get(key)).map(String::as_str);
        let policy = setting("maxmemory-policy")
            .or_else(|| info_field(&text, "maxmemory_policy"))
            .unwrap_or("unknown");
        let never_promoted = info_field(&text, "second_repl_offset") == Some("-1");
        facts.push(ServerFacts {
            version: info_field(&text, "redis_version").unwrap_or("0").into(),
            run_id: info_field(&text, "run_id").unwrap_or_default().into(),
            policy: policy.into(),
            durable: setting("appendonly") == Some("yes")
                && setting("appendfsync") == Some("always")
                && never_promoted,
            node,
        });
    }
    Ok(facts)
}

/// The store's knowledge of its Redis, shared by the store's calls and the watch task.
pub struct Guard {
    allow_eviction: bool,
    /// The processes (run ids) of the last check, each with whether a restart into it
    /// loses nothing.
    checked: RwLock<HashMap<String, bool>>,
    /// Redis's clock minus this machine's, in ms.
    offset_ms: AtomicI64,
    /// Set while a re-check finds Redis misconfigured: writes are refused with it.
    refusing: RwLock<Option<String>>,
    last_full_warning: Mutex<Option<Instant>>,
    recheck: Notify,
}

impl Guard {
    pub fn new(allow_eviction: bool) -> Self {
        Guard {
            allow_eviction,
            checked: RwLock::new(HashMap::new()),
            offset_ms: AtomicI64::new(0),
            refusing: RwLock::new(None),
            last_full_warning: Mutex::new(None),
            recheck: Notify::new(),
        }
    }

    /// Reads the facts and the clock offset. `Err` names what is wrong: at start the
    /// relay stops with it.
    pub async fn check(&self, link: &RedisLink) -> Result<Vec<ServerFacts>, StoreError> {
        let facts = read_facts(link)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        self.measure_clock(link).await?;
        let checked = facts
            .iter()
            .map(|f| (f.run_id.clone(), f.durable))
            .collect();
        *self.checked.write().unwrap_or_else(|e| e.into_inner()) = checked;
        let refusal = facts.iter().find_map(|f| f.refusal(self.allow_eviction));
        *self.refusing.write().unwrap_or_else(|e| e.into_inner()) = refusal.clone();
        match refusal {
            Some(why) => Err(StoreError::Misconfigured(why)),
            None => Ok(facts),
        }
    }

    async fn measure_clock(&self, link: &RedisLink) -> Result<(), StoreError> {
        let before = unix_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut link.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        let after = unix_ms();
        let redis_ms = secs * 1000 + micros / 1000;
        self.offset_ms
            .store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// The moment, on Redis's clock, after which an insert sent now must not be stored.
    pub fn deadline_ms(&self, timeout: Duration) -> i64 {
        unix_ms() + self.offset_ms.load(Ordering::Relaxed) + timeout.as_millis() as i64
    }

    /// Whether the last check verified a restart into Redis process `run` lossless; a
    /// process the last check did not see is taken as lossy.
    pub fn lossless(&self, run: &str) -> bool {
        let checked = self.checked.read().unwrap_or_else(|e| e.into_inner());
        checked.get(run).copied().unwrap_or(false)
    }

    /// Why writes are refused now, if they are.
    pub fn refusal(&self) -> Option<String> {
        self.refusing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A call failed: read the facts again soon (Redis may be a new process).
    pub fn poke(&self) {
        self.recheck.notify_one();
    }

    /// Redis refused a write for `maxmemory`: one WARN a minute at most.
    pub fn note_full(&self) {
        let mut last = self
            .last_full_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= FULL_WARN_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(
                "redis is full (maxmemory): new messages and attachments are refused with 507 store_full until recipients read theirs or they expire; raise maxmemory or add memory"
            );
        }
    }

    /// Re-reads the facts every [`CHECK_INTERVAL`], or soon after [`Guard::poke`], until
    /// `stop`; logs what changed.
    pub async fn watch(&self, link: RedisLink, stop: CancellationToken) {
        let mut last_eviction_warning: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_INTERVAL) => {}
                _ = self.recheck.notified() => {
                    // Let a reconnect finish before asking.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let was_refusing = self.refusal().is_some();
            match self.check(&link).await {
                Ok(facts) => {
                    if was_refusing {
                        tracing::info!("redis is configured safely again; writes are accepted");
                    }
                    if facts.iter().any(ServerFacts::evicts)
                        && last_eviction_warning
                            .is_none_or(|at| at.elapsed() >= EVICTION_WARN_INTERVAL)
                    {
                        last_eviction_warning = Some(Instant::now());
                        warn_eviction_allowed(&facts);
                    }
                }
                Err(StoreError::Misconfigured(why)) => {
                    if !was_refusing {
                        tracing::error!(problem = %why, "redis would lose messages; refusing writes until it is fixed");
                    }
                }
                // Unreachable: the store's own calls report that; try again later.
                Err(_) => {}
            }
        }
    }
}

/// The opt-out's warning, at start and every hour.
pub fn warn_eviction_allowed(facts: &[ServerFacts]) {
    for f in facts.iter().filter(|f| f.evicts()) {
        tracing::warn!(
            node = %f.name(),
            policy = %f.policy,
            "redis_allow_eviction = true: Redis may delete queued messages when full; each eviction the relay notices is reported to the inbox's readers as a gap"
        );
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: &str, policy: &str) -> ServerFacts {
        ServerFacts {
            node: String::new(),
            version: version.into(),
            run_id: "r".into(),
            policy: policy.into(),
            durable: false,
        }
    }

    #[test]
    fn info_fields_are_read_from_their_lines() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n# Memory\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "run_id"), Some("abc123"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("allkeys-lru"));
        assert_eq!(info_field(info, "run"), None);
    }

    #[test]
    fn every_evicting_policy_is_refused_unless_allowed() {
        assert_eq!(facts("7.0.15", "noeviction").refusal(false), None);
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            let why = facts("7.2.4", policy).refusal(false).expect(policy);
            assert!(why.contains(policy) && why.contains("noeviction"), "{why}");
            assert!(why.contains("redis_allow_eviction"), "{why}");
            assert_eq!(facts("7.2.4", policy).refusal(true), None);
        }
    }

    #[test]
    fn redis_before_7_is_refused() {
        let why = facts("6.2.14", "noeviction").refusal(true).unwrap();
        assert!(why.contains("6.2.14") && why.contains("7.0"), "{why}");
    }

    #[test]
    fn full_warnings_are_rate_limited() {
        let guard = Guard::new(false);
        guard.note_full();
        let first = *guard.last_full_warning.lock().unwrap();
        guard.note_full();
        assert_eq!(*guard.last_full_warning.lock().unwrap(), first);
    }
}
