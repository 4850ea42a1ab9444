//! Token buckets per sender key and per client IP (governor's keyed GCRA limiters).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

use crate::error::RelayError;
use crate::protocol::PublicKey;

pub struct RateLimits {
    per_sender: DefaultKeyedRateLimiter<PublicKey>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

/// A rate and a burst, both at least one.
fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl RateLimits {
    pub fn new(per_sender: (u32, u32), per_ip: (u32, u32)) -> Self {
        RateLimits {
            per_sender: RateLimiter::keyed(quota(per_sender.0, per_sender.1)),
            per_ip: RateLimiter::keyed(quota(per_ip.0, per_ip.1)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token from the client IP's bucket, then one from the sender's.
    pub fn check(&self, sender: &PublicKey, ip: IpAddr) -> Result<(), RelayError> {
        if let Err(not_until) = self.per_ip.check_key(&ip) {
            return Err(RelayError::RateLimited {
                scope: "ip",
                retry_after_ms: not_until.wait_time_from(self.clock.now()).as_millis() as u64 + 1,
            });
        }
        if let Err(not_until) = self.per_sender.check_key(sender) {
            return Err(RelayError::RateLimited {
                scope: "sender",
                retry_after_ms: not_until.wait_time_from(self.clock.now()).as_millis() as u64 + 1,
            });
        }
        Ok(())
    }

    /// Forgets buckets that are full again, so idle keys cost no memory.
    pub fn prune(&self) {
        self.per_sender.retain_recent();
        self.per_ip.retain_recent();
        self.per_sender.shrink_to_fit();
        self.per_ip.shrink_to_fit();
    }
}
