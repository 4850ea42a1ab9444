//! Signalling rooms across nodes over Redis pub/sub; started only when the store is
//! Redis (every node on that Redis then shares the rooms).
//!
//! Each room has one channel, `whispr:signal:{<SHA-256 of the call id, hex>}`: hashing
//! makes any call id a safe channel name, and the braces are a Redis Cluster hash tag
//! (as in `notify`, plain `SUBSCRIBE`/`PUBLISH` are used because redis 1.2's single-node
//! async pub/sub has no sharded variants). A node is subscribed while it has a local
//! member in the room. Every join, signal and leave of a local member is published as
//! JSON `{"n": node, "c": connection, "k": "j"|"h"|"s"|"l", "id": call id, "p": payload}`;
//! a node drops what it published itself (its own members were served locally) and
//! hands the rest to [`Rooms::on_remote`]. `h` ("here") answers a join so the joining
//! node can count the members that were there before it subscribed.
//!
//! This task owns its own pub/sub connection (separate from `notify`'s, so the two do
//! not depend on each other), and a publisher task owns a connection manager (a
//! subscribed connection cannot publish). While Redis is away, local rooms keep working:
//! the task remembers which rooms it should be subscribed to, reconnects every
//! [`RECONNECT_DELAY`], subscribes again, and forgets the remote members it knew of
//! (their leaves may have been missed). Pub/sub is at-most-once: signals published
//! while a node is disconnected are lost, as they would be on a dropped socket; WebRTC
//! clients retry their offers and gather candidates again.

use crate::redis_link::{bounded, run_publisher, Publisher, PUBLISH_QUEUE};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CallId, Command, Event, Rooms};

/// Wait between attempts to reconnect the subscriber.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The Redis channel of a room.
pub fn channel(call_id: &CallId) -> String {
    crate::redis_keys::signal_room(&call_id.digest_hex())
}

/// One event on a room's channel.
#[derive(Debug, Serialize, Deserialize)]
struct Wire<'a> {
    n: u64,
    c: u64,
    k: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    p: Option<&'a RawValue>,
}

fn encode(node: u64, call_id: &CallId, conn: u64, event: &Event) -> String {
    let (k, p) = match event {
        Event::Join => ("j", None),
        Event::Here => ("h", None),
        Event::Signal(payload) => ("s", Some(&**payload)),
        Event::Leave => ("l", None),
    };
    let wire = Wire {
        n: node,
        c: conn,
        k: k.into(),
        id: call_id.key().into(),
        p,
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

fn decode(payload: &str) -> Option<(u64, CallId, u64, Event)> {
    let wire: Wire = serde_json::from_str(payload).ok()?;
    let event = match wire.k.as_ref() {
        "j" => Event::Join,
        "h" => Event::Here,
        "s" => Event::Signal(wire.p?.to_owned()),
        "l" => Event::Leave,
        _ => return None,
    };
    Some((wire.n, CallId::from_key(&wire.id)?, wire.c, event))
}

/// Starts the subscriber and publisher tasks serving `commands` (the receiving end of
/// the channel given to [`Rooms::new`]). They end when `stop` is cancelled.
pub fn start(
    client: redis::Client,
    rooms: Arc<Rooms>,
    commands: mpsc::UnboundedReceiver<Command>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let (publish, outbox) = mpsc::channel(PUBLISH_QUEUE);
    tracker.spawn(run_publisher(
        Publisher::single(client.clone()),
        outbox,
        stop.clone(),
        "signal pub/sub",
    ));
    let remote = Remote {
        client,
        rooms,
        node: rand::random(),
        subscribed: HashSet::new(),
        publish,
        connected_before: false,
    };
    tracker.spawn(remote.run(commands, stop));
}

type Sink = redis::aio::PubSubSink;
type Stream = redis::aio::PubSubStream;

/// The subscriber side of one node.
struct Remote {
    client: redis::Client,
    rooms: Arc<Rooms>,
    node: u64,
    /// Rooms with local members: what the connection should be subscribed to.
    subscribed: HashSet<CallId>,
    publish: mpsc::Sender<(String, String)>,
    connected_before: bool,
}

impl Remote {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        loop {
            let Some((mut sink, mut stream)) = self.connect(&mut commands, &stop).await else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        if let Err(e) = self.on_command(Some(&mut sink), cmd).await {
                            tracing::warn!(error = %e, "signal pub/sub: command failed; reconnecting");
                            break;
                        }
                    }
                    msg = stream.next() => match msg {
                        Some(msg) => self.on_message(&msg),
                        None => {
                            tracing::warn!("signal pub/sub connection lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Connects and subscribes to every room with local members, serving commands
    /// between attempts. `None` when stopped.
    async fn connect(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: &CancellationToken,
    ) -> Option<(Sink, Stream)> {
        loop {
            match self.try_connect().await {
                Ok(pair) => {
                    if self.connected_before {
                        tracing::info!("signal pub/sub reconnected");
                        self.rooms.forget_remote();
                    }
                    self.connected_before = true;
                    return Some(pair);
                }
                Err(e) => tracing::warn!(error = %e, "signal pub/sub: cannot connect; retrying"),
            }
            let retry = tokio::time::sleep(RECONNECT_DELAY);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = &mut retry => break,
                    cmd = commands.recv() => {
                        // Not subscribed now: remember the rooms, keep publishing.
                        let _ = self.on_command(None, cmd?).await;
                    }
                }
            }
        }
    }

    async fn try_connect(&self) -> redis::RedisResult<(Sink, Stream)> {
        let pubsub = bounded(self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let channels: Vec<String> = self.subscribed.iter().map(channel).collect();
        if !channels.is_empty() {
            bounded(sink.subscribe(&channels)).await?;
        }
        Ok((sink, stream))
    }

    async fn on_command(
        &mut self,
        sink: Option<&mut Sink>,
        cmd: Command,
    ) -> redis::RedisResult<()> {
        match cmd {
            Command::Subscribe(call_id) => {
                let name = channel(&call_id);
                if self.subscribed.insert(call_id) {
                    if let Some(sink) = sink {
                        bounded(sink.subscribe(name)).await?;
                    }
                }
            }
            Command::Unsubscribe(call_id) => {
                let name = channel(&call_id);
                if self.subscribed.remove(&call_id) {
                    if let Some(sink) = sink {
                        bounded(sink.unsubscribe(name)).await?;
                    }
                }
            }
            Command::Publish {
                call_id,
                conn,
                event,
            } => {
                let message = (channel(&call_id), encode(self.node, &call_id, conn, &event));
                match self.publish.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!("signal pub/sub: publish queue full; dropping an event")
                    }
                    // The publisher has stopped: the relay is shutting down.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        Ok(())
    }

    fn on_message(&self, msg: &redis::Msg) {
        let payload: String = msg.get_payload().unwrap_or_default();
        match decode(&payload) {
            Some((node, _, _, _)) if node == self.node => {}
            Some((node, call_id, conn, event)) => self.rooms.on_remote(&call_id, node, conn, event),
            None => tracing::debug!(
                channel = msg.get_channel_name(),
                "unknown signal pub/sub payload"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_hashed_and_carry_a_hash_tag() {
        let c = CallId::string("any {odd} id\n").unwrap();
        let name = channel(&c);
        assert_eq!(name, format!("whispr:signal:{{{}}}", c.digest_hex()));
        assert_eq!(name.len(), "whispr:signal:{}".len() + 64);
    }

    #[test]
    fn events_round_trip() {
        let c = CallId::string("c1").unwrap();
        let payload = RawValue::from_string(r#"{"sdp":"v=0","x":1.50}"#.into()).unwrap();
        for event in [
            Event::Join,
            Event::Here,
            Event::Signal(payload),
            Event::Leave,
        ] {
            let text = encode(u64::MAX, &c, 7, &event);
            assert_eq!(decode(&text), Some((u64::MAX, c.clone(), 7, event)));
        }
        assert_eq!(decode("w 1"), None);
        assert_eq!(decode(r#"{"n":1,"c":2,"k":"s","id":"s:c1"}"#), None);
        assert_eq!(decode(r#"{"n":1,"c":2,"k":"z","id":"s:c1"}"#), None);
    }
}
