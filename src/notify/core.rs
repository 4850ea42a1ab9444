//! The pure core of cross-node notification: which channels this node needs, where
//! each local session stands in its inbox channel's takeover order, what to announce
//! again, and what a pub/sub message asks of this node. Events in (the registry's
//! [`Command`]s, pub/sub messages, failed calls, a reconnect or a lost link, the retry
//! tick), [`Action`]s out (subscribe, unsubscribe, publish, wake, replace, hand over an
//! ephemeral envelope). No I/O, no clock, no awaits: `redis.rs` performs the actions on
//! its connections and reports back the calls that failed.
//!
//! Takeover ordering: a node subscribes to an inbox's channel before it announces its
//! session's takeover there, and Redis delivers one channel's messages in one order to
//! every subscriber. So once a node has seen its own announcement come back (echoed),
//! a takeover from another node that follows is newer and the local session closes;
//! one from another node before the echo is older, and the local session stays. A
//! node that may have missed messages (a reconnect, a lost link) forgets its echoes and
//! announces again; an announcement lost on the way is repeated by the retry tick until
//! it comes back.

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
    /// Publish, best effort: a lost publish is made up for by the retry tick
    /// (takeovers) or by the catch-up (wake-ups).
    Publish { channel: String, payload: String },
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
    /// A session on `node` took the inbox over.
    Takeover { node: u64, session: u64 },
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
            }),
            "e" => Some(Event::Ephemeral(STANDARD.decode(parts.next()?).ok()?)),
            _ => None,
        }
    }

    pub(super) fn encode(&self) -> String {
        match self {
            Event::Wake { node } => format!("w {node:x}"),
            Event::Takeover { node, session } => format!("t {node:x} {session}"),
            Event::Ephemeral(bytes) => format!("e {}", STANDARD.encode(bytes)),
        }
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
    /// Whether this session's own takeover has come back on the channel.
    echoed: bool,
}

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
                    echoed: false,
                };
                if self.locals.insert(key, local).is_none() {
                    let mut channels = vec![ephemeral_channel(&key)];
                    if !self.watched.contains(&key) {
                        channels.push(channel(&key));
                    }
                    self.subscribe(key, channels, &mut out);
                }
                // After the subscription, so this node sees its own takeover come back
                // and knows where it stands in the channel's order.
                out.push(self.takeover(&key, session));
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
            (Kind::Notify, Event::Takeover { node, session }) => {
                self.on_takeover(key, node, session).into_iter().collect()
            }
            (Kind::Ephemeral, Event::Ephemeral(bytes)) => {
                let envelope = rmp_serde::from_slice::<Envelope>(&bytes)
                    .ok()
                    .filter(|e| e.ephemeral && e.recipient == key)?;
                vec![Action::Ephemeral { key, envelope }]
            }
            _ => return None,
        })
    }

    fn on_takeover(&mut self, key: PublicKey, node: u64, session: u64) -> Option<Action> {
        let local = self.locals.get_mut(&key)?;
        if node == self.node {
            if session == local.session {
                local.echoed = true;
            }
            None
        } else if local.echoed {
            // Our session announced itself before this one: it is the older.
            Some(Action::Replace {
                key,
                session: local.session,
            })
        } else {
            None
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

    fn takeover(&self, key: &PublicKey, session: u64) -> Action {
        Action::Publish {
            channel: channel(key),
            payload: Event::Takeover {
                node: self.node,
                session,
            }
            .encode(),
        }
    }

    /// After a gap in what this node heard another node's takeover may have been
    /// missed, leaving two sessions for one inbox. Every local session announces itself
    /// again and takes its place in the channel's order anew; if another node holds a
    /// session for the same inbox, one of the two closes (possibly the newer one: a
    /// lost message leaves no way to tell, and one consumer per inbox matters more).
    fn forget_echoes(&mut self) {
        for local in self.locals.values_mut() {
            local.echoed = false;
        }
    }

    /// The takeover of every local session whose own announcement has not come back.
    /// Until it does, this node cannot place its session in the channel's order and
    /// would keep it beside a newer one elsewhere; once it does, the older one closes.
    fn announce_unechoed(&self) -> Vec<Action> {
        self.locals
            .iter()
            .filter(|(_, l)| !l.echoed)
            .map(|(key, l)| self.takeover(key, l.session))
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

    fn takeover(node: u64, session: u64) -> String {
        Event::Takeover { node, session }.encode()
    }

    fn publish_takeover(key: &PublicKey, node: u64, session: u64) -> Action {
        Action::Publish {
            channel: channel(key),
            payload: takeover(node, session),
        }
    }

    /// What the tick does for a local session `session` of `k` to be subscribed again.
    fn resubscribe_and_announce(k: &PublicKey, session: u64) -> [Action; 3] {
        [
            Action::Subscribe {
                key: *k,
                channels: vec![channel(k), ephemeral_channel(k)],
            },
            Action::Wake(*k),
            publish_takeover(k, US, session),
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

    /// A core with one local session `session` for `k`, whose takeover was echoed.
    fn echoed(cluster: bool, k: PublicKey, session: u64) -> Core {
        let mut core = Core::new(US, cluster);
        core.on_command(Command::Registered { key: k, session });
        core.on_message(&channel(&k), &takeover(US, session));
        core
    }

    #[test]
    fn a_session_subscribes_before_it_announces_its_takeover() {
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
                publish_takeover(&k, US, 1),
            ]
        );
        // A second local session for the key (a local takeover): already subscribed.
        assert_eq!(
            core.on_command(Command::Registered { key: k, session: 2 }),
            [publish_takeover(&k, US, 2)]
        );
    }

    #[test]
    fn a_takeover_after_our_echo_is_newer_and_replaces_our_session() {
        let k = key();
        let mut core = echoed(false, k, 1);
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7)),
            Some(vec![Action::Replace { key: k, session: 1 }])
        );
    }

    #[test]
    fn a_takeover_before_our_echo_is_older_and_keeps_our_session() {
        let k = key();
        let mut core = registered(k, &[1]);
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7)),
            Some(vec![]),
            "announced before ours: theirs is the older session"
        );
        assert_eq!(
            core.on_message(&channel(&k), &takeover(US, 1)),
            Some(vec![])
        );
        assert!(
            core.on_tick().is_empty(),
            "echoed: nothing to announce again"
        );
    }

    #[test]
    fn an_echo_of_an_earlier_local_session_does_not_place_the_current_one() {
        let k = key();
        let mut core = registered(k, &[1, 2]);
        core.on_message(&channel(&k), &takeover(US, 1));
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 7)),
            Some(vec![]),
            "session 2 is not echoed yet, so it cannot be the older"
        );
        assert_eq!(core.on_tick(), [publish_takeover(&k, US, 2)]);
    }

    #[test]
    fn takeovers_for_inboxes_without_a_local_session_change_nothing() {
        let k = key();
        let mut core = Core::new(US, false);
        core.on_command(Command::Watch(k));
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 1)),
            Some(vec![])
        );
    }

    #[test]
    fn unannounced_takeovers_are_repeated_by_the_tick_until_echoed() {
        let k = key();
        let mut core = registered(k, &[3]);
        assert_eq!(core.on_tick(), [publish_takeover(&k, US, 3)]);
        assert_eq!(core.on_tick(), [publish_takeover(&k, US, 3)]);
        core.on_message(&channel(&k), &takeover(US, 3));
        assert!(core.on_tick().is_empty());
    }

    #[test]
    fn a_reconnect_forgets_echoes_announces_again_and_wakes_everyone() {
        let k = key();
        let mut core = echoed(false, k, 1);
        let w = key();
        core.on_command(Command::Watch(w));
        let mut wanted = core.wanted_channels();
        wanted.sort();
        let mut expected = vec![channel(&k), ephemeral_channel(&k), channel(&w)];
        expected.sort();
        assert_eq!(wanted, expected);
        assert_eq!(
            core.on_reconnected(),
            [publish_takeover(&k, US, 1), Action::WakeAll]
        );
        assert_eq!(
            core.on_message(&channel(&k), &takeover(THEM, 9)),
            Some(vec![]),
            "until our new announcement comes back we cannot tell who is older"
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
        assert_eq!(
            core.on_tick(),
            resubscribe_and_announce(&k, 1),
            "the left key is not retried"
        );
        assert_eq!(
            core.on_tick(),
            [publish_takeover(&k, US, 1)],
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
        let mut core = echoed(true, k, 1);
        assert_eq!(core.on_link_lost(), [Action::WakeAll]);
        assert_eq!(core.on_tick(), resubscribe_and_announce(&k, 1));
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
