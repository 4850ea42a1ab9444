//! The store's keys: its limits type and options from the config, and their checks at
//! load.

use std::time::Duration;

use super::{RedisOptions, StoreLimits};
use crate::config::{require, Config, Invalid};

impl StoreLimits {
    pub fn from_config(c: &Config) -> Self {
        StoreLimits {
            max_messages_per_inbox: c.max_messages_per_recipient,
            message_ttl_ms: c.message_ttl_seconds * 1000,
            // A future timestamp may be accepted up to the skew, and a past one until the
            // skew: remembering ids for twice the skew covers both.
            dedupe_window_ms: 2 * c.max_clock_skew_ms(),
            max_store_bytes: c.max_store_bytes,
        }
    }
}

impl RedisOptions {
    /// How the Redis store uses Redis.
    pub fn from_config(c: &Config) -> Self {
        RedisOptions {
            allow_eviction: c.redis_allow_eviction,
            response_timeout: Duration::from_millis(c.redis_response_timeout_ms),
            calls_in_flight: c.redis_calls_in_flight,
        }
    }
}

/// What every store needs: inbox size, TTL, the memory budget, the sweep.
pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        c.max_messages_per_recipient >= 1,
        "max_messages_per_recipient",
        "must be at least 1",
    )?;
    require(
        c.message_ttl_seconds >= 1,
        "message_ttl_seconds",
        "must be at least 1",
    )?;
    require(
        c.max_store_bytes >= c.max_message_bytes.saturating_mul(2),
        "max_store_bytes",
        "must hold at least two messages of max_message_bytes",
    )?;
    require(
        c.sweep_interval_seconds >= 1,
        "sweep_interval_seconds",
        "must be at least 1 second",
    )
}

/// The Redis store's options.
pub(crate) fn validate_redis(c: &Config) -> Result<(), Invalid> {
    require(
        (100..=60_000).contains(&c.redis_response_timeout_ms),
        "redis_response_timeout_ms",
        "must be between 100 and 60000 (milliseconds)",
    )?;
    require(
        (1..=64).contains(&c.redis_calls_in_flight),
        "redis_calls_in_flight",
        "must be between 1 and 64",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_keys_reach_the_store_as_configured() {
        let c = Config::from_toml(
            "redis_calls_in_flight = 3\nredis_response_timeout_ms = 700\nredis_allow_eviction = true",
        )
        .unwrap();
        let o = RedisOptions::from_config(&c);
        assert_eq!(o.calls_in_flight, 3);
        assert_eq!(o.response_timeout, Duration::from_millis(700));
        assert!(o.allow_eviction);
        let defaults = RedisOptions::from_config(&Config::default());
        assert_eq!(defaults, RedisOptions::default(), "one set of defaults");
    }
}
