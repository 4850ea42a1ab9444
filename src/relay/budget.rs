//! The verification budget: how many bad signatures one client IP may make this node
//! check.
//!
//! A strict Ed25519 verification costs about 60 µs of CPU, and a send with a bad
//! signature is refused before any rate limit (the sender key's bucket can only be
//! charged once the signature proved the sender). Without this budget one IP could keep
//! a core busy with forgeries that cost it nothing. So each client IP has a bucket of
//! bad signatures (`max_bad_signatures_per_second_per_ip`, `burst_bad_signatures_per_ip`):
//! a signature check that fails takes a token, and while the bucket is empty the IP's
//! signed requests are refused with `rate_limited` *before* their signature is checked.
//! Good signatures take nothing, so honest clients never notice it.
//!
//! The buckets are in memory on each node even when the store is Redis, unlike the
//! message buckets: what they protect is this node's CPU, and a Redis round trip would
//! cost more than the check it saves.
//!
//! [`Gcra`] is the pure arithmetic (the generic cell rate algorithm, as governor and the
//! Redis buckets use it: a "theoretical arrival time" per bucket); [`SignatureBudget`]
//! holds one arrival time per IP. A check and its charge are not one atomic step, so a
//! burst of concurrent requests from one IP can all be admitted before the first
//! failure is charged; each one still charges, so the IP's debt (and its wait) grows
//! with every one of them.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A bucket of `burst` tokens refilled at `per_second`, as arithmetic on its
/// theoretical arrival time (`tat`: when the bucket will be full again). Times are
/// microseconds on the relay's clock ([`crate::clock::Clock`], so tests move it).
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    /// Microseconds to earn one token back.
    interval: u64,
    /// How far `tat` may be ahead of now with a token still left: `(burst - 1)` tokens.
    tolerance: u64,
}

impl Gcra {
    /// Both values at least 1 (the config validates them, up to 1,000,000 per second;
    /// zero would be a bucket that never admits, which no key means).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval = (1_000_000 / u64::from(per_second.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval * u64::from(burst.max(1) - 1),
        }
    }

    /// `Ok` while the bucket has a token at `now`, else how long until it has one.
    pub fn admits(&self, tat: Option<u64>, now: u64) -> Result<(), Duration> {
        let allowed_from = tat.map_or(0, |t| t.saturating_sub(self.tolerance));
        if now >= allowed_from {
            Ok(())
        } else {
            Err(Duration::from_micros(allowed_from - now))
        }
    }

    /// The arrival time after taking one token at `now`.
    pub fn charge(&self, tat: Option<u64>, now: u64) -> u64 {
        tat.map_or(now, |t| t.max(now))
            .saturating_add(self.interval)
    }

    /// Whether a bucket is full again at `now` (so it can be forgotten).
    pub fn is_full(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

/// The per-IP buckets of bad signatures on this node. Times are the relay clock's
/// milliseconds; a wall clock stepped back lengthens the waits of the IPs in debt by
/// the step, and nobody else's.
pub struct SignatureBudget {
    gcra: Gcra,
    per_ip: DashMap<IpAddr, u64>,
}

fn micros(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1000)
}

impl SignatureBudget {
    pub fn new(per_second: u32, burst: u32) -> Self {
        SignatureBudget {
            gcra: Gcra::new(per_second, burst),
            per_ip: DashMap::new(),
        }
    }

    /// Before a signature check: `Err(wait)` while the IP has no bad signature left.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), Duration> {
        let tat = self.per_ip.get(&ip).map(|t| *t);
        self.gcra.admits(tat, micros(now_ms))
    }

    /// After a signature check failed: takes one token from the IP's bucket.
    pub fn charge(&self, ip: IpAddr, now_ms: u64) {
        let now = micros(now_ms);
        let mut entry = self.per_ip.entry(ip).or_insert(now);
        *entry = self.gcra.charge(Some(*entry), now);
    }

    /// Forgets the buckets that are full again: an IP that stopped costs nothing.
    pub fn prune(&self, now_ms: u64) {
        let now = micros(now_ms);
        self.per_ip.retain(|_, tat| !Gcra::is_full(*tat, now));
        self.per_ip.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let g = Gcra::new(10, 3);
        let t0 = 5_000 * MS;
        let mut tat = None;
        for _ in 0..3 {
            assert_eq!(g.admits(tat, t0), Ok(()));
            tat = Some(g.charge(tat, t0));
        }
        assert_eq!(g.admits(tat, t0), Err(Duration::from_millis(100)));
        assert_eq!(g.admits(tat, t0 + 99 * MS), Err(Duration::from_millis(1)));
        let refilled = t0 + 100 * MS;
        assert_eq!(g.admits(tat, refilled), Ok(()));
        tat = Some(g.charge(tat, refilled));
        assert!(
            g.admits(tat, refilled).is_err(),
            "one token came back, not two"
        );
        assert!(!Gcra::is_full(tat.unwrap(), refilled));
        assert!(Gcra::is_full(tat.unwrap(), t0 + 400 * MS));
    }

    #[test]
    fn charges_beyond_the_burst_add_to_the_wait() {
        // Concurrent failures admitted together all charge: the debt grows.
        let g = Gcra::new(10, 1);
        let tat = (0..5).fold(None, |tat, _| Some(g.charge(tat, 0)));
        assert_eq!(g.admits(tat, 0), Err(Duration::from_millis(500)));
    }

    #[test]
    fn an_idle_bucket_is_full_and_its_past_is_forgotten() {
        let g = Gcra::new(1, 2);
        let tat = Some(g.charge(None, 0));
        let much_later = 60_000 * MS;
        // A tat in the past counts from now: no stored-up credit beyond the burst.
        let tat = (0..2).fold(tat, |tat, _| Some(g.charge(tat, much_later)));
        assert!(g.admits(tat, much_later).is_err());
    }

    #[test]
    fn the_fastest_rate_still_refills() {
        let g = Gcra::new(1_000_000, 1);
        let tat = Some(g.charge(None, 0));
        assert!(g.admits(tat, 0).is_err());
        assert_eq!(g.admits(tat, 1), Ok(()));
    }

    #[test]
    fn each_ip_has_its_own_bucket() {
        let budget = SignatureBudget::new(1, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = 1_700_000_000_000;
        budget.charge(a, t0);
        assert_eq!(budget.admit(a, t0), Ok(()));
        budget.charge(a, t0);
        assert_eq!(budget.admit(a, t0), Err(Duration::from_secs(1)));
        assert_eq!(budget.admit(b, t0), Ok(()), "another IP is unaffected");
        assert_eq!(budget.admit(a, t0 + 1000), Ok(()));
        budget.prune(t0 + 1000);
        assert_eq!(budget.per_ip.len(), 1, "a is still in debt");
        budget.prune(t0 + 2000);
        assert!(budget.per_ip.is_empty());
    }
}
