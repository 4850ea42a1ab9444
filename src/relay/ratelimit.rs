//! Token buckets per sender key and per client IP.
//!
//! On one node they live in memory (governor's keyed GCRA limiters). When the store is
//! Redis, several nodes serve the same users, and per-node buckets would multiply the
//! limit by the number of nodes; so the buckets move to Redis: one key per bucket
//! holding its GCRA "theoretical arrival time", updated by one Lua script that reads
//! Redis's own clock (`TIME`), so the nodes' clocks never have to agree. The algorithm
//! and its parameters (rate, burst) are the same in both places, so a limit means the
//! same thing on one node and on ten.
//!
//! Each bucket key carries its own hash tag (`whispr:rl:s:{<sender hex>}`,
//! `whispr:rl:ip:{<ip>}`), so on Redis Cluster the buckets spread over the slots and each
//! script call touches one slot (one call per bucket); on one server both buckets of a
//! send go in one call (one round trip, and one script run fewer per message). A bucket
//! key expires when the bucket would be full again, so idle senders cost Redis nothing.
//!
//! When Redis does not answer, a check fails with `StoreError::Unavailable` (503): the
//! message could not be stored anyway, and refusing is better than letting a node run
//! without limits.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use redis::Script;
use std::net::IpAddr;
use std::num::NonZeroU32;

use crate::error::RelayError;
use crate::protocol::PublicKey;
use crate::redis_link::RedisLink;
use crate::store::StoreError;

/// GCRA on each key in turn. ARGV: emission interval (µs) and burst for each key.
/// Returns {0, 0} when the request may pass (a token taken from every bucket), else
/// {i, wait}: the 1-based index of the first bucket that refused and the wait in µs
/// until it would pass (the buckets before it keep the token they gave). On one Redis
/// the IP and sender buckets go in one call; on a cluster, where they live in
/// different slots, one call each.
/// `allow-oom`: a bucket is a few bytes with a short life, and limits must keep working
/// when Redis is full (the insert behind them is what answers 507 then).
const GCRA: &str = r#"#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allow_at = tat + interval - burst * interval
  if now < allow_at then
    return {i, allow_at - now}
  end
  local new_tat = tat + interval
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {0, 0}
"#;

/// A rate (per second) and a burst, both at least one.
#[derive(Debug, Clone, Copy)]
struct Limit {
    per_second: u32,
    burst: u32,
}

impl Limit {
    fn new((per_second, burst): (u32, u32)) -> Self {
        Limit {
            per_second: per_second.max(1),
            burst: burst.max(1),
        }
    }

    fn quota(self) -> Quota {
        let rate = NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(rate).allow_burst(burst)
    }

    fn interval_us(self) -> u64 {
        1_000_000 / u64::from(self.per_second)
    }
}

pub struct RateLimits {
    per_sender: DefaultKeyedRateLimiter<PublicKey>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    limits: (Limit, Limit),
    /// Set when the buckets live in Redis, shared by every node.
    shared: Option<Shared>,
}

struct Shared {
    conn: RedisLink,
    gcra: Script,
}

impl RateLimits {
    pub fn new(per_sender: (u32, u32), per_ip: (u32, u32)) -> Self {
        let (sender, ip) = (Limit::new(per_sender), Limit::new(per_ip));
        RateLimits {
            per_sender: RateLimiter::keyed(sender.quota()),
            per_ip: RateLimiter::keyed(ip.quota()),
            clock: DefaultClock::default(),
            limits: (sender, ip),
            shared: None,
        }
    }

    /// Moves the buckets to Redis, shared by every node on it.
    pub fn share(&mut self, conn: RedisLink) {
        self.shared = Some(Shared {
            conn,
            gcra: Script::new(GCRA),
        });
    }

    /// Takes one token from the client IP's bucket, then one from the sender's.
    pub async fn check(&self, sender: &PublicKey, ip: IpAddr) -> Result<(), RelayError> {
        match &self.shared {
            // One round trip and one script for both buckets where one server has both.
            Some(shared) if !shared.conn.is_cluster() => {
                let (sender_limit, ip_limit) = self.limits;
                shared
                    .take(&[
                        (ip_key(ip), ip_limit, "ip"),
                        (sender_key(sender), sender_limit, "sender"),
                    ])
                    .await
            }
            _ => {
                self.check_ip(ip).await?;
                self.check_sender(sender).await
            }
        }
    }

    /// Takes one token from the client IP's bucket only: for work that comes before the
    /// sender is known (an attachment body not yet read) or has no sender (a download).
    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), RelayError> {
        match &self.shared {
            Some(shared) => shared.take(&[(ip_key(ip), self.limits.1, "ip")]).await,
            None => self.local(self.per_ip.check_key(&ip), "ip"),
        }
    }

    /// Takes one token from the sender key's bucket only.
    pub async fn check_sender(&self, sender: &PublicKey) -> Result<(), RelayError> {
        match &self.shared {
            Some(shared) => {
                shared
                    .take(&[(sender_key(sender), self.limits.0, "sender")])
                    .await
            }
            None => self.local(self.per_sender.check_key(sender), "sender"),
        }
    }

    /// A local bucket's answer as the relay's error.
    fn local(
        &self,
        answer: Result<(), governor::NotUntil<<DefaultClock as Clock>::Instant>>,
        scope: &'static str,
    ) -> Result<(), RelayError> {
        answer.map_err(|not_until| RelayError::RateLimited {
            scope,
            retry_after_ms: not_until.wait_time_from(self.clock.now()).as_millis() as u64 + 1,
        })
    }

    /// Forgets buckets that are full again, so idle keys cost no memory (Redis buckets
    /// expire by themselves).
    pub fn prune(&self) {
        self.per_sender.retain_recent();
        self.per_ip.retain_recent();
        self.per_sender.shrink_to_fit();
        self.per_ip.shrink_to_fit();
    }
}

/// The Redis key of an IP's bucket; its own hash tag, so buckets spread over a cluster.
fn ip_key(ip: IpAddr) -> String {
    format!("whispr:rl:ip:{{{ip}}}")
}

fn sender_key(sender: &PublicKey) -> String {
    format!("whispr:rl:s:{{{}}}", sender.to_hex())
}

impl Shared {
    /// Takes a token from each bucket in order, in one script call.
    async fn take(&self, buckets: &[(String, Limit, &'static str)]) -> Result<(), RelayError> {
        let mut call = self.gcra.prepare_invoke();
        for (key, limit, _) in buckets {
            call.key(key).arg(limit.interval_us()).arg(limit.burst);
        }
        let (refused, wait_us): (usize, u64) = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| match e.code() {
                Some("OOM") => StoreError::RedisFull,
                _ => StoreError::Unavailable(format!("redis (rate limits): {e}")),
            })?;
        match refused.checked_sub(1).and_then(|i| buckets.get(i)) {
            None => Ok(()),
            Some((_, _, scope)) => Err(RelayError::RateLimited {
                scope,
                retry_after_ms: wait_us.div_ceil(1000) + 1,
            }),
        }
    }
}
