//! The pure core of cross-node notification: which channels this node needs, where
//! each local session stands in its inbox channel's takeover order, what to announce
//! again, and what a pub/sub message asks of this node. Events in (the registry's
//! [`Command`]s, pub/sub messages, failed calls, a reconnect or a lost link, the retry
//! tick), [`Action`]s out (subscribe, unsubscribe, publish, wake, replace, hand over an
//! ephemeral envelope). No I/O, no clock, no awaits: `redis.rs` performs the actions on
//! its connections and reports back the calls that failed.
//!
//! Takeover ordering: every session takes a number from Redis once, when it first
//! announces itself (`redis.rs`: the inbox's microsecond clock, never below a number
//! already given out), and carries that same number in every repeat of its
//! announcement. Of two sessions of one inbox on two nodes, the one with the lower
//! number is the older and closes, whichever order the announcements arrive in, how
//! often they repeat and whoever heard what. (An earlier rule, "a takeover that follows
//! my echo is newer", let a repeated announcement close both sessions: B, A, B on the
//! channel closed A on B's repeat and B on A's.) A node that sees an older session's
//! announcement answers with its own, so the older one hears of it even if it missed
//! it. An announcement lost on the way is repeated by the retry tick until it comes
//! back (echoed); a node that may have missed messages (a reconnect, a lost link)
//! forgets its echoes and announces again.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::{HashMap, HashSet};

use super::{channel, ephemeral_channel, key_of, Kind};
use crate::protocol::{Envelope, PublicKey};
use crate::registry::Command;

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Subscribe to `channels` (all of `key`: one hash tag, one slot, one command). A
    /// failure goes back through [`Core::subscribe_failed`].
    Subscribe {
        key: PublicKey,
        channels: Vec<String>,
    },
    /// A failure goes back through [`Core::unsubscribe_failed`].
    Unsubscribe { channels: Vec<String> },
    /// Publish, best effort: a lost wake-up is made up for by the catch-up.
    Publish { channel: String, payload: String },
    /// Announce local session `session` of `key` on `channel`: publish `stem` followed
    /// by a space and the session's number, best effort (the retry tick repeats it
    /// until it is echoed). Without an `order` the shell first takes a number from
    /// Redis and reports it through [`Core::numbered`], or that it could not through
    /// [`Core::announce_failed`].
    Announce {
        key: PublicKey,
        session: u64,
        channel: String,
        stem: String,
        order: Option<u64>,
    },
    /// Wake `key`'s local session and v1 sockets: they read the store again.
    Wake(PublicKey),
    /// Wake every local session and v1 socket (after a gap in what this node heard).
    WakeAll,
    /// Close the local session `session` of `key`: a newer one is on another node.
    Replace { key: PublicKey, session: u64 },
    /// Verify this ephemeral envelope for `key` again (the core has no clock), then
    /// hand it to `key`'s local session.
    Ephemeral { key: PublicKey, envelope: Envelope },
}

/// What the shell does about a call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Redis Cluster: kept, and retried by the next tick.
    Retry,
    /// One Redis: rebuild the connection, which subscribes to every channel wanted.
    Reconnect,
}

/// A pub/sub payload, decoded.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    /// "The inbox has new stored messages", from `node`.
    Wake { node: u64 },
    /// A session on `node` took the inbox over; `order` is its place in the inbox's
    /// takeover order (higher is newer).
    Takeover { node: u64, session: u64, order: u64 },
    /// An ephemeral envelope (MessagePack, base64) for the session of the channel's
    /// inbox; published by a node where that session is not.
    Ephemeral(Vec<u8>),
}

impl Event {
    pub(super) fn parse(payload: &str) -> Option<Event> {
        let mut parts = payload.split(' ');
        match parts.next()? {
            "w" => Some(Event::Wake {
                node: u64::from_str_radix(parts.next()?, 16).ok()?,
            }),
            "t" => Some(Event::Takeover {
                node: u64::from_str_radix(parts.next()?, 16).ok()?,
                session: parts.next()?.parse().ok()?,
                order: parts.next()?.parse().ok()?,
            }),
            "e" => Some(Event::Ephemeral(STANDARD.decode(parts.next()?).ok()?)),
            _ => None,
        }
    }

    pub(super) fn encode(&self) -> String {
        match self {
            Event::Wake { node } => format!("w {node:x}"),
            Event::Takeover {
                node,
                session,
                order,
            } => format!("{} {order}", takeover_stem(*node, *session)),
            Event::Ephemeral(bytes) => format!("e {}", STANDARD.encode(bytes)),
        }
    }
}

/// A takeover's payload up to its number, which Redis gives out (see
/// [`Action::Announce`]).
fn takeover_stem(node: u64, session: u64) -> String {
    format!("t {node:x} {session}")
}

/// Node `node` announcing its session `session` of `key`.
fn announcement(node: u64, key: &PublicKey, session: u64, order: Option<u64>) -> Action {
    Action::Announce {
        key: *key,
        session,
        channel: channel(key),
        stem: takeover_stem(node, session),
        order,
    }
}

/// The pub/sub payload carrying an ephemeral envelope.
pub fn ephemeral_payload(envelope: &Envelope) -> Result<String, rmp_serde::encode::Error> {
    Ok(Event::Ephemeral(rmp_serde::to_vec_named(envelope)?).encode())
}

/// This node's local session for one inbox.
#[derive(Debug)]
struct Local {
    session: u64,
    /// Its place in the inbox's takeover order, once Redis has given it one.
    order: Option<u64>,
    /// Whether a number was asked for and neither given nor refused yet: asked again
    /// while the first request is out, Redis could give a second, higher number after
    /// another node's session took one in between, and both sessions would close.
    asked: bool,
    /// Whether this session's own takeover has come back on the channel.
    echoed: bool,
    /// The newest session another node announced before this one's number was known.
    rival: Option<Rank>,
}

/// Where a session stands among its inbox's sessions: its number, then its node as a
/// tie-break (two nodes can only draw after the inbox's number key was lost and a
/// clock stepped back), so every node ranks any two sessions alike.
type Rank = (u64, u64);

/// The notification state of one node.
#[derive(Debug)]
pub struct Core {
    node: u64,
    /// Redis Cluster: failed calls are kept and retried by the tick. On one Redis a
    /// failed call rebuilds the connection instead, which subscribes to everything.
    cluster: bool,
    locals: HashMap<PublicKey, Local>,
    /// Inboxes with Whispr v1 sockets here (their channels carry wake-ups only).
    watched: HashSet<PublicKey>,
    /// Cluster only: local inboxes whose subscription failed or may have been lost
    /// with a node link.
    pending: HashSet<PublicKey>,
    /// Cluster only: channels whose unsubscribe failed (a stale `:e` subscription
    /// would answer "online" for a session that left).
    stale: HashSet<String>,
}

impl Core {
    /// The core of node `node` (a random id, distinct per process).
    pub fn new(node: u64, cluster: bool) -> Self {
        Core {
            node,
            cluster,
            locals: HashMap::new(),
            watched: HashSet::new(),
            pending: HashSet::new(),
            stale: HashSet::new(),
        }
    }

    /// What the registry changed.
    pub fn on_command(&mut self, cmd: Command) -> Vec<Action> {
        let mut out = Vec::new();
        match cmd {
            Command::Registered { key, session } => {
                let local = Local {
                    session,
                    order: None,
                    asked: true,
                    echoed: false,
                    rival: None,
                };
                if self.locals.insert(key, local).is_none() {
                    let mut channels = vec![ephemeral_channel(&key)];
                    if !self.watched.contains(&key) {
                        channels.push(channel(&key));
                    }
                    self.subscribe(key, channels, &mut out);
                }
                // After the subscription, so this node sees its own takeover come back
                // and any newer one that follows it.
                out.push(self.takeover(&key, session, None));
            }
            Command::Unregistered { key, session } => {
                if self.locals.get(&key).is_some_and(|l| l.session == session) {
                    self.locals.remove(&key);
                    let mut channels = vec![ephemeral_channel(&key)];
                    if !self.wants(&key) {
                        self.pending.remove(&key);
                        channels.push(channel(&key));
                    }
                    out.push(Action::Unsubscribe { channels });
                }
            }
            Command::Watch(key) => {
                let fresh = !self.wants(&key);
                self.watched.insert(key);
                if fresh {
                    self.subscribe(key, vec![channel(&key)], &mut out);
                }
            }
            Command::Unwatch(key) => {
                if self.watched.remove(&key) && !self.wants(&key) {
                    self.pending.remove(&key);
                    out.push(Action::Unsubscribe {
                        channels: vec![channel(&key)],
                    });
                }
            }
            Command::Wake(key) => out.push(Action::Publish {
                channel: channel(&key),
                payload: Event::Wake { node: self.node }.encode(),
            }),
        }
        out
    }

    /// A pub/sub message. `None` when it is not one of ours: an unknown channel or an
    /// undecodable payload.
    pub fn on_message(&mut self, channel_name: &str, payload: &str) -> Option<Vec<Action>> {
        let (key, kind) = key_of(channel_name)?;
        Some(match (kind, Event::parse(payload)?) {
            (Kind::Notify, Event::Wake { node }) if node != self.node => vec![Action::Wake(key)],
            // This node woke its own readers already.
            (Kind::Notify, Event::Wake { .. }) => vec![],
            (
                Kind::Notify,
                Event::Takeover {
                    node,
                    session,
                    order,
                },
            ) => self
                .on_takeover(key, node, session, order)
                .into_iter()
                .collect(),
            (Kind::Ephemeral, Event::Ephemeral(bytes)) => {
                let envelope = rmp_serde::from_slice::<Envelope>(&bytes)
                    .ok()
                    .filter(|e| e.ephemeral && e.recipient == key)?;
                vec![Action::Ephemeral { key, envelope }]
            }
            _ => return None,
        })
    }

    fn on_takeover(
        &mut self,
        key: PublicKey,
        node: u64,
        session: u64,
        order: u64,
    ) -> Option<Action> {
        let local = self.locals.get_mut(&key)?;
        if node == self.node {
            // An earlier local session's echo says nothing: the registry replaced it.
            if session == local.session {
                local.echoed = true;
                return self.place(key, order);
            }
            return None;
        }
        let theirs = (order, node);
        match local.order {
            // Not numbered yet: compared once the number comes.
            None => {
                local.rival = local.rival.max(Some(theirs));
                None
            }
            Some(ours) if theirs > (ours, self.node) => Some(Action::Replace {
                key,
                session: local.session,
            }),
            // An older session on another node, which may have missed our
            // announcement: it hears it again and closes.
            Some(ours) => {
                let session = local.session;
                Some(self.takeover(&key, session, Some(ours)))
            }
        }
    }

    /// Redis gave local session `session` of `key` its number `order` (the reply to an
    /// [`Action::Announce`] without one).
    pub fn numbered(&mut self, key: PublicKey, session: u64, order: u64) -> Vec<Action> {
        match self.locals.get_mut(&key) {
            Some(local) if local.session == session => {
                local.asked = false;
                self.place(key, order).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// The [`Action::Announce`] without a number for `session` of `key` failed or was
    /// dropped (the shell reports every one that will not be answered): the next tick
    /// asks again. (A call that timed out may still have run; Redis then gives the
    /// same number again unless another session took one since.)
    pub fn announce_failed(&mut self, key: PublicKey, session: u64) {
        if let Some(local) = self.locals.get_mut(&key) {
            if local.session == session {
                local.asked = false;
            }
        }
    }

    /// Records the local session's number and closes the session if a newer one was
    /// announced before the number was known. The highest number heard is kept: a
    /// session holds two only if its first number's reply and echo were both lost
    /// (Redis gives a repeat the same number unless another session took one since),
    /// and every other node counts it by its highest too.
    fn place(&mut self, key: PublicKey, order: u64) -> Option<Action> {
        let node = self.node;
        let local = self.locals.get_mut(&key)?;
        let first = local.order.is_none();
        local.order = local.order.max(Some(order));
        if !first {
            return None;
        }
        (local.rival.take()? > (order, node)).then_some(Action::Replace {
            key,
            session: local.session,
        })
    }

    /// Actions the shell dropped unperformed (a failed call on one Redis drops the rest
    /// of its batch): a number they asked for is asked for again by the next tick.
    pub fn not_performed(&mut self, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            if let Action::Announce {
                key,
                session,
                order: None,
                ..
            } = action
            {
                self.announce_failed(key, session);
            }
        }
    }

    /// A [`Action::Subscribe`] of `key` failed.
    pub fn subscribe_failed(&mut self, key: PublicKey) -> Recovery {
        if !self.cluster {
            return Recovery::Reconnect;
        }
        self.pending.insert(key);
        Recovery::Retry
    }

    /// An [`Action::Unsubscribe`] failed.
    pub fn unsubscribe_failed(&mut self, channels: Vec<String>) -> Recovery {
        if !self.cluster {
            return Recovery::Reconnect;
        }
        self.stale.extend(channels);
        Recovery::Retry
    }

    /// Every channel this node needs, for a new connection to subscribe to.
    pub fn wanted_channels(&self) -> Vec<String> {
        self.subscribed_keys()
            .flat_map(|k| self.channels_of(k))
            .collect()
    }

    /// One Redis: a new connection subscribed to [`Core::wanted_channels`]. Takeovers
    /// announced while the connection was failing may be lost, and so may wake-ups:
    /// announce again and read the store for every local session.
    pub fn on_reconnected(&mut self) -> Vec<Action> {
        self.forget_echoes();
        let mut out = self.announce_unechoed();
        out.push(Action::WakeAll);
        out
    }

    /// Redis Cluster: a node link dropped. redis-rs renews its subscriptions after
    /// refreshing the slots; subscribing again (harmless if it already did) makes sure,
    /// before the next tick announces the takeovers again.
    pub fn on_link_lost(&mut self) -> Vec<Action> {
        let keys: Vec<PublicKey> = self.subscribed_keys().copied().collect();
        self.pending.extend(keys);
        self.forget_echoes();
        vec![Action::WakeAll]
    }

    /// The retry tick: subscriptions that failed (a key subscribed again reads its store
    /// once), unsubscribes that failed unless the channel is wanted again, and every
    /// takeover not echoed yet.
    pub fn on_tick(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let pending: Vec<PublicKey> = self.pending.drain().collect();
        for key in pending {
            if self.wants(&key) {
                let channels = self.channels_of(&key);
                self.subscribe(key, channels, &mut out);
            }
        }
        let stale: Vec<String> = self.stale.drain().collect();
        for name in stale {
            if !self.still_wanted(&name) {
                out.push(Action::Unsubscribe {
                    channels: vec![name],
                });
            }
        }
        out.extend(self.announce_unechoed());
        out
    }

    /// Subscribes to `channels` of `key`, then reads its store once: a wake-up published
    /// before the subscription took effect was missed.
    fn subscribe(&mut self, key: PublicKey, channels: Vec<String>, out: &mut Vec<Action>) {
        for name in &channels {
            self.stale.remove(name);
        }
        out.push(Action::Subscribe { key, channels });
        out.push(Action::Wake(key));
    }

    fn takeover(&self, key: &PublicKey, session: u64, order: Option<u64>) -> Action {
        announcement(self.node, key, session, order)
    }

    /// After a gap in what this node heard another node's takeover may have been
    /// missed, leaving two sessions for one inbox. Every local session announces itself
    /// again, with the number it has: if another node holds a session for the same
    /// inbox, the older of the two closes.
    fn forget_echoes(&mut self) {
        for local in self.locals.values_mut() {
            local.echoed = false;
        }
    }

    /// The takeover of every local session whose own announcement has not come back:
    /// other nodes may not know of it and keep an older session beside it. A session
    /// without a number asks for one only if no request is out.
    fn announce_unechoed(&mut self) -> Vec<Action> {
        let node = self.node;
        self.locals
            .iter_mut()
            .filter(|(_, l)| !l.echoed && (l.order.is_some() || !l.asked))
            .map(|(key, l)| {
                l.asked |= l.order.is_none();
                announcement(node, key, l.session, l.order)
            })
            .collect()
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
    fn channels_of(&self, key: &PublicKey) -> Vec<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Identity;

    const US: u64 = 0xa;
    const THEM: u64 = 0xb;

    fn key() -> PublicKey {
        Identity::generate().public_key()
    }

    fn takeover(node: u64, session: u64, order: u64) -> String {
        Event::Takeover {
            node,
            session,
            order,
        }
        .encode()
    }

    /// This node announcing its session `session` of `key`, with `order` if known.
    fn announce(key: &PublicKey, session: u64, order: Option<u64>) -> Action {
        Action::Announce {
            key: *key,
            session,
            channel: channel(key),
            stem: takeover_stem(US, session),
            order,
        }
    }

    /// What the tick does for a local session `session` of `k` to be subscribed again.
    fn resubscribe_and_announce(k: &PublicKey, session: u64, order: Option<u64>) -> [Action; 3] {
        [
            Action::Subscribe {
                key: *k,
                channels: vec![channel(k), ephemeral_channel(k)],
            },
            Action::Wake(*k),
            announce(k, session, order),
        ]
    }

    /// A core on one Redis with local sessions `sessions` for `k`, in that order.
    fn registered(k: PublicKey, sessions: &[u64]) -> Core {
        let mut core = Core::new(US, false);
        for &session in sessions {
            core.on_command(Command::Registered { key: k, session });
        }
        core
    }

    /// A core with one local session `session` for `k`, numbered `order` and echoed.
    fn echoed(cluster: bool, k: PublicKey, session: u64, order: u64) -> Core {
        let mut core = Core::new(US, cluster);
        core.on_command(Command::Registered { key: k, session });
        assert!(core.numbered(k, session, order).is_empty());
        core.on_message(&channel(&k), &takeover(US, session, order));
        core
    }

    fn replace(k: &PublicKey, session: u64) -> Action {
        Action::Replace { key: *k, session }
    }

    #[test]
    fn a_session_subscribes_before_it_announces_its_takeover_and_asks_for_a_number() {
        let mut core = Core::new(US, false);
        let k = key();
        assert_eq!(
            core.on_command(Command::Registered { key: k, session: 1 }),
            [
                Action::Subscribe {
                    key: k,
                    channels: vec![ephemeral_channel(&k), channel(&k)]
                },
                Action::Wake(k),
                announce(&k, 1, None),
            ]
        );
        // A second local session for the key (a local takeover): already subscribed.
        assert_eq!(
            core.on_command(Command::Registered { key: k, session: 2 }),
            [announce(&k, 2, None)]
        );
    }

    #[test]
    fn a_higher_number_elsewhere_is_newer_and_replaces_our_session() {
        let k = key();
        let mut core = echoed(false, k, 1, 10);
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 11)),
            Some(vec![replace(&k, 1)])
        );
    }

    #[test]
    fn a_lower_number_elsewhere_is_older_and_hears_of_our_session_again() {
        let k = key();
        let mut core = echoed(false, k, 1, 10);
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 9)),
            Some(vec![announce(&k, 1, Some(10))]),
            "its node may have missed ours: announced again, with the same number"
        );
        assert!(core.on_tick().is_empty(), "echoed: nothing to repeat");
    }

    #[test]
    fn a_draw_goes_to_the_higher_node_on_both_nodes() {
        let k = key();
        let mut us = echoed(false, k, 1, 10);
        assert_eq!(
            us.on_message(&channel(&k), &takeover(THEM, 7, 10)),
            Some(vec![replace(&k, 1)])
        );
        let mut them = Core::new(THEM, false);
        them.on_command(Command::Registered { key: k, session: 7 });
        them.numbered(k, 7, 10);
        let answer = them.on_message(&channel(&k), &takeover(US, 1, 10)).unwrap();
        assert!(
            matches!(answer[..], [Action::Announce { .. }]),
            "{answer:?}"
        );
    }

    /// The race that closed both sessions under the echo rule: the channel carried B's
    /// takeover, A's re-announcement after a reconnect, then B's repeat. Every order of
    /// the two sessions' announcements, repeated or not, closes the older one only.
    #[test]
    fn the_lower_number_closes_whatever_order_and_repeats_the_announcements_come_in() {
        let k = key();
        let (a, b) = ((US, 1, 10), (THEM, 2, 20));
        let sequences: [&[(u64, u64, u64)]; 6] = [
            &[b, a, b],
            &[a, b, a],
            &[a, a, b, b],
            &[b, b, a, a],
            &[b, a],
            &[a, b, b, a, b],
        ];
        for sequence in sequences {
            let mut closed = Vec::new();
            for (node, session, order) in [a, b] {
                let mut core = Core::new(node, false);
                core.on_command(Command::Registered { key: k, session });
                core.numbered(k, session, order);
                for &(n, s, o) in sequence {
                    for action in core.on_message(&channel(&k), &takeover(n, s, o)).unwrap() {
                        if let Action::Replace { session, .. } = action {
                            closed.push(session);
                        }
                    }
                }
            }
            closed.dedup();
            assert_eq!(closed, [1], "sequence {sequence:?}");
        }
    }

    #[test]
    fn a_takeover_heard_before_our_number_is_compared_once_it_comes() {
        let k = key();
        let mut core = registered(k, &[1]);
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 15)),
            Some(vec![])
        );
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 12)),
            Some(vec![])
        );
        assert_eq!(core.numbered(k, 1, 10), [replace(&k, 1)], "15 is newer");

        let mut core = registered(k, &[1]);
        core.on_message(&channel(&k), &takeover(THEM, 7, 5));
        assert!(core.numbered(k, 1, 10).is_empty(), "5 is older");
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 5)),
            Some(vec![announce(&k, 1, Some(10))])
        );
    }

    #[test]
    fn our_number_also_comes_with_our_echo_and_the_highest_is_kept() {
        let k = key();
        let mut core = registered(k, &[1]);
        core.on_message(&channel(&k), &takeover(US, 1, 10));
        assert!(core.on_tick().is_empty(), "echoed");
        assert!(core.numbered(k, 1, 12).is_empty());
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 11)),
            Some(vec![announce(&k, 1, Some(12))]),
            "12 kept: other nodes saw it too"
        );
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 13)),
            Some(vec![replace(&k, 1)])
        );
    }

    #[test]
    fn an_earlier_local_session_neither_places_nor_numbers_the_current_one() {
        let k = key();
        let mut core = registered(k, &[1, 2]);
        core.on_message(&channel(&k), &takeover(US, 1, 10));
        assert!(core.numbered(k, 1, 10).is_empty());
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7, 11)),
            Some(vec![]),
            "session 2 has no number yet"
        );
        assert!(core.on_tick().is_empty(), "session 2's number is asked for");
        assert_eq!(core.numbered(k, 2, 12), [], "11 is older than 12");
    }

    #[test]
    fn takeovers_for_inboxes_without_a_local_session_change_nothing() {
        let k = key();
        let mut core = Core::new(US, false);
        core.on_command(Command::Watch(k));
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 1, 1)),
            Some(vec![])
        );
        assert!(core.numbered(k, 1, 1).is_empty());
    }

    #[test]
    fn unannounced_takeovers_are_repeated_by_the_tick_until_echoed() {
        let k = key();
        let mut core = registered(k, &[3]);
        assert!(core.on_tick().is_empty(), "the number is asked for");
        core.announce_failed(k, 3);
        assert_eq!(core.on_tick(), [announce(&k, 3, None)], "asked again");
        core.numbered(k, 3, 10);
        assert_eq!(
            core.on_tick(),
            [announce(&k, 3, Some(10))],
            "the number it was given, not a new one"
        );
        core.on_message(&channel(&k), &takeover(US, 3, 10));
        assert!(core.on_tick().is_empty());
    }

    /// A second request while the first is out could be numbered after another node's
    /// session took one in between: the channel would carry ours at 10, theirs at 20,
    /// ours again at 30, and both sessions would close. So no second request goes out
    /// until the first is answered or refused, whatever the ticks and reconnects.
    #[test]
    fn no_second_number_is_asked_for_while_the_first_request_is_out() {
        let k = key();
        let mut core = registered(k, &[1]);
        assert!(core.on_tick().is_empty());
        assert_eq!(core.on_reconnected(), [Action::WakeAll]);
        assert!(core.on_tick().is_empty());
        core.on_message(&channel(&k), &takeover(THEM, 7, 20));
        assert_eq!(core.numbered(k, 1, 10), [replace(&k, 1)], "20 is newer");
        // A refusal for a session that left changes nothing for the current one.
        let mut core = registered(k, &[1, 2]);
        core.announce_failed(k, 1);
        assert!(
            core.on_tick().is_empty(),
            "session 2's request is still out"
        );
        core.announce_failed(k, 2);
        assert_eq!(core.on_tick(), [announce(&k, 2, None)]);
        assert!(core.on_tick().is_empty());
    }

    #[test]
    fn a_number_request_the_shell_dropped_is_asked_for_again() {
        let k = key();
        let mut core = Core::new(US, false);
        let actions = core.on_command(Command::Registered { key: k, session: 1 });
        assert_eq!(core.subscribe_failed(k), Recovery::Reconnect);
        core.not_performed(actions.into_iter().skip(1));
        assert_eq!(core.on_tick(), [announce(&k, 1, None)]);
    }

    #[test]
    fn a_reconnect_forgets_echoes_announces_again_with_the_same_number_and_wakes_everyone() {
        let k = key();
        let mut core = echoed(false, k, 1, 10);
        let w = key();
        core.on_command(Command::Watch(w));
        let mut wanted = core.wanted_channels();
        wanted.sort();
        let mut expected = vec![channel(&k), ephemeral_channel(&k), channel(&w)];
        expected.sort();
        assert_eq!(wanted, expected);
        assert_eq!(
            core.on_reconnected(),
            [announce(&k, 1, Some(10)), Action::WakeAll]
        );
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 9, 11)),
            Some(vec![replace(&k, 1)]),
            "the numbers decide, echoed or not"
        );
    }

    #[test]
    fn the_last_reader_leaving_unsubscribes_and_a_replaced_session_leaving_does_not() {
        let k = key();
        let mut core = registered(k, &[1, 2]);
        assert!(
            core.on_command(Command::Unregistered { key: k, session: 1 })
                .is_empty(),
            "session 1 was replaced locally; 2 still needs the channels"
        );
        core.on_command(Command::Watch(k));
        assert_eq!(
            core.on_command(Command::Unregistered { key: k, session: 2 }),
            [Action::Unsubscribe {
                channels: vec![ephemeral_channel(&k)]
            }],
            "a v1 socket still hears the wake-ups"
        );
        assert_eq!(
            core.on_command(Command::Unwatch(k)),
            [Action::Unsubscribe {
                channels: vec![channel(&k)]
            }]
        );
        assert!(core.on_command(Command::Unwatch(k)).is_empty());
    }

    #[test]
    fn v1_sockets_subscribe_to_wake_ups_only_and_once() {
        let k = key();
        let mut core = Core::new(US, false);
        assert_eq!(
            core.on_command(Command::Watch(k)),
            [
                Action::Subscribe {
                    key: k,
                    channels: vec![channel(&k)]
                },
                Action::Wake(k)
            ]
        );
        assert!(core.on_command(Command::Watch(k)).is_empty());
        assert_eq!(
            core.on_command(Command::Registered { key: k, session: 1 })[0],
            Action::Subscribe {
                key: k,
                channels: vec![ephemeral_channel(&k)]
            },
            "the wake-up channel is already subscribed"
        );
    }

    #[test]
    fn wake_ups_are_published_and_only_other_nodes_wake_us() {
        let k = key();
        let mut core = Core::new(US, false);
        assert_eq!(
            core.on_command(Command::Wake(k)),
            [Action::Publish {
                channel: channel(&k),
                payload: "w a".into()
            }]
        );
        assert_eq!(core.on_message(&channel(&k), "w a"), Some(vec![]));
        assert_eq!(
            core.on_message(&channel(&k), "w b"),
            Some(vec![Action::Wake(k)])
        );
        assert_eq!(core.on_message(&channel(&k), "x"), None);
        assert_eq!(core.on_message("other:channel", "w b"), None);
        assert_eq!(
            core.on_message(&ephemeral_channel(&k), "w b"),
            None,
            "wake-ups travel on :n only"
        );
    }

    #[test]
    fn on_one_redis_a_failed_call_rebuilds_the_connection() {
        let k = key();
        let mut core = Core::new(US, false);
        assert_eq!(core.subscribe_failed(k), Recovery::Reconnect);
        assert_eq!(
            core.unsubscribe_failed(vec![channel(&k)]),
            Recovery::Reconnect
        );
        assert!(core.on_tick().is_empty(), "nothing kept for a retry");
    }

    #[test]
    fn on_a_cluster_a_failed_subscribe_is_retried_by_the_tick_while_wanted() {
        let (k, gone) = (key(), key());
        let mut core = Core::new(US, true);
        core.on_command(Command::Registered { key: k, session: 1 });
        core.on_command(Command::Watch(gone));
        assert_eq!(core.subscribe_failed(k), Recovery::Retry);
        assert_eq!(core.subscribe_failed(gone), Recovery::Retry);
        core.on_command(Command::Unwatch(gone));
        core.numbered(k, 1, 10);
        assert_eq!(
            core.on_tick(),
            resubscribe_and_announce(&k, 1, Some(10)),
            "the left key is not retried"
        );
        assert_eq!(
            core.on_tick(),
            [announce(&k, 1, Some(10))],
            "subscribed now"
        );
    }

    #[test]
    fn on_a_cluster_a_failed_unsubscribe_is_retried_unless_wanted_again() {
        let (k, back) = (key(), key());
        let mut core = Core::new(US, true);
        for k in [k, back] {
            core.on_command(Command::Watch(k));
            core.on_command(Command::Unwatch(k));
            assert_eq!(core.unsubscribe_failed(vec![channel(&k)]), Recovery::Retry);
        }
        core.on_command(Command::Watch(back));
        assert_eq!(
            core.on_tick(),
            [Action::Unsubscribe {
                channels: vec![channel(&k)]
            }]
        );
        assert!(core.on_tick().is_empty(), "done once it succeeded");
    }

    #[test]
    fn a_lost_cluster_link_resubscribes_everything_and_announces_again() {
        let k = key();
        let mut core = echoed(true, k, 1, 10);
        assert_eq!(core.on_link_lost(), [Action::WakeAll]);
        assert_eq!(core.on_tick(), resubscribe_and_announce(&k, 1, Some(10)));
    }

    #[test]
    fn ephemeral_envelopes_reach_only_their_recipient_inbox() {
        let alice = Identity::generate();
        let bob = key();
        let mut core = Core::new(US, false);
        let sealed = |ephemeral, to| Envelope::seal(&alice, to, 1000, ephemeral, vec![1]);
        let live = sealed(true, bob);
        let payload = ephemeral_payload(&live).unwrap();
        assert_eq!(
            core.on_message(&ephemeral_channel(&bob), &payload),
            Some(vec![Action::Ephemeral {
                key: bob,
                envelope: live
            }])
        );
        let stored = ephemeral_payload(&sealed(false, bob)).unwrap();
        assert_eq!(core.on_message(&ephemeral_channel(&bob), &stored), None);
        let elsewhere = ephemeral_payload(&sealed(true, key())).unwrap();
        assert_eq!(core.on_message(&ephemeral_channel(&bob), &elsewhere), None);
        assert_eq!(
            core.on_message(&channel(&bob), &payload),
            None,
            "envelopes travel on :e only"
        );
    }

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Wake { node: 1 },
            Event::Takeover {
                node: u64::MAX,
                session: 7,
                order: 1_796_186_358_947_544,
            },
            Event::Ephemeral(vec![0, 1, 2, 255]),
        ] {
            assert_eq!(Event::parse(&e.encode()), Some(e));
        }
        assert_eq!(Event::parse("x"), None);
        assert_eq!(Event::parse("w"), None);
        assert_eq!(Event::parse("t zz 1 1"), None);
        assert_eq!(Event::parse("t a 1"), None, "a takeover carries its number");
    }
}
