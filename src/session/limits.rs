//! The session's keys: its settings from the config, and their checks at load.

use std::time::Duration;

use super::SessionSettings;
use crate::config::{require, Config, Invalid};
use crate::registry::{EphemeralLimits, EPHEMERAL_OVERHEAD_BYTES};
use crate::ws::SocketLimits;

impl SessionSettings {
    pub fn from_config(c: &Config) -> Self {
        SessionSettings {
            window: c.ws_max_inflight,
            pipelined_sends: c.ws_max_pipelined_sends,
            ephemeral: EphemeralLimits {
                count: c.ws_outbound_queue,
                bytes: c.ws_ephemeral_queue_bytes,
            },
            max_frame_bytes: c.max_frame_bytes(),
            socket: SocketLimits::from_config(c),
            auth_timeout: Duration::from_secs(c.ws_auth_timeout_seconds),
        }
    }
}

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        c.ws_max_inflight >= 1,
        "ws_max_inflight",
        "must be at least 1",
    )?;
    require(
        (1..=4096).contains(&c.ws_max_pipelined_sends),
        "ws_max_pipelined_sends",
        "must be between 1 and 4096",
    )?;
    require(
        c.ws_outbound_queue >= 1,
        "ws_outbound_queue",
        "must be at least 1",
    )?;
    require(
        c.ws_ephemeral_queue_bytes >= c.max_message_bytes + EPHEMERAL_OVERHEAD_BYTES,
        "ws_ephemeral_queue_bytes",
        "must hold one largest ephemeral envelope: at least max_message_bytes + 256",
    )?;
    for (key, v) in [
        ("ws_auth_timeout_seconds", c.ws_auth_timeout_seconds),
        ("ws_catch_up_seconds", c.ws_catch_up_seconds),
    ] {
        require(v >= 1, key, "must be at least 1 second")?;
    }
    Ok(())
}
