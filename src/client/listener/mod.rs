//! A long-lived reader of one inbox: the client side of "nothing is lost, nothing is
//! shown twice".
//!
//! A [`Listener`] connects, authenticates with its cursor, and hands the caller one
//! [`ListenEvent`] at a time. The caller processes each message and then calls
//! [`Listener::ack`], which records the id, saves the cursor and only then acknowledges
//! to the relay: a crash before the ack means a redelivery (recognised by id), never a
//! loss. When the connection ends the listener reconnects with jittered exponential
//! backoff and resumes from the saved cursor. When a relay (or a proxy in front of it)
//! answers the WebSocket upgrade with an HTTP error, it polls `GET /v1/inbox` instead.
//!
//! Submodules: `config`, `events` (what the caller sees), `websocket` (the live session
//! link) and `polling` (the HTTP fallback).
//! Owns: connection lifecycle, deduplication, cursor persistence. Does not: decrypt or
//! print (the caller's business).

mod config;
mod events;
mod polling;
mod websocket;

pub use config::ListenerConfig;
pub use events::{Delivery, ListenError, ListenEvent, Transport};

use std::time::Instant;

use super::state::{InboxState, StateFile};
use super::{Backoff, ClientError, HttpClient, WsClient};
use crate::protocol::{Codec, Cursor, Envelope, Identity, MessageId};

/// The listener's link to the relay.
enum Link {
    /// Not connected; try again at `retry_at`.
    Down {
        retry_at: Instant,
    },
    /// Boxed: a WebSocket stream is large, and the other variants are small.
    WebSocket {
        client: Box<WsClient>,
        epoch: u64,
    },
    Polling(polling::Poller),
}

/// A resumable, deduplicating reader of one inbox. See the module docs.
pub struct Listener {
    config: ListenerConfig,
    identity: Identity,
    state: InboxState,
    file: Option<StateFile>,
    http: HttpClient,
    link: Link,
    backoff: Backoff,
    /// Set once a WebSocket upgrade was refused with an HTTP error: poll from now on
    /// (until `websocket_retry` has passed).
    polling_since: Option<Instant>,
}

impl Listener {
    /// A listener for `identity`'s inbox, resuming from `file` (when given) or from
    /// the start of the inbox. Nothing is sent until the first [`Listener::next`].
    pub fn new(
        config: ListenerConfig,
        identity: Identity,
        file: Option<StateFile>,
    ) -> Result<Self, ListenError> {
        let state = match &file {
            Some(f) => f.load()?,
            None => InboxState::default(),
        };
        let http = HttpClient::with_tls(&config.server, Codec::Json, &config.tls)
            .map_err(ListenError::Client)?;
        Ok(Listener {
            backoff: config.backoff.clone(),
            config,
            identity,
            state,
            file,
            http,
            link: Link::Down {
                retry_at: Instant::now(),
            },
            polling_since: None,
        })
    }

    /// The cursor the listener would present now.
    pub fn cursor(&self) -> Option<Cursor> {
        self.state.cursor()
    }

    /// The next event. Errors are final: the listener does not recover from them.
    pub async fn next(&mut self) -> Result<ListenEvent, ListenError> {
        loop {
            let event = match &mut self.link {
                Link::Down { retry_at } => {
                    tokio::time::sleep_until((*retry_at).into()).await;
                    self.connect().await?
                }
                Link::WebSocket { .. } => self.next_websocket().await?,
                Link::Polling(_) => self.next_polled().await?,
            };
            if let Some(event) = event {
                return Ok(event);
            }
        }
    }

    /// Marks `delivery` processed: remembers its id, saves the cursor, then
    /// acknowledges it to the relay (over HTTP, the next poll carries it).
    pub async fn ack(&mut self, delivery: &Delivery) -> Result<(), ListenError> {
        self.state
            .processed(delivery.epoch, delivery.seq, delivery.id);
        self.save()?;
        if let (Some(seq), Link::WebSocket { client, .. }) = (delivery.seq, &mut self.link) {
            // A failed ack is harmless: the next session presents the saved cursor,
            // which acknowledges the same messages.
            let _ = client.ack(seq).await;
        }
        Ok(())
    }

    /// Closes the connection politely (unacknowledged messages stay queued).
    pub async fn close(mut self) {
        let link = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at: Instant::now(),
            },
        );
        if let Link::WebSocket { client, .. } = link {
            (*client).close().await;
        }
    }

    /// Opens a WebSocket session, or the polling fallback once it was refused.
    async fn connect(&mut self) -> Result<Option<ListenEvent>, ListenError> {
        if !self.config.websocket {
            self.link = Link::Polling(polling::Poller::new());
            return Ok(Some(ListenEvent::Connected {
                transport: Transport::Polling,
                detail: None,
            }));
        }
        if let Some(since) = self.polling_since {
            if since.elapsed() < self.config.websocket_retry {
                self.link = Link::Polling(polling::Poller::new());
                return Ok(Some(ListenEvent::Connected {
                    transport: Transport::Polling,
                    detail: None,
                }));
            }
            self.polling_since = None;
        }
        let result = WsClient::connect_with(
            &self.config.server,
            &self.identity,
            self.state.cursor(),
            self.config.codec,
            Some(&self.config.tls),
        )
        .await;
        match result {
            Ok((client, ready)) => {
                self.backoff.reset();
                self.state.on_ready(ready.epoch);
                self.save()?;
                self.link = Link::WebSocket {
                    client: Box::new(client),
                    epoch: ready.epoch,
                };
                Ok(Some(ListenEvent::Connected {
                    transport: Transport::WebSocket,
                    detail: None,
                }))
            }
            Err(ClientError::UpgradeRefused { status, detail })
                if status < 500 && status != 429 =>
            {
                self.polling_since = Some(Instant::now());
                self.link = Link::Polling(polling::Poller::new());
                Ok(Some(ListenEvent::Connected {
                    transport: Transport::Polling,
                    detail: Some(format!(
                        "WebSocket refused (HTTP {status}: {detail}); polling over HTTP"
                    )),
                }))
            }
            Err(e @ (ClientError::Refused { .. } | ClientError::Unexpected(_))) => {
                Err(ListenError::Refused(e))
            }
            Err(ClientError::Closed { code: 4003, reason }) => {
                Err(ListenError::Refused(ClientError::Closed {
                    code: 4003,
                    reason,
                }))
            }
            Err(e @ (ClientError::Url { .. } | ClientError::Tls(_))) => Err(ListenError::Client(e)),
            Err(e) => Ok(Some(self.retry_later(e.to_string()))),
        }
    }

    /// Drops the link and schedules the next attempt.
    fn retry_later(&mut self, error: String) -> ListenEvent {
        let retry_in = self.backoff.next_delay();
        self.link = Link::Down {
            retry_at: Instant::now() + retry_in,
        };
        ListenEvent::Disconnected { error, retry_in }
    }

    fn save(&self) -> Result<(), ListenError> {
        if let Some(file) = &self.file {
            file.save(&self.state)?;
        }
        Ok(())
    }

    /// Checks a delivery as PROTOCOL.md section 10 asks of clients: strict signature,
    /// addressed to us, and the id the relay gave is the envelope's.
    fn check(&self, id: &MessageId, envelope: &Envelope) -> Result<(), String> {
        if envelope.recipient != self.identity.public_key() {
            return Err("addressed to another key".into());
        }
        let bytes = envelope.signing_bytes();
        envelope
            .sender
            .verify(&bytes, &envelope.signature)
            .map_err(|e| e.to_string())?;
        if crate::protocol::message_id(&bytes) != *id {
            return Err("the relay's id does not match the envelope".into());
        }
        Ok(())
    }

    /// The common path of a delivery from either transport: verify, drop duplicates
    /// (acknowledging them, they were processed before), or hand it to the caller.
    async fn on_delivery(
        &mut self,
        delivery: Delivery,
    ) -> Result<Option<ListenEvent>, ListenError> {
        if let Err(reason) = self.check(&delivery.id, &delivery.envelope) {
            self.ack(&delivery).await?;
            return Ok(Some(ListenEvent::Rejected {
                id: delivery.id,
                reason,
            }));
        }
        if self.state.is_duplicate(&delivery.id) {
            self.ack(&delivery).await?;
            return Ok(None);
        }
        Ok(Some(ListenEvent::Message(delivery)))
    }
}
