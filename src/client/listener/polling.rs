//! The listener's HTTP fallback: `GET /v1/inbox` with the cursor, on an interval.
//!
//! Each poll's `since` acknowledges what the caller processed since the last one, so
//! an acknowledgement reaches the relay one poll later than over a WebSocket.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Delivery, Link, ListenError, ListenEvent, Listener};
use crate::client::{ClientError, InboxPage, PolledMessage};
use crate::protocol::{Cursor, ErrorCode, GapReason};

/// Polling progress: the messages of the last page not yet handed out, and when the
/// next request is due.
pub(super) struct Poller {
    buffered: VecDeque<PolledMessage>,
    epoch: u64,
    due: Instant,
    /// Whether `Synced` was reported on this link (once, like a WebSocket session).
    synced: bool,
}

impl Poller {
    pub(super) fn new() -> Self {
        Poller {
            buffered: VecDeque::new(),
            epoch: 0,
            due: Instant::now(),
            synced: false,
        }
    }
}

impl Listener {
    /// Hands out the next buffered message, or polls when the buffer is empty.
    pub(super) async fn next_polled(&mut self) -> Result<Option<ListenEvent>, ListenError> {
        let websocket_due = self.config.websocket
            && self
                .polling_since
                .is_some_and(|since| since.elapsed() >= self.config.websocket_retry);
        let Link::Polling(poller) = &mut self.link else {
            return Ok(None);
        };
        if let Some(m) = poller.buffered.pop_front() {
            let delivery = Delivery {
                epoch: poller.epoch,
                seq: Some(m.seq),
                id: m.id,
                envelope: m.envelope,
            };
            return self.on_delivery(delivery).await;
        }
        if websocket_due {
            // Time to see whether the WebSocket works again (the proxy was fixed).
            self.link = Link::Down {
                retry_at: Instant::now(),
            };
            return Ok(None);
        }
        tokio::time::sleep_until(poller.due.into()).await;
        match self
            .http
            .poll(&self.identity, self.state.cursor(), None)
            .await
        {
            Ok(page) => self.on_page(page),
            Err(ClientError::Refused {
                code: ErrorCode::CursorAhead,
                detail,
                ..
            }) => {
                // Our cursor is past anything the inbox ever held: read it from the
                // start of the epoch; ids recognise what was processed already.
                if let Some(c) = self.state.cursor() {
                    self.state.adopt(Cursor {
                        epoch: c.epoch,
                        seq: 0,
                    });
                    self.save()?;
                }
                Ok(Some(ListenEvent::Notice(format!(
                    "the relay reported cursor_ahead ({detail}); reading the inbox from its start"
                ))))
            }
            Err(ClientError::Refused {
                status: Some(status),
                detail,
                code,
            }) if status < 500 && status != 429 => {
                Err(ListenError::Refused(ClientError::Refused {
                    code,
                    detail,
                    status: Some(status),
                }))
            }
            Err(e @ (ClientError::Url { .. } | ClientError::Tls(_))) => Err(ListenError::Client(e)),
            Err(e) => Ok(Some(self.retry_poll(e.to_string()))),
        }
    }

    /// Takes in one page: the gap (if any), the cursor for an empty page, the schedule.
    fn on_page(&mut self, page: InboxPage) -> Result<Option<ListenEvent>, ListenError> {
        self.backoff.reset();
        let mut event = None;
        if page.gap {
            // The position after the loss: before the first message that follows it.
            let seq = page
                .messages
                .first()
                .map_or(page.next.seq, |m| m.seq.saturating_sub(1));
            self.state.adopt(Cursor {
                epoch: page.epoch,
                seq,
            });
            event = Some(ListenEvent::Gap {
                epoch: page.epoch,
                seq,
                reason: page.gap_reason.unwrap_or(GapReason::Expired),
            });
        } else {
            self.state.on_ready(page.epoch);
        }
        if page.messages.is_empty() {
            // Past expired seqs, if any; nothing to process.
            self.state.advance(page.next);
        }
        self.save()?;
        let Link::Polling(poller) = &mut self.link else {
            return Ok(event);
        };
        poller.epoch = page.epoch;
        poller.due = if page.more {
            Instant::now()
        } else {
            Instant::now() + self.config.poll_interval
        };
        let caught_up = page.messages.is_empty() && !poller.synced;
        poller.buffered = page.messages.into();
        if event.is_none() && caught_up {
            poller.synced = true;
            event = Some(ListenEvent::Synced);
        }
        Ok(event)
    }

    /// Keeps polling, later: the relay is unreachable or busy.
    fn retry_poll(&mut self, error: String) -> ListenEvent {
        let retry_in = self.backoff.next_delay();
        if let Link::Polling(poller) = &mut self.link {
            poller.due = Instant::now() + retry_in;
        }
        ListenEvent::Disconnected { error, retry_in }
    }
}
