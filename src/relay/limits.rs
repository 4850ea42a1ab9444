//! The write path's keys, checked at load: message size, send rates, bursts and their
//! Redis leases, the bad-signature budget, the verifier stage's bounds, clock skew.

use crate::config::{require, Config, Invalid};

/// The highest rate and burst: the shared (Redis) buckets count in microseconds, so one
/// message per µs at most.
const MAX_RATE: u32 = 1_000_000;

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        (1..=16 << 20).contains(&c.max_message_bytes),
        "max_message_bytes",
        "must be between 1 and 16777216",
    )?;
    // Rates are per second; bursts and the session's strikes are counts.
    for (key, v) in [
        ("max_messages_per_second", c.max_messages_per_second),
        (
            "max_messages_per_second_per_ip",
            c.max_messages_per_second_per_ip,
        ),
        (
            "max_bad_signatures_per_second_per_ip",
            c.max_bad_signatures_per_second_per_ip,
        ),
        ("burst_bad_signatures_per_ip", c.burst_bad_signatures_per_ip),
        (
            "max_bad_signatures_per_session",
            c.max_bad_signatures_per_session,
        ),
    ] {
        require(
            (1..=MAX_RATE).contains(&v),
            key,
            "must be between 1 and 1000000",
        )?;
    }
    for (key, burst) in [
        ("burst_messages", c.burst_messages),
        ("burst_messages_per_ip", c.burst_messages_per_ip),
    ] {
        require(burst >= 1, key, "must be at least 1")?;
    }
    super::VerifierLimits::validate(c)?;
    require(
        c.rate_limit_lease_ms <= 1000,
        "rate_limit_lease_ms",
        "must be between 0 and 1000 (milliseconds)",
    )?;
    require(
        c.max_clock_skew_seconds >= 1,
        "max_clock_skew_seconds",
        "must be at least 1",
    )
}
