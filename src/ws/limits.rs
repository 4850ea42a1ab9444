//! The socket layer's keys, checked at load: buffers, the write-buffer cap, deadlines.
//! (`SocketLimits::from_config` in `socket.rs` reads them.)

use crate::config::{require, Config, Invalid, OUTBOUND_FRAME_SLACK};

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    for (key, v) in [
        ("ws_read_buffer_bytes", c.ws_read_buffer_bytes),
        ("ws_write_buffer_bytes", c.ws_write_buffer_bytes),
    ] {
        require(v >= 1024, key, "must be at least 1024 bytes")?;
    }
    let largest = c.max_outbound_frame_bytes().max(c.ws_write_buffer_bytes);
    require(
        c.ws_max_write_buffer_bytes >= largest,
        "ws_max_write_buffer_bytes",
        format!(
            "must be at least ws_write_buffer_bytes and the largest frame the relay writes \
             (a max_message_bytes envelope in base64 plus 2048, or signal_max_message_bytes; \
             plus {OUTBOUND_FRAME_SLACK}): {largest} with these settings"
        ),
    )?;
    for (key, v) in [
        ("ws_ping_interval_seconds", c.ws_ping_interval_seconds),
        ("ws_pong_timeout_seconds", c.ws_pong_timeout_seconds),
        ("ws_write_timeout_seconds", c.ws_write_timeout_seconds),
        ("ws_close_timeout_seconds", c.ws_close_timeout_seconds),
    ] {
        require(v >= 1, key, "must be at least 1 second")?;
    }
    Ok(())
}
