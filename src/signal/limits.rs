//! The `/signal` keys, checked at load (`RoomLimits::from_config` reads them).

use crate::config::{require, Config, Invalid};

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        c.signal_max_peers_per_room >= 2,
        "signal_max_peers_per_room",
        "must be at least 2 (a call needs two peers)",
    )?;
    require(
        (64..=16 << 20).contains(&c.signal_max_message_bytes),
        "signal_max_message_bytes",
        "must be between 64 and 16777216",
    )?;
    require(
        c.signal_max_rooms_per_connection >= 1,
        "signal_max_rooms_per_connection",
        "must be at least 1",
    )?;
    require(
        c.signal_max_frames_per_second >= 1,
        "signal_max_frames_per_second",
        "must be at least 1",
    )
}
