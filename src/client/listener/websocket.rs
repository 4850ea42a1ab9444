//! The listener's WebSocket link: one frame at a time, and what each close code means.

use std::sync::Arc;
use std::time::Instant;

use super::{Delivery, Link, ListenError, ListenEvent, Listener};
use crate::client::ClientError;
use crate::protocol::{Cursor, ServerFrame};

/// Close code of a session replaced by a newer one with the same key.
const REPLACED: u16 = 4001;
/// Close code of a failed authentication.
const AUTH_FAILED: u16 = 4003;

impl Listener {
    /// Reads the next frame of the live session and turns it into an event (or into
    /// nothing, for frames the caller need not see).
    pub(super) async fn next_websocket(&mut self) -> Result<Option<ListenEvent>, ListenError> {
        let Link::WebSocket { client, .. } = &mut self.link else {
            return Ok(None);
        };
        let deadline = client.last_seen() + self.config.idle_timeout;
        // `next_frame` is cancel-safe (it polls a stream), so a timeout loses nothing.
        let result = match tokio::time::timeout_at(deadline.into(), client.next_frame()).await {
            Ok(result) => result,
            Err(_) if client.last_seen() + self.config.idle_timeout <= Instant::now() => {
                let secs = self.config.idle_timeout.as_secs();
                return Ok(Some(self.retry_later(format!(
                    "the relay sent nothing for {secs} s (not even a ping)"
                ))));
            }
            // Pings arrived meanwhile: the connection is alive, wait again.
            Err(_) => return Ok(None),
        };
        match result {
            Ok(frame) => self.on_frame(frame).await,
            Err(ClientError::Closed { code: REPLACED, .. }) => Err(ListenError::Replaced),
            Err(ClientError::Closed {
                code: AUTH_FAILED,
                reason,
            }) => Err(ListenError::Refused(ClientError::Closed {
                code: AUTH_FAILED,
                reason,
            })),
            // 1001 (relay restarting), 4002 (slow consumer), 4005 (ping timeout), 4006
            // (store unavailable), 4007 (the inbox moved to a new epoch), 1011, a dropped
            // connection: the cursor makes reconnecting safe, so always reconnect.
            Err(e) => Ok(Some(self.retry_later(e.to_string()))),
        }
    }

    async fn on_frame(&mut self, frame: ServerFrame) -> Result<Option<ListenEvent>, ListenError> {
        let Link::WebSocket { epoch, .. } = &mut self.link else {
            return Ok(None);
        };
        match frame {
            ServerFrame::Deliver { seq, id, envelope } => {
                let delivery = Delivery {
                    epoch: *epoch,
                    seq,
                    id,
                    envelope: Arc::unwrap_or_clone(envelope),
                };
                self.on_delivery(delivery).await
            }
            ServerFrame::Gap {
                epoch: new_epoch,
                seq,
                reason,
            } => {
                *epoch = new_epoch;
                self.state.adopt(Cursor {
                    epoch: new_epoch,
                    seq,
                });
                self.save()?;
                Ok(Some(ListenEvent::Gap {
                    epoch: new_epoch,
                    seq,
                    reason,
                }))
            }
            ServerFrame::Synced { .. } => Ok(Some(ListenEvent::Synced)),
            ServerFrame::Error { code, detail, .. } => Ok(Some(ListenEvent::Notice(format!(
                "the relay reported {}: {detail}",
                code.as_str()
            )))),
            // Nothing else is meaningful on a listening session; ignore it rather than
            // drop a working connection.
            ServerFrame::Challenge { .. }
            | ServerFrame::Ready { .. }
            | ServerFrame::Accepted { .. } => Ok(None),
        }
    }
}
