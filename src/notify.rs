//! Cross-node wake-ups and takeovers over Redis pub/sub; built only when the store is
//! Redis, so every node sees the same inboxes.
//!
//! Each inbox has one channel, `whispr:{<inbox hex>}:n` (the inbox's hash tag, like its
//! store keys; every name is built in [`crate::redis_keys`]). A node subscribes to it while a local session for that inbox is
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
//! Whispr v1 sockets (many per key, no takeover) subscribe to their derived inbox's
//! channel too, for wake-ups only ([`Command::Watch`]). A third payload, `e <base64>`,
//! carries an ephemeral envelope to the node holding the recipient's session (published
//! directly by the relay, whose answer `online` is Redis's subscriber count; the
//! receiving node verifies the envelope again). v1 sender copies stay on their node.
//!
//! Pub/sub is at-most-once: a wake-up published while a node is reconnecting is lost.
//! Sessions read from the store, so nothing is lost, only late: after every reconnect
//! the node wakes all its local sessions, and [`catch_up`] wakes them all every
//! `ws_catch_up_seconds` in any case.
//!
//! On one Redis the node uses `PUBLISH`/`SUBSCRIBE` on a dedicated RESP2 pub/sub
//! connection (redis 1.2.2's single-node `PubSub` has no `ssubscribe`); only nodes
//! subscribed to an inbox's channel get its messages. On Redis Cluster it uses sharded
//! pub/sub, `SPUBLISH`/`SSUBSCRIBE`, on a RESP3 cluster connection: a channel lives on
//! the master owning its slot (the inbox's hash tag, the same slot as the inbox's
//! keys), so messages are not broadcast over the cluster bus to every master as
//! classic pub/sub would be. redis-rs renews the sharded subscriptions after a
//! reconnect or a slot move and reports a dropped node link, after which the node
//! wakes its sessions as above.
//!
//! The registry never awaits: it sends [`Command`]s on an unbounded channel to the task
//! here, which owns the pub/sub connection, and publishes through a second task with its
//! own connection (a subscribed connection cannot publish).

use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Envelope, PublicKey, VerifiedEnvelope};
use crate::redis_keys;
use crate::redis_link::{
    bounded, run_publisher, Publisher, RedisLink, RedisNodes, RedisTarget, PUBLISH_QUEUE,
};
use crate::registry::Registry;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use redis::cluster_async::ClusterConnection;

/// What the registry and the relay ask of the pub/sub task.
#[derive(Debug)]
pub enum Command {
    /// A local session now owns `key`'s inbox: subscribe, then announce the takeover.
    Registered { key: PublicKey, session: u64 },
    /// The local session `session` for `key` left.
    Unregistered { key: PublicKey, session: u64 },
    /// `key`'s inbox has new stored messages: wake whichever node holds its session.
    Wake(PublicKey),
    /// The first Whispr v1 socket for the (derived) inbox `key` opened here: hear its
    /// wake-ups too. v1 sockets take nothing over, so there is no takeover to announce.
    Watch(PublicKey),
    /// The last v1 socket for `key` closed.
    Unwatch(PublicKey),
}

/// Verifies an envelope that came from another node.
pub type Verifier = Arc<dyn Fn(Envelope) -> Option<VerifiedEnvelope> + Send + Sync>;

/// The pub/sub payload carrying an ephemeral envelope.
pub fn ephemeral_payload(envelope: &Envelope) -> Result<String, rmp_serde::encode::Error> {
    Ok(Event::Ephemeral(rmp_serde::to_vec_named(envelope)?).encode())
}

/// Publishes an ephemeral envelope's payload on `key`'s channel, right away (the
/// sender waits for the answer); `true` when some node holding a session for `key`
/// received it (the number of subscribers Redis reports).
pub async fn publish_ephemeral(
    link: &RedisLink,
    key: &PublicKey,
    payload: String,
) -> redis::RedisResult<bool> {
    let command = if link.is_cluster() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    let receivers: i64 = redis::cmd(command)
        .arg(ephemeral_channel(key))
        .arg(payload)
        .query_async(&mut link.clone())
        .await?;
    Ok(receivers > 0)
}

/// The sending side handed to the [`Registry`].
pub type Commands = mpsc::UnboundedSender<Command>;

/// How often unechoed takeovers are announced again and failed cluster subscriptions
/// retried.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Wait between attempts to reconnect the subscriber.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The Redis channel carrying `key`'s wake-ups and takeovers.
pub fn channel(key: &PublicKey) -> String {
    redis_keys::inbox_channel(key, redis_keys::InboxChannel::Wake)
}

/// The Redis channel carrying ephemeral envelopes for `key`'s native session. Apart
/// from `channel` so that only nodes with a native session subscribe to it, and the
/// subscriber count a publish returns means "a session is there" (v1 sockets listen
/// for wake-ups only).
pub fn ephemeral_channel(key: &PublicKey) -> String {
    redis_keys::inbox_channel(key, redis_keys::InboxChannel::Ephemeral)
}

/// Which of an inbox's channels a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `:n`: wake-ups and takeovers.
    Notify,
    /// `:e`: ephemeral envelopes.
    Ephemeral,
}

fn key_of(channel: &str) -> Option<(PublicKey, Kind)> {
    let (key, which) = redis_keys::parse_inbox_channel(channel)?;
    let kind = match which {
        redis_keys::InboxChannel::Wake => Kind::Notify,
        redis_keys::InboxChannel::Ephemeral => Kind::Ephemeral,
    };
    Some((key, kind))
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
    Wake {
        node: u64,
    },
    Takeover {
        node: u64,
        session: u64,
    },
    /// An ephemeral envelope (MessagePack, base64) for the session of the channel's
    /// inbox; published by a node where that session is not.
    Ephemeral(Vec<u8>),
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
            "e" => Some(Event::Ephemeral(STANDARD.decode(parts.next()?).ok()?)),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Event::Wake { node } => format!("w {node:x}"),
            Event::Takeover { node, session } => format!("t {node:x} {session}"),
            Event::Ephemeral(bytes) => format!("e {}", STANDARD.encode(bytes)),
        }
    }
}

/// The pub/sub side of one node.
pub struct Remote {
    registry: Arc<Registry>,
    /// Checks an ephemeral envelope from another node (signature, timestamp window)
    /// before a session gets it: only verified envelopes reach sessions.
    verify: Verifier,
    node: u64,
    locals: HashMap<PublicKey, Local>,
    /// Inboxes with Whispr v1 sockets here (their channels carry wake-ups only).
    watched: HashSet<PublicKey>,
    /// Cluster only: local inboxes whose `SSUBSCRIBE` failed or may have been lost
    /// with a node link; retried every [`RETRY_EVERY`]. (On one Redis a failed command
    /// reconnects, and the new connection subscribes to every local inbox.)
    pending: HashSet<PublicKey>,
    /// Cluster only: channels whose `SUNSUBSCRIBE` failed, retried every
    /// [`RETRY_EVERY`] (a stale `:e` subscription would answer "online" for a session
    /// that left).
    stale: HashSet<String>,
    /// Events for the publisher task (bounded: when Redis is slow they are dropped,
    /// and the re-announce tick and the catch-up make up for them).
    publish: mpsc::Sender<(String, String)>,
}

/// The connection that holds this node's subscriptions.
enum Subscriber<'a> {
    /// One Redis: a RESP2 pub/sub connection, `SUBSCRIBE`.
    Single(&'a mut redis::aio::PubSubSink),
    /// Redis Cluster: sharded pub/sub on the cluster connection (RESP3), `SSUBSCRIBE`,
    /// which goes to the master owning the channel's slot and is renewed by redis-rs
    /// after reconnects and slot moves.
    Cluster(&'a mut ClusterConnection),
}

impl Subscriber<'_> {
    /// One inbox's channels (one hash tag, so one slot: one command on a cluster too).
    async fn subscribe(&mut self, channels: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(sink) => bounded(sink.subscribe(channels)).await,
            Subscriber::Cluster(conn) => bounded(conn.ssubscribe(channels)).await,
        }
    }

    async fn unsubscribe(&mut self, channels: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(sink) => bounded(sink.unsubscribe(channels)).await,
            Subscriber::Cluster(conn) => bounded(conn.sunsubscribe(channels)).await,
        }
    }
}

/// Starts the pub/sub tasks serving `commands` (the receiving end of the channel given
/// to [`Registry::with_remote`]). The tasks end when `stop` is cancelled. On a cluster
/// the connection is made here, so a cluster that cannot be reached fails the start.
pub async fn start(
    target: &RedisTarget,
    registry: Arc<Registry>,
    verify: Verifier,
    commands: mpsc::UnboundedReceiver<Command>,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> Result<(), redis::RedisError> {
    let (publish, outbox) = mpsc::channel(PUBLISH_QUEUE);
    let remote = Remote {
        registry,
        verify,
        node: rand::random(),
        locals: HashMap::new(),
        watched: HashSet::new(),
        pending: HashSet::new(),
        stale: HashSet::new(),
        publish,
    };
    match &target.nodes {
        RedisNodes::Single(url) => {
            let client = target.client(url)?;
            tracker.spawn(run_publisher(
                Publisher::single(client.clone()),
                outbox,
                stop.clone(),
                "Redis pub/sub",
            ));
            tracker.spawn(remote.run(client, commands, stop));
        }
        RedisNodes::Cluster(urls) => {
            let (pushes, received) = mpsc::unbounded_channel();
            let conn = target
                .cluster_client(urls, Some(pushes), crate::redis_link::RESPONSE_TIMEOUT)?
                .get_async_connection()
                .await?;
            tracker.spawn(run_publisher(
                Publisher::Cluster(conn.clone()),
                outbox,
                stop.clone(),
                "Redis pub/sub",
            ));
            tracker.spawn(remote.run_cluster(conn, received, commands, stop));
        }
    }
    Ok(())
}

impl Remote {
    async fn run(
        mut self,
        client: redis::Client,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut first = true;
        loop {
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                p = bounded(client.get_async_pubsub()) => p,
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
            let channels: Vec<String> = self
                .subscribed_keys()
                .flat_map(|k| self.wanted_channels(k))
                .collect();
            if !channels.is_empty() && bounded(sink.subscribe(&channels)).await.is_err() {
                continue;
            }
            let mut retry = tokio::time::interval(RETRY_EVERY);
            if !first {
                self.reconnected();
            }
            first = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(cmd) = commands.recv() => {
                        if let Err(e) = self.on_command(Subscriber::Single(&mut sink), cmd).await {
                            tracing::warn!(error = %e, "Redis pub/sub: command failed; reconnecting");
                            break;
                        }
                    }
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            let payload: String = msg.get_payload().unwrap_or_default();
                            self.on_message(msg.get_channel_name(), &payload);
                        }
                        None => {
                            tracing::warn!("Redis pub/sub connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = retry.tick() => self.announce_unechoed(),
                }
            }
        }
    }

    /// The cluster loop: one connection that redis-rs keeps and resubscribes; its
    /// pushes (messages, and "disconnected" when a node's link dropped) come on
    /// `pushes`.
    async fn run_cluster(
        mut self,
        mut conn: ClusterConnection,
        mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(cmd) = commands.recv() => {
                    if let Err(e) = self.on_command(Subscriber::Cluster(&mut conn), cmd).await {
                        // Failed cluster (un)subscribes are kept for the retry tick
                        // (`pending`, `stale`), so nothing is expected here.
                        tracing::warn!(error = %e, "Redis Cluster pub/sub: command failed");
                    }
                }
                _ = retry.tick() => {
                    self.resubscribe_pending(&mut conn).await;
                    self.unsubscribe_stale(&mut conn).await;
                    self.announce_unechoed();
                }
                Some(push) = pushes.recv() => match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        let mut data = push.data.into_iter();
                        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                            continue;
                        };
                        let text = |v| redis::from_redis_value::<String>(v).unwrap_or_default();
                        self.on_message(&text(channel), &text(payload));
                    }
                    redis::PushKind::Disconnection => {
                        // redis-rs renews its subscriptions after refreshing the slots;
                        // subscribing again ourselves (harmless if it already did)
                        // makes sure, before takeovers are announced again.
                        tracing::warn!("Redis Cluster pub/sub: a node connection dropped; resubscribing");
                        let keys: Vec<PublicKey> = self.subscribed_keys().copied().collect();
                        self.pending.extend(keys);
                        self.forget_echoes();
                        self.registry.wake_all();
                    }
                    _ => {}
                },
            }
        }
    }

    /// After the subscriptions were renewed: takeovers announced while the connection
    /// was failing may be lost, and so may wake-ups, so announce again and read the
    /// store for every local session.
    fn reconnected(&mut self) {
        self.forget_echoes();
        self.announce_unechoed();
        tracing::info!("Redis pub/sub reconnected; waking every local session");
        self.registry.wake_all();
    }

    /// Every inbox this node needs the channel of: its sessions' and its v1 sockets'.
    fn subscribed_keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.locals.keys().chain(self.watched.iter())
    }

    fn wants(&self, key: &PublicKey) -> bool {
        self.locals.contains_key(key) || self.watched.contains(key)
    }

    /// The channels this node needs for `key`: wake-ups for a session or v1 sockets,
    /// ephemeral envelopes for a session.
    fn wanted_channels(&self, key: &PublicKey) -> Vec<String> {
        let mut channels = Vec::with_capacity(2);
        if self.wants(key) {
            channels.push(channel(key));
        }
        if self.locals.contains_key(key) {
            channels.push(ephemeral_channel(key));
        }
        channels
    }

    fn still_wanted(&self, name: &str) -> bool {
        match key_of(name) {
            Some((key, Kind::Notify)) => self.wants(&key),
            Some((key, Kind::Ephemeral)) => self.locals.contains_key(&key),
            None => false,
        }
    }

    /// Subscribes to `channels` of `key`, then reads its store once (a wake-up published
    /// before the subscription took effect was missed). On a cluster a failure leaves
    /// the key pending for the retry tick; on one Redis it is returned (and the
    /// connection is rebuilt, subscribing to everything again).
    async fn subscribe(
        &mut self,
        sub: &mut Subscriber<'_>,
        key: PublicKey,
        channels: Vec<String>,
    ) -> redis::RedisResult<()> {
        for name in &channels {
            self.stale.remove(name);
        }
        match sub.subscribe(channels).await {
            Ok(()) => {}
            Err(e) if matches!(sub, Subscriber::Cluster(_)) => {
                tracing::warn!(error = %e, "Redis Cluster pub/sub: subscribe failed; will retry");
                self.pending.insert(key);
            }
            Err(e) => return Err(e),
        }
        self.registry.notify(&key);
        Ok(())
    }

    /// Unsubscribes from `channels`; on a cluster a failure is retried by the tick, on
    /// one Redis it is returned (the connection is rebuilt with only what is wanted).
    async fn unsubscribe(
        &mut self,
        sub: &mut Subscriber<'_>,
        channels: Vec<String>,
    ) -> redis::RedisResult<()> {
        match sub.unsubscribe(channels.clone()).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(sub, Subscriber::Cluster(_)) => {
                tracing::warn!(error = %e, "Redis Cluster pub/sub: unsubscribe failed; will retry");
                self.stale.extend(channels);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Cluster: retries the unsubscribes that failed, unless the channel is wanted again.
    async fn unsubscribe_stale(&mut self, conn: &mut ClusterConnection) {
        let names: Vec<String> = self.stale.iter().cloned().collect();
        for name in names {
            if self.still_wanted(&name) || bounded(conn.sunsubscribe(&name)).await.is_ok() {
                self.stale.remove(&name);
            }
        }
    }

    /// After a gap in what this node heard: another node's takeover may have been
    /// missed, leaving two sessions for one inbox. Every local session announces itself
    /// again and takes its place in the channel's order anew; if another node holds a
    /// session for the same inbox, one of the two closes (possibly the newer one: a
    /// lost message leaves no way to tell, and one consumer per inbox matters more).
    fn forget_echoes(&mut self) {
        for local in self.locals.values_mut() {
            local.echoed = false;
        }
    }

    /// Publishes again the takeover of every local session whose own announcement has
    /// not come back (lost with a failed publish or a dropped link). Until it does,
    /// this node cannot place its session in the channel's order and would keep it
    /// beside a newer one elsewhere; once it does, the older of the two closes.
    fn announce_unechoed(&self) {
        for (key, local) in self.locals.iter().filter(|(_, l)| !l.echoed) {
            let event = Event::Takeover {
                node: self.node,
                session: local.session,
            };
            let _ = self.publish.try_send((channel(key), event.encode()));
        }
    }

    /// Cluster: retries the subscriptions that failed or may have been lost; a key
    /// subscribed again reads its store once (a wake-up may have been missed).
    async fn resubscribe_pending(&mut self, conn: &mut ClusterConnection) {
        let keys: Vec<PublicKey> = self.pending.iter().copied().collect();
        for key in keys {
            if !self.wants(&key) {
                self.pending.remove(&key);
                continue;
            }
            match bounded(conn.ssubscribe(self.wanted_channels(&key))).await {
                Ok(()) => {
                    self.pending.remove(&key);
                    self.registry.notify(&key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis Cluster pub/sub: subscribe failed; retrying");
                    return;
                }
            }
        }
    }

    async fn on_command(
        &mut self,
        mut sub: Subscriber<'_>,
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
                    // On a cluster a failure is retried later; the takeover below is
                    // announced anyway.
                    let mut channels = vec![ephemeral_channel(&key)];
                    if !self.watched.contains(&key) {
                        channels.push(channel(&key));
                    }
                    self.subscribe(&mut sub, key, channels).await?;
                }
                // Subscribed first, so this node sees its own takeover come back and
                // knows where it stands in the channel's order.
                let event = Event::Takeover {
                    node: self.node,
                    session,
                };
                let _ = self.publish.try_send((channel(&key), event.encode()));
            }
            Command::Unregistered { key, session } => {
                if self.locals.get(&key).is_some_and(|l| l.session == session) {
                    self.locals.remove(&key);
                    let mut channels = vec![ephemeral_channel(&key)];
                    if !self.wants(&key) {
                        self.pending.remove(&key);
                        channels.push(channel(&key));
                    }
                    self.unsubscribe(&mut sub, channels).await?;
                }
            }
            Command::Watch(key) => {
                let fresh = !self.wants(&key);
                self.watched.insert(key);
                if fresh {
                    self.subscribe(&mut sub, key, vec![channel(&key)]).await?;
                }
            }
            Command::Unwatch(key) => {
                if self.watched.remove(&key) && !self.wants(&key) {
                    self.pending.remove(&key);
                    self.unsubscribe(&mut sub, vec![channel(&key)]).await?;
                }
            }
            Command::Wake(key) => {
                let event = Event::Wake { node: self.node };
                let _ = self.publish.try_send((channel(&key), event.encode()));
            }
        }
        Ok(())
    }

    fn on_message(&mut self, channel_name: &str, payload: &str) {
        let Some((key, kind)) = key_of(channel_name) else {
            return;
        };
        match (kind, Event::parse(payload)) {
            (Kind::Notify, Some(Event::Wake { node })) => {
                if node != self.node {
                    self.registry.notify(&key);
                }
            }
            (Kind::Ephemeral, Some(Event::Ephemeral(bytes))) => {
                let verified = rmp_serde::from_slice::<Envelope>(&bytes)
                    .ok()
                    .filter(|e| e.ephemeral)
                    .and_then(|e| (self.verify)(e))
                    .filter(|v| *v.recipient() == key);
                match verified {
                    Some(v) => {
                        self.registry.push_ephemeral(&key, Arc::new(v));
                    }
                    None => {
                        tracing::debug!(key = %key, "dropped an ephemeral envelope that does not verify")
                    }
                }
            }
            (Kind::Notify, Some(Event::Takeover { node, session })) => {
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
            _ => tracing::debug!(channel = channel_name, "unknown pub/sub payload"),
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
        assert_eq!(key_of(&name), Some((key, Kind::Notify)));
        assert_eq!(
            key_of(&ephemeral_channel(&key)),
            Some((key, Kind::Ephemeral))
        );
        assert_eq!(key_of("whispr:{zz}:n"), None);
        assert_eq!(key_of(&format!("whispr:{{{}}}:x", key.to_hex())), None);
    }

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Wake { node: 1 },
            Event::Takeover {
                node: u64::MAX,
                session: 7,
            },
            Event::Ephemeral(vec![0, 1, 2, 255]),
        ] {
            assert_eq!(Event::parse(&e.encode()), Some(e));
        }
        assert_eq!(Event::parse("x"), None);
        assert_eq!(Event::parse("w"), None);
        assert_eq!(Event::parse("t zz 1"), None);
    }
}
