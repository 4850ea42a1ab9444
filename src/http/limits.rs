//! The HTTP keys: connection deadlines and caps from the config, and the checks at load
//! of every key the routes and the accept loop read (`http_*`, the WebSocket
//! admission caps, `poll_max_messages`, `origin`).

use std::time::Duration;

use super::{ConnCaps, HttpLimits};
use crate::config::{require, Config, Invalid};

impl HttpLimits {
    /// Deadlines and caps of HTTP connections.
    pub fn from_config(c: &Config) -> Self {
        HttpLimits {
            header_read: Duration::from_secs(c.http_header_read_timeout_seconds),
            keep_alive: Duration::from_secs(c.http_keep_alive_timeout_seconds),
            write: Duration::from_secs(c.http_write_timeout_seconds),
            max_head_bytes: c.http_max_head_bytes,
            caps: ConnCaps {
                max: c.http_max_connections,
                max_per_ip: c.http_max_connections_per_ip,
                reserved: c.http_reserved_connections,
                reserved_per_ip: c.http_reserved_connections_per_ip,
            },
        }
    }
}

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        c.poll_max_messages >= 1,
        "poll_max_messages",
        "must be at least 1",
    )?;
    // The WebSocket admission (`admission.rs`).
    for (key, v) in [
        ("max_connections", c.max_connections),
        ("max_connections_per_ip", c.max_connections_per_ip),
        (
            "max_new_connections_per_second",
            c.max_new_connections_per_second as usize,
        ),
    ] {
        require(v >= 1, key, "must be at least 1")?;
    }
    validate_connections(c)?;
    let origin_ok = c
        .origin
        .as_deref()
        .is_none_or(|o| !o.contains('/') && !o.contains(char::is_whitespace));
    require(
        origin_ok,
        "origin",
        "must be host[:port] without scheme or path, e.g. chat.example.com",
    )
}

/// The `http_*` keys: deadlines of HTTP connections and their caps.
fn validate_connections(c: &Config) -> Result<(), Invalid> {
    for (key, v) in [
        (
            "http_header_read_timeout_seconds",
            c.http_header_read_timeout_seconds,
        ),
        (
            "http_keep_alive_timeout_seconds",
            c.http_keep_alive_timeout_seconds,
        ),
        ("http_body_timeout_seconds", c.http_body_timeout_seconds),
        ("http_write_timeout_seconds", c.http_write_timeout_seconds),
    ] {
        require(
            (1..=3600).contains(&v),
            key,
            "must be between 1 and 3600 seconds",
        )?;
    }
    // The head deadline starts when a keep-alive connection goes idle, so an idle
    // connection is closed by then whatever this says.
    require(
        c.http_keep_alive_timeout_seconds <= c.http_header_read_timeout_seconds,
        "http_keep_alive_timeout_seconds",
        "must not exceed http_header_read_timeout_seconds (an idle connection's wait for its next request counts against the head deadline)",
    )?;
    // hyper refuses a read buffer under 8 KiB.
    require(
        (8192..=1 << 20).contains(&c.http_max_head_bytes),
        "http_max_head_bytes",
        "must be between 8192 and 1048576",
    )?;
    for (key, v) in [
        ("http_max_connections", c.http_max_connections),
        ("http_max_connections_per_ip", c.http_max_connections_per_ip),
    ] {
        require(v >= 1, key, "must be at least 1")?;
    }
    require(
        c.http_reserved_connections == 0 || c.http_reserved_connections_per_ip >= 1,
        "http_reserved_connections_per_ip",
        "must be at least 1 when http_reserved_connections is not 0",
    )
}
