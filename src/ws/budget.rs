//! The worst case, in bytes, one WebSocket connection makes the relay hold, from the
//! config alone: what `/v1/info` publishes and the README explains. Every term is a
//! buffer with a cap enforced before it grows; kernel socket buffers and TLS records
//! (rustls keeps its own bounded buffers) are not counted.

use serde::Serialize;

use super::upgrade::CLOSE_HEADROOM;
use crate::config::Config;
use crate::registry::V1_COPY_QUEUE;

/// Largest control frame: 2 header bytes and 125 payload bytes.
const MAX_CONTROL_FRAME: usize = 127;

/// Worst-case bytes per connection, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// `GET /v1/ws`: a native session.
    pub native: usize,
    /// v1 `WS /ws/{key}`: a v1 push socket.
    pub v1: usize,
    /// v1 `GET /signal`: a call signalling socket.
    pub signal: usize,
}

impl Budget {
    pub fn new(c: &Config) -> Self {
        // Writing: tungstenite's buffer (the cap plus the close headroom), the one pong
        // it keeps pending once that is full, and the frame being encoded.
        let write = c.ws_max_write_buffer_bytes
            + CLOSE_HEADROOM
            + MAX_CONTROL_FRAME
            + c.max_outbound_frame_bytes();
        // Reading, for a route whose messages are at most `m` bytes: the read buffer,
        // the frame being read, the message being assembled from fragments (or just
        // handed over), and its decoded form.
        let read = |m: usize| c.ws_read_buffer_bytes + 3 * m;
        // A session's sends under check beyond the one decoded above hold their bodies.
        let pipelined = c.ws_max_pipelined_sends.saturating_sub(1) * c.max_message_bytes;
        let native = read(c.max_frame_bytes()) + write + c.ws_ephemeral_queue_bytes + pipelined;
        // Live sender copies queue per signing key, up to `V1_COPY_QUEUE` envelopes.
        let v1 = read(c.max_frame_bytes()) + write + V1_COPY_QUEUE * c.max_frame_bytes();
        let signal = read(c.signal_max_ws_message_bytes())
            + write
            + c.ws_outbound_queue * c.max_outbound_frame_bytes();
        Budget { native, v1, signal }
    }

    /// The largest of the routes.
    pub fn max(&self) -> usize {
        self.native.max(self.v1).max(self.signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_readmes() {
        let b = Budget::new(&Config::default());
        assert_eq!(
            b,
            Budget {
                native: 2_132_703,
                v1: 6_349_023,
                signal: 6_736_087,
            },
            "README.md, \"Memory per connection\", quotes these"
        );
    }

    #[test]
    fn every_cap_counts() {
        let base = Config::from_toml("").unwrap();
        let b = Budget::new(&base);
        assert!(b.max() >= b.native && b.max() >= b.v1 && b.max() >= b.signal);
        let more = Config::from_toml("ws_max_write_buffer_bytes = 1048576").unwrap();
        let grown = 1_048_576 - base.ws_max_write_buffer_bytes;
        assert_eq!(Budget::new(&more).native, b.native + grown);
        let more = Config::from_toml("ws_ephemeral_queue_bytes = 4194304").unwrap();
        assert_eq!(
            Budget::new(&more).native,
            b.native + 4_194_304 - base.ws_ephemeral_queue_bytes
        );
        assert_eq!(Budget::new(&more).v1, b.v1);
    }
}
