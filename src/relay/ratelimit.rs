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
//! Each bucket key carries its own hash tag (see `redis_keys`), so on Redis Cluster the
//! buckets spread over the slots and each script call touches one slot (one call per
//! bucket); on one server the buckets of a send go in one call. A bucket key expires when
//! the bucket would be full again, so idle senders cost Redis nothing.
//!
//! # Leases: one Redis call per many messages
//!
//! A node that has to ask Redis for a token asks for a lease of `rate ×
//! rate_limit_lease_ms` tokens (at least one, at most the burst); Redis grants as many
//! of them as the bucket holds, at most that many, exactly as that many single takes at
//! that instant would. The node spends the first at once and the rest locally, for at
//! most `rate_limit_lease_ms` (`lease`) after the grant; what is left then is dropped.
//! A busy sender or IP therefore costs one script call per lease, not per message.
//!
//! **Bound.** Every token spent at time `t`, on any node, was granted by Redis in
//! `[t - lease, t]`, and Redis grants in any window of length `T` at most `burst + rate
//! × T` tokens (GCRA). So all nodes together admit at most `burst + rate × (T + lease)`
//! in any window of length `T`: the overshoot over the exact shared bucket is at most
//! `rate × lease` tokens per window, however many nodes there are (50 ms: a twentieth
//! of a second's rate). Dropped leftovers make the limit stricter, never looser; a
//! bucket whose lease is one token (`rate × lease < 1`, e.g. the default 10 msgs/s per
//! sender) behaves exactly as without leases. `tests/it/redis_faults.rs`
//! (`leased_tokens_overshoot_a_shared_limit_by_at_most_rate_times_lease`) measures it.
//!
//! When Redis does not answer, a check fails with `StoreError::Unavailable` (503): the
//! message could not be stored anyway, and refusing is better than letting a node run
//! without limits (a node spends what it has leased, at most one lease's worth).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use redis::Script;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::RelayError;
use crate::protocol::PublicKey;
use crate::redis_keys;
use crate::redis_link::RedisLink;
use crate::store::StoreError;

/// GCRA on each key in turn, taking up to a lease of tokens from each. ARGV per key:
/// emission interval (µs), burst, tokens wanted. Returns {0, 0, granted1, granted2, ...}
/// when every bucket gave at least one token (each gives as many as it holds, at most
/// the tokens wanted: what that many single takes at this instant would give), else {i,
/// wait}: the 1-based index of the first bucket that had none and the wait in µs until
/// it has one (the buckets before it keep what they gave).
/// `allow-oom`: a bucket is a few bytes with a short life, and limits must keep working
/// when Redis is full (the insert behind them is what answers 507 then).
const GCRA: &str = r#"#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {0, 0}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  -- Each token moves tat one interval on; tat may run at most `burst` intervals ahead.
  local free = math.floor((now + burst * interval - tat) / interval)
  if free < 1 then
    return {i, tat + interval - burst * interval - now}
  end
  local n = math.min(want, free)
  local new_tat = tat + n * interval
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  table.insert(out, n)
end
return out
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

    /// Tokens asked for per lease: what the bucket refills in `lease`, at least one, at
    /// most the burst.
    fn lease_tokens(self, lease: Duration) -> u32 {
        let refill = u128::from(self.per_second) * lease.as_millis() / 1000;
        (refill.min(u128::from(self.burst)) as u32).max(1)
    }
}

pub struct RateLimits {
    per_sender: DefaultKeyedRateLimiter<PublicKey>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    limits: (Limit, Limit),
    /// Set when the buckets live in Redis, shared by every node.
    shared: Option<Shared>,
    lease: Duration,
}

struct Shared {
    conn: RedisLink,
    gcra: Script,
    /// How long leased tokens may be spent (`rate_limit_lease_ms`).
    lease: Duration,
    /// Tokens leased from each bucket (by its key) and not spent yet.
    leases: Mutex<HashMap<String, Lease>>,
}

/// Tokens a node holds from one shared bucket, to spend before `until`.
struct Lease {
    tokens: u32,
    until: Instant,
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
            lease: Duration::ZERO,
        }
    }

    /// With shared buckets, lease tokens for up to `lease` (`rate_limit_lease_ms`; see
    /// the module doc); zero takes every token from Redis.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Moves the buckets to Redis, shared by every node on it.
    pub fn share(&mut self, conn: RedisLink) {
        self.shared = Some(Shared {
            conn,
            gcra: Script::new(GCRA),
            lease: self.lease,
            leases: Mutex::new(HashMap::new()),
        });
    }

    /// Takes one token from the client IP's bucket, then one from the sender's.
    pub async fn check(&self, sender: &PublicKey, ip: IpAddr) -> Result<(), RelayError> {
        match &self.shared {
            Some(shared) => {
                let (sender_limit, ip_limit) = self.limits;
                shared
                    .take(&[
                        (redis_keys::ip_bucket(ip), ip_limit, "ip"),
                        (redis_keys::sender_bucket(sender), sender_limit, "sender"),
                    ])
                    .await
            }
            None => {
                self.check_ip(ip).await?;
                self.check_sender(sender).await
            }
        }
    }

    /// Takes one token from the client IP's bucket only: for work that comes before the
    /// sender is known (an attachment body not yet read) or has no sender (a download).
    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), RelayError> {
        match &self.shared {
            Some(shared) => {
                let bucket = (redis_keys::ip_bucket(ip), self.limits.1, "ip");
                shared.take(&[bucket]).await
            }
            None => self.local(self.per_ip.check_key(&ip), "ip"),
        }
    }

    /// Takes one token from the sender key's bucket only.
    pub async fn check_sender(&self, sender: &PublicKey) -> Result<(), RelayError> {
        match &self.shared {
            Some(shared) => {
                let bucket = (redis_keys::sender_bucket(sender), self.limits.0, "sender");
                shared.take(&[bucket]).await
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
    /// expire by themselves), and leases past their time.
    pub fn prune(&self) {
        if let Some(shared) = &self.shared {
            let now = Instant::now();
            let mut leases = shared.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.retain(|_, lease| lease.until > now);
        }
        self.per_sender.retain_recent();
        self.per_ip.retain_recent();
        self.per_sender.shrink_to_fit();
        self.per_ip.shrink_to_fit();
    }
}

/// One bucket of a check: its Redis key, its limit, and its scope (metric label).
type Bucket = (String, Limit, &'static str);

impl Shared {
    /// Takes a token from each bucket in order: a leased one where this node holds one,
    /// else from Redis (the buckets that need Redis next to each other in one call on
    /// one server), stopping at the first bucket that refuses.
    async fn take(&self, buckets: &[Bucket]) -> Result<(), RelayError> {
        let mut i = 0;
        while i < buckets.len() {
            if self.spend_leased(&buckets[i].0) {
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < buckets.len() && !self.holds_lease(&buckets[end].0) {
                end += 1;
            }
            if self.conn.is_cluster() {
                // Each bucket lives in its own slot: one call each.
                for bucket in &buckets[i..end] {
                    self.lease_from_redis(std::slice::from_ref(bucket)).await?;
                }
            } else {
                self.lease_from_redis(&buckets[i..end]).await?;
            }
            i = end;
        }
        Ok(())
    }

    /// Spends one token leased from the bucket at `key`, if this node holds one.
    fn spend_leased(&self, key: &str) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get_mut(key) {
            Some(lease) if lease.tokens > 0 && lease.until > Instant::now() => {
                lease.tokens -= 1;
                true
            }
            _ => false,
        }
    }

    fn holds_lease(&self, key: &str) -> bool {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases
            .get(key)
            .is_some_and(|l| l.tokens > 0 && l.until > Instant::now())
    }

    /// One script call: a token from each bucket for this request, and a lease of what
    /// else each granted.
    async fn lease_from_redis(&self, buckets: &[Bucket]) -> Result<(), RelayError> {
        let mut call = self.gcra.prepare_invoke();
        for (key, limit, _) in buckets {
            call.key(key)
                .arg(limit.interval_us())
                .arg(limit.burst)
                .arg(limit.lease_tokens(self.lease));
        }
        let granted_at = Instant::now();
        let reply: Vec<u64> =
            call.invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| match e.code() {
                    Some("OOM") => StoreError::RedisFull,
                    _ => StoreError::Unavailable(format!("redis (rate limits): {e}")),
                })?;
        let (refused, wait_us) = (reply.first().copied(), reply.get(1).copied());
        if let (Some(refused @ 1..), Some(wait_us)) = (refused, wait_us) {
            let scope = buckets.get(refused as usize - 1).map_or("ip", |b| b.2);
            return Err(RelayError::RateLimited {
                scope,
                retry_after_ms: wait_us.div_ceil(1000) + 1,
            });
        }
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for ((key, ..), granted) in buckets.iter().zip(reply.iter().skip(2)) {
            // One token is this request's; the rest may be spent until `until`.
            let spare = u32::try_from(granted.saturating_sub(1)).unwrap_or(u32::MAX);
            if spare == 0 {
                continue;
            }
            let until = granted_at + self.lease;
            match leases.get_mut(key) {
                // Keep the earlier deadline: no token outlives its grant by more than `lease`.
                Some(lease) if lease.until > granted_at => {
                    lease.tokens = lease.tokens.saturating_add(spare)
                }
                _ => {
                    leases.insert(
                        key.clone(),
                        Lease {
                            tokens: spare,
                            until,
                        },
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_the_refill_of_its_time_within_one_and_the_burst() {
        let lease = Duration::from_millis(50);
        assert_eq!(Limit::new((10, 50)).lease_tokens(lease), 1);
        assert_eq!(Limit::new((100, 200)).lease_tokens(lease), 5);
        assert_eq!(
            Limit::new((1_000_000, 1_000_000)).lease_tokens(lease),
            50_000
        );
        assert_eq!(Limit::new((1_000_000, 100)).lease_tokens(lease), 100);
        assert_eq!(Limit::new((1_000_000, 100)).lease_tokens(Duration::ZERO), 1);
    }
}
