//! Cross-node wake-ups and takeovers over Redis pub/sub; built only when the store is
//! Redis, so every node sees the same inboxes.
//!
//! Each inbox has one channel, `whispr:{<inbox hex>}:n` (the inbox's hash tag, like its
//! store keys). A node subscribes to it while a local session for that inbox is
//! registered, and unsubscribes when the session leaves; there is no global channel that
//! every node filters. Two payloads travel on it:
//! - `w <node>`: "the inbox has new stored messages" (published by the relay on `<node>`
//!   after a store insert); any other node receiving it calls [`Registry::notify`] (the
//!   sending node woke its own session already).
//! - `t <node> <session>`: a session on `<node>` took the inbox over. Redis delivers the
//!   messages of one channel in one order to every subscriber, so a node whose own
//!   takeover for its local session was already echoed back knows that a later takeover
//!   from another node is newer, and closes its session; one whose echo has not come yet
//!   knows its own session is the newer one and keeps it. No clocks are compared.
//!
//! Whispr v1 sockets (many per key, no takeover) and ephemeral envelopes do not use
//! these channels: v1 sockets on another node are woken by the catch-up below, and an
//! ephemeral envelope reaches its recipient only on the node it was sent through.
//!
//! Pub/sub is at-most-once: a wake-up published while a node is reconnecting is lost.
//! Sessions read from the store, so nothing is lost, only late: after every reconnect
//! the node wakes all its local sessions, and [`catch_up`] wakes them all every
//! `ws_catch_up_seconds` in any case.
//!
//! Why `PUBLISH`/`SUBSCRIBE` and not sharded `SPUBLISH`/`SSUBSCRIBE`: redis 1.2.2 offers
//! `ssubscribe` only on its cluster connection; its single-node async `PubSub` has
//! `subscribe`/`psubscribe` only. On one Redis the two behave the same (only nodes
//! subscribed to an inbox's channel get its messages). The channel names already carry
//! the inbox hash tag, so moving to Redis Cluster means switching to the cluster
//! connection's `ssubscribe` and `SPUBLISH` without renaming anything.
//!
//! The registry never awaits: it sends [`Command`]s on an unbounded channel to the task
//! here, which owns the pub/sub connection, and publishes through a second task with its
//! own connection (a subscribed connection cannot publish).

use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::PublicKey;
use crate::registry::Registry;

/// What the registry and the relay ask of the pub/sub task.
#[derive(Debug)]
pub enum Command {
    /// A local session now owns `key`'s inbox: subscribe, then announce the takeover.
    Registered { key: PublicKey, session: u64 },
    /// The local session `session` for `key` left.
    Unregistered { key: PublicKey, session: u64 },
    /// `key`'s inbox has new stored messages: wake whichever node holds its session.
    Wake(PublicKey),
}

/// The sending side handed to the [`Registry`].
pub type Commands = mpsc::UnboundedSender<Command>;

/// Publishes queued per batch; a larger backlog waits for the next round trip.
const PUBLISH_BATCH: usize = 256;
/// Wait between attempts to reconnect the subscriber.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The Redis channel carrying `key`'s wake-ups and takeovers.
pub fn channel(key: &PublicKey) -> String {
    format!("whispr:{{{}}}:n", key.to_hex())
}

fn key_of(channel: &str) -> Option<PublicKey> {
    let hex = channel.strip_prefix("whispr:{")?.strip_suffix("}:n")?;
    let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
    Some(PublicKey::from_bytes(bytes))
}

/// This node's local session for one inbox, as the pub/sub task tracks it.
struct Local {
    session: u64,
    /// Whether this session's own takeover has come back on the channel.
    echoed: bool,
}

/// A pub/sub message, decoded.
#[derive(Debug, PartialEq)]
enum Event {
    Wake { node: u64 },
    Takeover { node: u64, session: u64 },
}

impl Event {
    fn parse(payload: &str) -> Option<Event> {
        let mut parts = payload.split(' ');
        match parts.next()? {
            "w" => Some(Event::Wake {
                node: u64::from_str_radix(parts.next()?, 16).ok()?,
            }),
            "t" => Some(Event::Takeover {
                node: u64::from_str_radix(parts.next()?, 16).ok()?,
                session: parts.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Event::Wake { node } => format!("w {node:x}"),
            Event::Takeover { node, session } => format!("t {node:x} {session}"),
        }
    }
}

/// The pub/sub side of one node.
pub struct Remote {
    client: redis::Client,
    registry: Arc<Registry>,
    node: u64,
    locals: HashMap<PublicKey, Local>,
    publish: mpsc::UnboundedSender<(String, String)>,
}

/// Starts the pub/sub tasks serving `commands` (the receiving end of the channel given
/// to [`Registry::with_remote`]). The tasks end when `stop` is cancelled.
pub fn start(
    url: &str,
    registry: Arc<Registry>,
    commands: mpsc::UnboundedReceiver<Command>,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let (publish, outbox) = mpsc::unbounded_channel();
    tracker.spawn(publisher(client.clone(), outbox, stop.clone()));
    let remote = Remote {
        client,
        registry,
        node: rand::random(),
        locals: HashMap::new(),
        publish,
    };
    tracker.spawn(remote.run(commands, stop));
    Ok(())
}

impl Remote {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut first = true;
        loop {
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                p = self.client.get_async_pubsub() => p,
            };
            let (mut sink, mut stream) = match pubsub {
                Ok(p) => p.split(),
                Err(e) => {
                    tracing::warn!(error = %e, "Redis pub/sub: cannot connect; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    }
                }
            };
            let channels: Vec<String> = self.locals.keys().map(channel).collect();
            if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
                continue;
            }
            // A takeover announced while the connection was failing may be lost.
            for (key, local) in self.locals.iter().filter(|(_, l)| !l.echoed) {
                let event = Event::Takeover {
                    node: self.node,
                    session: local.session,
                };
                let _ = self.publish.send((channel(key), event.encode()));
            }
            if !first {
                // Wake-ups published while we were away are lost: read the store again.
                tracing::info!("Redis pub/sub reconnected; waking every local session");
                self.registry.wake_all();
            }
            first = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(cmd) = commands.recv() => {
                        if let Err(e) = self.on_command(&mut sink, cmd).await {
                            tracing::warn!(error = %e, "Redis pub/sub: command failed; reconnecting");
                            break;
                        }
                    }
                    msg = stream.next() => match msg {
                        Some(msg) => self.on_message(&msg),
                        None => {
                            tracing::warn!("Redis pub/sub connection lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn on_command(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        cmd: Command,
    ) -> redis::RedisResult<()> {
        match cmd {
            Command::Registered { key, session } => {
                let fresh = self
                    .locals
                    .insert(
                        key,
                        Local {
                            session,
                            echoed: false,
                        },
                    )
                    .is_none();
                if fresh {
                    sink.subscribe(channel(&key)).await?;
                    // A wake-up published before the subscription took effect was
                    // missed: read the store once more.
                    self.registry.notify(&key);
                }
                // Subscribed first, so this node sees its own takeover come back and
                // knows where it stands in the channel's order.
                let event = Event::Takeover {
                    node: self.node,
                    session,
                };
                let _ = self.publish.send((channel(&key), event.encode()));
            }
            Command::Unregistered { key, session } => {
                if self.locals.get(&key).is_some_and(|l| l.session == session) {
                    self.locals.remove(&key);
                    sink.unsubscribe(channel(&key)).await?;
                }
            }
            Command::Wake(key) => {
                let event = Event::Wake { node: self.node };
                let _ = self.publish.send((channel(&key), event.encode()));
            }
        }
        Ok(())
    }

    fn on_message(&mut self, msg: &redis::Msg) {
        let Some(key) = key_of(msg.get_channel_name()) else {
            return;
        };
        let payload: String = msg.get_payload().unwrap_or_default();
        match Event::parse(&payload) {
            Some(Event::Wake { node }) => {
                if node != self.node {
                    self.registry.notify(&key);
                }
            }
            Some(Event::Takeover { node, session }) => {
                let Some(local) = self.locals.get_mut(&key) else {
                    return;
                };
                if node == self.node {
                    if session == local.session {
                        local.echoed = true;
                    }
                } else if local.echoed {
                    // Our session announced itself before this one: it is the older.
                    tracing::debug!(key = %key, "taken over by a session on another node");
                    self.registry.replace(&key, local.session);
                }
            }
            None => tracing::debug!(channel = msg.get_channel_name(), "unknown pub/sub payload"),
        }
    }
}

/// Publishes queued events in pipelined batches. A failed batch is dropped: pub/sub is
/// at-most-once anyway, and sessions catch up from the store.
async fn publisher(
    client: redis::Client,
    mut outbox: mpsc::UnboundedReceiver<(String, String)>,
    stop: CancellationToken,
) {
    let mut conn = None;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = outbox.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
        }
        if conn.is_none() {
            conn = client.get_connection_manager().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            tracing::warn!(
                dropped = batch.len(),
                "Redis pub/sub: cannot connect to publish"
            );
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        for (channel, payload) in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(c).await {
            tracing::warn!(error = %e, "Redis pub/sub: publish failed");
        }
    }
}

/// Wakes every local session every `every`, so a lost wake-up delays a message by at
/// most that long. Runs only with the Redis store (on one node nothing is lost).
pub async fn catch_up(registry: Arc<Registry>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => registry.wake_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    #[test]
    fn channel_names_carry_the_inbox_hash_tag_and_parse_back() {
        let key = Identity::generate().public_key();
        let name = channel(&key);
        assert_eq!(name, format!("whispr:{{{}}}:n", key.to_hex()));
        assert_eq!(key_of(&name), Some(key));
        assert_eq!(key_of("whispr:{zz}:n"), None);
    }

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Wake { node: 1 },
            Event::Takeover {
                node: u64::MAX,
                session: 7,
            },
        ] {
            assert_eq!(Event::parse(&e.encode()), Some(e));
        }
        assert_eq!(Event::parse("x"), None);
        assert_eq!(Event::parse("w"), None);
        assert_eq!(Event::parse("t zz 1"), None);
    }
}
