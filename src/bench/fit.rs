//! Fitting the values `whispr bench` was not given to the relay it runs against.
//!
//! The command's defaults (1000 recipients, 10 senders, as many messages as fast as the
//! relay accepts) are for a relay whose per-client limits were lifted; against a relay
//! with its own defaults they would hit `max_connections_per_ip` (the generator is one
//! IP) and the per-IP and per-sender rates at once. So the run first reads the relay's
//! published limits (`GET /v1/info`) and lowers what the user did not set to fit them,
//! saying so; what the user set explicitly is left alone (a run may want refusals).

use serde::Deserialize;

use super::BenchConfig;

/// The relay limits a run must fit, from `limits` in `GET /v1/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RelayLimits {
    pub max_connections_per_ip: usize,
    pub max_messages_per_second: u64,
    pub max_messages_per_second_per_ip: u64,
}

/// Which values of a [`BenchConfig`] are the command's defaults rather than the user's
/// choice: only those are fitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaulted {
    /// `--connections` was not given.
    pub connections: bool,
    /// Neither `--rate` nor `--messages` was given.
    pub rate: bool,
}

/// Lowers the defaulted values of `cfg` to fit `limits`; returns one sentence per
/// change, for the user.
pub fn fit(cfg: &mut BenchConfig, limits: &RelayLimits) -> Vec<String> {
    let mut notes = Vec::new();
    // Senders share the recipients' node (and IP) unless they go through --send-via.
    let senders_here = if cfg.send_via.is_none() {
        cfg.senders
    } else {
        0
    };
    let room = limits.max_connections_per_ip.saturating_sub(senders_here);
    if cfg.defaulted.connections && cfg.connections > room && room > 0 {
        notes.push(format!(
            "the relay allows {} WebSockets per client IP (max_connections_per_ip) and this run is one IP: {room} recipients instead of {} (--connections sets it)",
            limits.max_connections_per_ip, cfg.connections
        ));
        cfg.connections = room;
    }
    let accepted_rate = limits.max_messages_per_second_per_ip.min(
        limits
            .max_messages_per_second
            .saturating_mul(cfg.senders as u64),
    );
    // A max-rate run is refused past the relay's rates; when those cannot take the
    // default message count within the default duration, an open-loop run at the
    // accepted rate measures the relay instead of its refusals.
    let capped = accepted_rate.saturating_mul(cfg.duration.as_secs().max(1)) < cfg.max_messages;
    if cfg.defaulted.rate && cfg.rate == 0 && accepted_rate > 0 && capped {
        cfg.rate = accepted_rate;
        notes.push(format!(
            "the relay accepts {} msgs/s from one IP and {} per sender key (max_messages_per_second_per_ip, max_messages_per_second): sending {accepted_rate}/s for {} s instead of {} messages as fast as accepted; lift those limits on a test relay to measure throughput (--rate or --messages sets it)",
            limits.max_messages_per_second_per_ip,
            limits.max_messages_per_second,
            cfg.duration.as_secs(),
            cfg.max_messages
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Codec;
    use std::time::Duration;

    fn cli_defaults(defaulted: Defaulted) -> BenchConfig {
        BenchConfig {
            server: "http://127.0.0.1:8000".into(),
            send_via: None,
            connections: 1000,
            senders: 10,
            rate: 0,
            max_messages: 100_000,
            size: 256,
            duration: Duration::from_secs(10),
            codec: Codec::MsgPack,
            offline_share: 0.0,
            drain: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            storm_at: Duration::ZERO,
            relay_pid: None,
            ca: None,
            progress: false,
            defaulted,
            verify_ceiling: false,
        }
    }

    const RELAY_DEFAULTS: RelayLimits = RelayLimits {
        max_connections_per_ip: 1000,
        max_messages_per_second: 10,
        max_messages_per_second_per_ip: 100,
    };

    #[test]
    fn defaults_are_fitted_to_a_default_relay() {
        let mut cfg = cli_defaults(Defaulted {
            connections: true,
            rate: true,
        });
        let notes = fit(&mut cfg, &RELAY_DEFAULTS);
        assert_eq!(cfg.connections + cfg.senders, 1000);
        assert_eq!(cfg.rate, 100);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("max_connections_per_ip"), "{notes:?}");
        assert!(
            notes[1].contains("max_messages_per_second_per_ip"),
            "{notes:?}"
        );
    }

    #[test]
    fn what_the_user_set_is_left_alone() {
        let mut cfg = cli_defaults(Defaulted::default());
        assert!(fit(&mut cfg, &RELAY_DEFAULTS).is_empty());
        assert_eq!((cfg.connections, cfg.rate), (1000, 0));
    }

    #[test]
    fn a_relay_with_lifted_limits_keeps_the_defaults() {
        let mut cfg = cli_defaults(Defaulted {
            connections: true,
            rate: true,
        });
        cfg.send_via = Some("http://node-b:8000".into());
        let lifted = RelayLimits {
            max_connections_per_ip: 1000,
            max_messages_per_second: 1_000_000,
            max_messages_per_second_per_ip: 1_000_000,
        };
        let notes = fit(&mut cfg, &lifted);
        assert_eq!(cfg.connections, 1000, "senders are on the other node");
        assert_eq!(cfg.rate, 0, "as fast as accepted");
        assert!(notes.is_empty(), "{notes:?}");
    }
}
