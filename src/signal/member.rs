//! One `/signal` socket's side of the registry: the frame-level decisions (rate, size,
//! which room operation), so the socket loop only reads, writes and closes.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::{frame, CallId, ClientFrame, Peer, Refused, Rooms, ServerFrame};

/// One `/signal` socket's side of the registry. Dropping it leaves every room.
pub struct Member {
    rooms: Arc<Rooms>,
    id: u64,
    peer: Peer,
    /// The rooms this socket is in (at most `max_rooms_per_connection`, so a list).
    joined: Vec<CallId>,
    limiter: DefaultDirectRateLimiter,
    /// Whether the previous frame was refused by the rate limit (one error per run).
    limited: bool,
}

impl Member {
    pub(super) fn new(rooms: Arc<Rooms>, id: u64, peer: Peer) -> Self {
        let rate = NonZeroU32::new(rooms.limits.max_frames_per_second).unwrap_or(NonZeroU32::MIN);
        Member {
            rooms,
            id,
            peer,
            joined: Vec::new(),
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            limited: false,
        }
    }

    /// This socket's id in the registry (unique on this node).
    #[cfg(test)]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when the registry could not queue a frame for this socket.
    pub fn slow(&self) -> CancellationToken {
        self.peer.slow.clone()
    }

    /// Handles one text frame; returns the error frame to answer with, if any.
    /// Unusable frames are dropped without an answer, as the v1 original would have
    /// (had it not crashed).
    pub fn on_text(&mut self, text: &str) -> Option<Arc<str>> {
        if self.limiter.check().is_err() {
            let first = !std::mem::replace(&mut self.limited, true);
            return first.then(|| refused(Refused::RateLimited, None));
        }
        self.limited = false;
        if text.len() > self.rooms.limits.max_message_bytes {
            return Some(refused(Refused::TooBig, None));
        }
        let frame = match frame::parse(text) {
            Ok(frame) => frame,
            Err(why) => {
                tracing::debug!(%why, "signal frame ignored");
                return None;
            }
        };
        match frame {
            ClientFrame::Join(call_id) => self
                .join(&call_id)
                .err()
                .map(|e| refused(e, Some(&call_id))),
            ClientFrame::Signal { call_id, payload } => {
                self.rooms.signal(&call_id, self.id, payload);
                None
            }
            ClientFrame::Leave(call_id) => {
                self.leave(&call_id);
                None
            }
        }
    }

    fn join(&mut self, call_id: &CallId) -> Result<(), Refused> {
        if self.joined.contains(call_id) {
            return Ok(());
        }
        if self.joined.len() >= self.rooms.limits.max_rooms_per_connection {
            return Err(Refused::TooManyRooms);
        }
        self.rooms.join(call_id, self.id, self.peer.clone())?;
        self.joined.push(call_id.clone());
        Ok(())
    }

    fn leave(&mut self, call_id: &CallId) {
        if let Some(at) = self.joined.iter().position(|c| c == call_id) {
            self.joined.swap_remove(at);
            self.rooms.leave(call_id, self.id);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for call_id in std::mem::take(&mut self.joined) {
            self.rooms.leave(&call_id, self.id);
        }
    }
}

fn refused(why: Refused, call_id: Option<&CallId>) -> Arc<str> {
    ServerFrame::Error {
        detail: &why.to_string(),
        call_id,
    }
    .text()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drain, join, limits, rooms_with, signal};
    use super::super::RoomLimits;
    use serde_json::{json, Value};

    #[test]
    fn limits_refuse_with_an_error_frame() {
        let rooms = rooms_with(limits());
        let mut sockets: Vec<_> = (0..4).map(|_| rooms.connect()).collect();
        for (m, _) in &mut sockets[..3] {
            assert_eq!(m.on_text(&join("full")), None);
        }
        let answer = sockets[3].0.on_text(&join("full")).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!({"type": "error", "detail": "room full", "call_id": "full"})
        );
        assert_eq!(
            sockets[0].0.on_text(&join("full")),
            None,
            "rejoin is a no-op"
        );
        assert!(drain(&mut sockets[1].1)
            .iter()
            .all(|f| f["type"] == "peer-join"));

        let (m, _) = &mut sockets[0];
        assert_eq!(m.on_text(&join("second")), None);
        let answer = m.on_text(&join("third")).unwrap();
        assert!(answer.contains("too many rooms"), "{answer}");
        let huge = signal("second", json!("x".repeat(300)));
        assert!(m.on_text(&huge).unwrap().contains("message too big"));
        assert_eq!(
            m.on_text("not json"),
            None,
            "unusable frames are dropped silently"
        );
    }

    #[test]
    fn the_frame_rate_is_limited_with_one_error_per_run() {
        let rooms = rooms_with(RoomLimits {
            max_frames_per_second: 2,
            ..limits()
        });
        let (mut m, _rx) = rooms.connect();
        assert_eq!(m.on_text(&join("a")), None);
        assert_eq!(m.on_text(&join("a")), None);
        assert!(m.on_text(&join("a")).unwrap().contains("rate limited"));
        assert_eq!(m.on_text(&join("a")), None, "one error, then silence");
    }
}
