//! What a listener hands its caller: deliveries, events, and final errors.

use std::time::Duration;

use crate::client::state::StateError;
use crate::client::ClientError;
use crate::protocol::{Envelope, GapReason, MessageId};

/// How the listener currently reaches the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Polling,
}

/// A message for this reader whose signature, recipient and id were checked.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The inbox epoch it belongs to.
    pub epoch: u64,
    /// Its place in the inbox; `None` for an ephemeral message.
    pub seq: Option<u64>,
    pub id: MessageId,
    pub envelope: Envelope,
}

/// What [`Listener::next`](super::Listener::next) reports.
#[derive(Clone, Debug)]
pub enum ListenEvent {
    /// Connected (or fell back to polling: `detail` says why).
    Connected {
        transport: Transport,
        detail: Option<String>,
    },
    /// A new message: process it, then call [`Listener::ack`](super::Listener::ack).
    Message(Delivery),
    /// Messages after the cursor were lost (expired, or the inbox history was lost).
    /// The listener has already moved its cursor to `epoch`/`seq`.
    Gap {
        epoch: u64,
        seq: u64,
        reason: GapReason,
    },
    /// Everything queued at connection time has been delivered.
    Synced,
    /// A delivery that failed verification; it was acknowledged and dropped.
    Rejected { id: MessageId, reason: String },
    /// The relay said something worth showing that changes nothing (an `error` frame
    /// outside a send, such as `cursor_ahead`).
    Notice(String),
    /// The connection failed or ended; the listener retries after `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}

/// Why a listener stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another session with the same key took over (close 4001); not reconnecting so that two readers do not take turns forever")]
    Replaced,
    #[error("the relay refused this key: {0}")]
    Refused(ClientError),
    #[error(transparent)]
    Client(ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}
