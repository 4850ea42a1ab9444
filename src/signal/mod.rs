//! Call signalling rooms for the Whispr v1 `GET /signal` socket: which sockets are in
//! which call, and passing each socket's frames to the others in the same call.
//!
//! Why it is its own module and not part of the message path: signalling frames (SDP
//! offers, answers, ICE candidates) are only useful while both peers are online, so
//! they are never stored, acknowledged or retried, unlike messages. A room lives in
//! memory while it has members and vanishes with the last one.
//!
//! [`Rooms`] is the registry of this node; it never awaits (one `std` mutex, never held
//! across an await) and queues frames on each socket's bounded outbox with `try_send`. A
//! socket whose outbox is full is told to close (its `slow` token) instead of buffering
//! without bound. [`Member`] (`member.rs`) is one socket's side: it takes a text frame and answers
//! with the error frame to send back, if any, so the logic is testable without sockets;
//! dropping it leaves every room it joined (peers get `peer-leave`), however the socket
//! ended.
//!
//! With the Redis store, rooms span every node on that Redis ([`redis`]): a node with
//! local members in a room subscribes to the room's channel and publishes what its
//! members do there. How many peers a room holds across nodes is best effort: a node
//! counts its own members plus the remote members it has heard of on the channel since
//! it subscribed (their joins, and the `here` replies other nodes send when they see a
//! join). So the first member on a node is always admitted there, two nodes admitting a
//! join at the same moment can both let it in, and a remote member whose node died
//! without a `leave` is counted until the room empties on this node (or its pub/sub
//! connection reconnects). A shared count in Redis (a set per room, refreshed while
//! members live) would be exact but would put a Redis round trip and expiry bookkeeping
//! in every join; for a limit whose job is to stop runaway rooms, this is enough.
//!
//! Not here: the socket loop (`http::v1::signal`) and the wire format ([`frame`]).

pub mod frame;
pub(crate) mod limits;
mod member;
pub mod redis;

pub use frame::{CallId, ClientFrame, ServerFrame};
pub use member::Member;

use prometheus::IntGauge;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The limits of `/signal`, from the config.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub max_peers_per_room: usize,
    pub max_rooms_per_connection: usize,
    pub max_message_bytes: usize,
    pub max_frames_per_second: u32,
    /// Frames queued per socket before it counts as a slow consumer.
    pub outbox: usize,
}

impl RoomLimits {
    pub fn from_config(c: &Config) -> Self {
        RoomLimits {
            max_peers_per_room: c.signal_max_peers_per_room,
            max_rooms_per_connection: c.signal_max_rooms_per_connection,
            max_message_bytes: c.signal_max_message_bytes,
            max_frames_per_second: c.signal_max_frames_per_second,
            outbox: c.ws_outbound_queue,
        }
    }
}

/// Why a client frame was refused with an error frame. The message is the frame's
/// `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("room full")]
    RoomFull,
    #[error("too many rooms")]
    TooManyRooms,
    #[error("message too big")]
    TooBig,
    #[error("rate limited")]
    RateLimited,
}

/// What happened in a room, as it travels between nodes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A member joined (its node's peers get `peer-join`, and answer with `Here`).
    Join,
    /// A member is present (only counted; sent in answer to a `Join`).
    Here,
    /// A member's signal, payload as it sent it.
    Signal(Box<RawValue>),
    /// A member left (peers get `peer-leave`).
    Leave,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            // Payloads are equal when their JSON text is (they pass through unparsed).
            (Event::Signal(a), Event::Signal(b)) => a.get() == b.get(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// What the registry asks of the cross-node task (see [`redis`]).
#[derive(Debug)]
pub enum Command {
    /// This node has its first local member in the room.
    Subscribe(CallId),
    /// This node's last local member in the room left.
    Unsubscribe(CallId),
    /// Tell the other nodes what the local member `conn` did.
    Publish {
        call_id: CallId,
        conn: u64,
        event: Event,
    },
}

/// The gauges the registry keeps current.
#[derive(Clone)]
pub struct Gauges {
    /// Rooms with at least one member on this node.
    pub rooms: IntGauge,
    /// Memberships of local sockets (a socket in two rooms counts twice).
    pub members: IntGauge,
}

/// How the registry reaches one local socket.
#[derive(Clone)]
struct Peer {
    outbox: mpsc::Sender<Arc<str>>,
    slow: CancellationToken,
}

/// A member on another node: (node, connection).
type RemotePeer = (u64, u64);

#[derive(Default)]
struct Room {
    local: HashMap<u64, Peer>,
    remote: HashSet<RemotePeer>,
}

impl Room {
    fn size(&self) -> usize {
        self.local.len() + self.remote.len()
    }

    /// Queues `frame` for every local member but `except`. A full outbox closes that
    /// socket (slow consumer); a closed one is a socket on its way out.
    fn fan_out(&self, except: Option<u64>, frame: &ServerFrame) {
        let mut text = None;
        for (id, peer) in &self.local {
            if Some(*id) == except {
                continue;
            }
            let text = text.get_or_insert_with(|| frame.text()).clone();
            if let Err(mpsc::error::TrySendError::Full(_)) = peer.outbox.try_send(text) {
                peer.slow.cancel();
            }
        }
    }
}

/// The rooms of this node.
pub struct Rooms {
    rooms: Mutex<HashMap<CallId, Room>>,
    limits: RoomLimits,
    remote: Option<mpsc::UnboundedSender<Command>>,
    next_conn: AtomicU64,
    gauges: Gauges,
}

impl Rooms {
    /// A registry; with `remote`, rooms span nodes (the receiving end goes to
    /// [`redis::start`]).
    pub fn new(
        limits: RoomLimits,
        gauges: Gauges,
        remote: Option<mpsc::UnboundedSender<Command>>,
    ) -> Arc<Self> {
        Arc::new(Rooms {
            rooms: Mutex::new(HashMap::new()),
            limits,
            remote,
            next_conn: AtomicU64::new(1),
            gauges,
        })
    }

    /// A new socket: its member handle and the outbox its loop writes from.
    pub fn connect(self: &Arc<Self>) -> (Member, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(self.limits.outbox.max(1));
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            outbox: tx,
            slow: CancellationToken::new(),
        };
        let member = Member::new(self.clone(), id, peer);
        (member, rx)
    }

    /// Local rooms right now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CallId, Room>> {
        // Nothing here can panic half-way through an update; a poisoned lock still
        // holds consistent rooms.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn command(&self, cmd: Command) {
        if let Some(remote) = &self.remote {
            // Closed only after shutdown stopped the task: nothing left to tell.
            let _ = remote.send(cmd);
        }
    }

    fn publish(&self, call_id: &CallId, conn: u64, event: Event) {
        if self.remote.is_some() {
            self.command(Command::Publish {
                call_id: call_id.clone(),
                conn,
                event,
            });
        }
    }

    fn join(&self, call_id: &CallId, id: u64, peer: Peer) -> Result<(), Refused> {
        let mut rooms = self.lock();
        let created = !rooms.contains_key(call_id);
        let room = rooms.entry(call_id.clone()).or_default();
        if room.local.contains_key(&id) {
            return Ok(());
        }
        if room.size() >= self.limits.max_peers_per_room {
            if created {
                rooms.remove(call_id);
            }
            return Err(Refused::RoomFull);
        }
        room.fan_out(None, &ServerFrame::PeerJoin { call_id });
        room.local.insert(id, peer);
        self.gauges.members.inc();
        if created {
            self.gauges.rooms.inc();
            // Subscribed before the join is published, so the answers come back here.
            self.command(Command::Subscribe(call_id.clone()));
        }
        self.publish(call_id, id, Event::Join);
        Ok(())
    }

    fn leave(&self, call_id: &CallId, id: u64) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(call_id) else {
            return;
        };
        if room.local.remove(&id).is_none() {
            return;
        }
        self.gauges.members.dec();
        room.fan_out(None, &ServerFrame::PeerLeave { call_id });
        self.publish(call_id, id, Event::Leave);
        if room.local.is_empty() {
            rooms.remove(call_id);
            self.gauges.rooms.dec();
            self.command(Command::Unsubscribe(call_id.clone()));
        }
    }

    fn signal(&self, call_id: &CallId, id: u64, payload: &RawValue) {
        let rooms = self.lock();
        let Some(room) = rooms.get(call_id).filter(|r| r.local.contains_key(&id)) else {
            // Only members signal a room: anything else is dropped.
            return;
        };
        room.fan_out(Some(id), &ServerFrame::Signal { call_id, payload });
        self.publish(call_id, id, Event::Signal(payload.to_owned()));
    }

    /// What a member on another node did in a room (the cross-node task calls this;
    /// it already dropped this node's own echoes).
    pub fn on_remote(&self, call_id: &CallId, node: u64, conn: u64, event: Event) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(call_id) else {
            return;
        };
        match event {
            Event::Join => {
                room.remote.insert((node, conn));
                room.fan_out(None, &ServerFrame::PeerJoin { call_id });
                for id in room.local.keys() {
                    self.publish(call_id, *id, Event::Here);
                }
            }
            Event::Here => {
                room.remote.insert((node, conn));
            }
            Event::Signal(payload) => room.fan_out(
                None,
                &ServerFrame::Signal {
                    call_id,
                    payload: &payload,
                },
            ),
            Event::Leave => {
                room.remote.remove(&(node, conn));
                room.fan_out(None, &ServerFrame::PeerLeave { call_id });
            }
        }
    }

    /// Forgets every remote member (after the pub/sub connection dropped, their leaves
    /// may have been missed; counting too few is better than refusing joins forever).
    pub fn forget_remote(&self) {
        for room in self.lock().values_mut() {
            room.remote.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(super) fn limits() -> RoomLimits {
        RoomLimits {
            max_peers_per_room: 3,
            max_rooms_per_connection: 2,
            max_message_bytes: 256,
            max_frames_per_second: 1000,
            outbox: 16,
        }
    }

    pub(super) fn gauges() -> Gauges {
        Gauges {
            rooms: IntGauge::new("rooms", "rooms").unwrap(),
            members: IntGauge::new("members", "members").unwrap(),
        }
    }

    pub(super) fn rooms_with(limits: RoomLimits) -> Arc<Rooms> {
        Rooms::new(limits, gauges(), None)
    }

    pub(super) fn drain(rx: &mut mpsc::Receiver<Arc<str>>) -> Vec<Value> {
        let mut got = Vec::new();
        while let Ok(text) = rx.try_recv() {
            got.push(serde_json::from_str(&text).unwrap());
        }
        got
    }

    pub(super) fn join(c: &str) -> String {
        json!({"type": "join", "call_id": c}).to_string()
    }

    pub(super) fn signal(c: &str, payload: Value) -> String {
        json!({"type": "signal", "call_id": c, "payload": payload}).to_string()
    }

    #[test]
    fn members_get_each_others_frames_but_never_their_own() {
        let rooms = rooms_with(limits());
        let (mut a, mut ra) = rooms.connect();
        let (mut b, mut rb) = rooms.connect();
        let (mut c, mut rc) = rooms.connect();
        assert_eq!(a.on_text(&join("call")), None);
        assert_eq!(b.on_text(&join("call")), None);
        assert_eq!(
            drain(&mut ra),
            vec![json!({"type": "peer-join", "call_id": "call"})]
        );
        assert!(
            drain(&mut rb).is_empty(),
            "the joiner is not told of itself"
        );
        assert_eq!(c.on_text(&join("other")), None);

        let offer = json!({"sdp": "v=0\r\n", "type": "offer", "n": [1, 2.5]});
        assert_eq!(a.on_text(&signal("call", offer.clone())), None);
        assert_eq!(
            drain(&mut rb),
            vec![json!({"type": "signal", "call_id": "call", "payload": offer})]
        );
        assert!(drain(&mut ra).is_empty(), "no echo to the sender");
        assert!(drain(&mut rc).is_empty(), "other rooms see nothing");

        // A signal to a room the socket is not in goes nowhere.
        assert_eq!(c.on_text(&signal("call", json!(1))), None);
        assert!(drain(&mut ra).is_empty() && drain(&mut rb).is_empty());
        assert_eq!(rooms.gauges.rooms.get(), 2);
        assert_eq!(rooms.gauges.members.get(), 3);
    }

    #[test]
    fn leaving_and_dropping_tell_the_peers_and_empty_rooms_vanish() {
        let rooms = rooms_with(limits());
        let (mut a, mut ra) = rooms.connect();
        let (mut b, mut rb) = rooms.connect();
        a.on_text(&join("x"));
        a.on_text(&join("y"));
        b.on_text(&join("x"));
        b.on_text(&join("y"));
        drain(&mut ra);
        b.on_text(&json!({"type": "leave", "call_id": "x"}).to_string());
        assert_eq!(
            drain(&mut ra),
            vec![json!({"type": "peer-leave", "call_id": "x"})]
        );
        b.on_text(&json!({"type": "leave", "call_id": "x"}).to_string());
        assert!(drain(&mut ra).is_empty(), "leaving twice tells once");
        drop(a);
        assert_eq!(
            drain(&mut rb),
            vec![json!({"type": "peer-leave", "call_id": "y"})]
        );
        assert_eq!(rooms.len(), 1, "x emptied when a left");
        drop(b);
        assert!(rooms.is_empty());
        assert_eq!(rooms.gauges.rooms.get(), 0);
        assert_eq!(rooms.gauges.members.get(), 0);
    }

    #[test]
    fn a_socket_that_does_not_read_is_told_to_close() {
        let rooms = rooms_with(RoomLimits {
            outbox: 1,
            ..limits()
        });
        let (mut a, _ra) = rooms.connect();
        let (mut b, _rb) = rooms.connect();
        a.on_text(&join("c"));
        b.on_text(&join("c"));
        assert!(!a.slow().is_cancelled(), "one peer-join fits");
        b.on_text(&signal("c", json!(1)));
        assert!(a.slow().is_cancelled());
        assert!(!b.slow().is_cancelled());
    }

    #[test]
    fn cross_node_commands_and_remote_members() {
        let (tx, mut commands) = mpsc::unbounded_channel();
        let rooms = Rooms::new(limits(), gauges(), Some(tx));
        let (mut a, mut ra) = rooms.connect();
        a.on_text(&join("c"));
        let call = CallId::string("c").unwrap();
        let mut sent = Vec::new();
        while let Ok(cmd) = commands.try_recv() {
            sent.push(format!("{cmd:?}"));
        }
        assert_eq!(sent.len(), 2);
        assert!(sent[0].starts_with("Subscribe"), "{sent:?}");
        assert!(sent[1].contains("Join"), "{sent:?}");

        // Two members elsewhere: one joins (a peer-join and a `here` answer), one was
        // already there.
        rooms.on_remote(&call, 9, 1, Event::Join);
        rooms.on_remote(&call, 9, 2, Event::Here);
        assert_eq!(
            drain(&mut ra),
            vec![json!({"type": "peer-join", "call_id": "c"})]
        );
        match commands.try_recv().unwrap() {
            Command::Publish { event, conn, .. } => {
                assert_eq!((event, conn), (Event::Here, a.id()))
            }
            other => panic!("{other:?}"),
        }
        let (mut b, _rb) = rooms.connect();
        let answer = b.on_text(&join("c")).unwrap();
        assert!(answer.contains("room full"), "remote members count");

        let payload = RawValue::from_string("{\"a\": 1}".into()).unwrap();
        rooms.on_remote(&call, 9, 1, Event::Signal(payload));
        rooms.on_remote(&call, 9, 1, Event::Leave);
        assert_eq!(
            drain(&mut ra),
            vec![
                json!({"type": "signal", "call_id": "c", "payload": {"a": 1}}),
                json!({"type": "peer-leave", "call_id": "c"}),
            ]
        );
        assert_eq!(b.on_text(&join("c")), None, "room for one more");
        drop((a, b));
        let last: Vec<_> = std::iter::from_fn(|| commands.try_recv().ok()).collect();
        assert!(matches!(last.last(), Some(Command::Unsubscribe(c)) if *c == call));
        // Nothing arrives for rooms this node has no members in.
        rooms.on_remote(&call, 9, 3, Event::Join);
        assert!(commands.try_recv().is_err());
    }
}
