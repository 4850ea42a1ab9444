//! `whispr listen` (stay connected, print messages as they come) and `whispr inbox`
//! (read what is queued over HTTP, once).
//!
//! Both keep their position in `KEYFILE.cursor` beside the identity file and print a
//! message before acknowledging it, so an interruption at any point shows a message
//! again rather than losing it; the ids in the cursor file keep it from being shown
//! twice.

use std::path::PathBuf;
use std::time::Duration;

use super::output::Printer;
use super::{CliError, RelayOptions};
use crate::client::keyfile;
use crate::client::{ListenEvent, Listener, ListenerConfig, StateFile};
use crate::protocol::Codec;

/// Flags of `whispr listen` and `whispr inbox`.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    pub relay: RelayOptions,
    /// The reader's identity file; the cursor lives in `KEY.cursor`.
    pub key: PathBuf,
    /// One JSON object per message instead of text lines.
    pub json: bool,
    /// WebSocket encoding: MessagePack instead of JSON.
    pub msgpack: bool,
}

impl ListenOptions {
    fn listener(&self, websocket: bool) -> Result<(Listener, Printer), CliError> {
        let identity = keyfile::load(&self.key)?;
        let state = StateFile::new(keyfile::sibling(&self.key, ".cursor"));
        let mut config = ListenerConfig::new(self.relay.server.clone(), self.relay.tls()?);
        config.websocket = websocket;
        if self.msgpack {
            config.codec = Codec::MsgPack;
        }
        if !websocket {
            // One read: no pause between pages.
            config.poll_interval = Duration::ZERO;
        }
        let command = if websocket { "listen" } else { "inbox" };
        let printer = Printer::new(&identity, self.json, command);
        let listener = Listener::new(config, identity, Some(state))
            .map_err(|e| CliError::from_listen(e, &self.relay.server))?;
        Ok((listener, printer))
    }
}

/// Prints messages as they arrive until `stop` resolves (Ctrl-C, SIGTERM) or the
/// session is taken over. Survives relay restarts and network drops by reconnecting.
pub async fn listen(
    options: &ListenOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let (mut listener, printer) = options.listener(true)?;
    let server = &options.relay.server;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            event = listener.next() => event.map_err(|e| CliError::from_listen(e, server))?,
            _ = &mut stop => break,
        };
        match event {
            ListenEvent::Message(delivery) => {
                printer.message(&delivery)?;
                listener
                    .ack(&delivery)
                    .await
                    .map_err(|e| CliError::from_listen(e, server))?;
            }
            other => printer.event(&other),
        }
    }
    listener.close().await;
    Ok(())
}

/// Reads everything queued after the saved cursor over HTTP, prints it, and
/// acknowledges it (the last, empty poll carries the final cursor to the relay).
pub async fn inbox(options: &ListenOptions) -> Result<(), CliError> {
    let (mut listener, printer) = options.listener(false)?;
    let server = &options.relay.server;
    loop {
        let event = listener
            .next()
            .await
            .map_err(|e| CliError::from_listen(e, server))?;
        match event {
            ListenEvent::Message(delivery) => {
                printer.message(&delivery)?;
                listener
                    .ack(&delivery)
                    .await
                    .map_err(|e| CliError::from_listen(e, server))?;
            }
            ListenEvent::Synced => return Ok(()),
            ListenEvent::Disconnected { error, .. } => {
                return Err(CliError::unreachable("reading the inbox", server, &error))
            }
            ListenEvent::Connected { .. } => {}
            other => printer.event(&other),
        }
    }
}
