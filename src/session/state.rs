//! The pure part of a session: authentication checks and delivery bookkeeping.
//! No sockets, no store, no clock: the socket loop feeds it decoded frames, store
//! batches, store refusals and the time, and does what it returns: the frames to send
//! and the store call to make next.

use std::collections::VecDeque;

use crate::error::RelayError;
use crate::protocol::{
    verify_auth, ClientFrame, Codec, Cursor, ErrorCode, KeyField, ProtocolError, PublicKey,
    ServerFrame, Signature, WireEnvelope, NONCE_LEN,
};
use crate::store::{Batch, StoreError};

/// A client frame the session acts on: [`ClientFrame`] without `Unknown`, which
/// [`decode_frame`] answers with `unknown_frame`, so no handler has an arm for it.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Answer to `challenge` (see [`ClientFrame::Auth`]).
    Auth {
        key: Vec<u8>,
        timestamp: u64,
        signature: Vec<u8>,
        cursor: Option<Cursor>,
    },
    Send {
        reference: Option<u64>,
        envelope: WireEnvelope,
    },
    Ack {
        seq: u64,
    },
}

/// Decodes one client frame, checking its size before parsing.
pub fn decode_frame(
    codec: Codec,
    bytes: &[u8],
    max_frame_bytes: usize,
) -> Result<Frame, ProtocolError> {
    if bytes.len() > max_frame_bytes {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            max: max_frame_bytes,
        });
    }
    Frame::try_from(codec.decode::<ClientFrame>(bytes)?)
}

impl TryFrom<ClientFrame> for Frame {
    type Error = ProtocolError;

    /// Every frame but `Unknown`, which is [`ProtocolError::UnknownFrame`].
    fn try_from(frame: ClientFrame) -> Result<Self, ProtocolError> {
        Ok(match frame {
            ClientFrame::Auth {
                key,
                timestamp,
                signature,
                cursor,
            } => Frame::Auth {
                key,
                timestamp,
                signature,
                cursor,
            },
            ClientFrame::Send {
                reference,
                envelope,
            } => Frame::Send {
                reference,
                envelope,
            },
            ClientFrame::Ack { seq } => Frame::Ack { seq },
            ClientFrame::Unknown => return Err(ProtocolError::UnknownFrame),
        })
    }
}

impl From<Frame> for ClientFrame {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Auth {
                key,
                timestamp,
                signature,
                cursor,
            } => ClientFrame::Auth {
                key,
                timestamp,
                signature,
                cursor,
            },
            Frame::Send {
                reference,
                envelope,
            } => ClientFrame::Send {
                reference,
                envelope,
            },
            Frame::Ack { seq } => ClientFrame::Ack { seq },
        }
    }
}

/// The `ref` of a frame that failed to decode, when its top level did decode as a
/// `send` (the envelope inside was the problem): the error answering it carries that
/// `ref`, as every answer to a `send` does (PROTOCOL.md 6.4).
pub fn ref_of_bad_send(codec: Codec, bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "ref", default)]
        reference: Option<u64>,
    }
    let probe: Probe = codec.decode(bytes).ok()?;
    (probe.kind == "send").then_some(probe.reference).flatten()
}

/// A session before authentication: holds the challenge it sent.
pub struct Unauthenticated {
    pub nonce: [u8; NONCE_LEN],
    pub origin: String,
}

/// What a valid `auth` frame establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub key: PublicKey,
    pub cursor: Option<Cursor>,
}

impl Unauthenticated {
    pub fn challenge(&self, now_ms: u64) -> ServerFrame {
        ServerFrame::Challenge {
            nonce: self.nonce.to_vec(),
            origin: self.origin.clone(),
            timestamp: now_ms,
        }
    }

    /// Checks the first frame of a session. Anything but a valid `auth` fails it.
    pub fn on_frame(
        &self,
        frame: Frame,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<Authenticated, ProtocolError> {
        let Frame::Auth {
            key,
            timestamp,
            signature,
            cursor,
        } = frame
        else {
            return Err(ProtocolError::Unauthorized {
                detail: "the first frame must be `auth`, answering the challenge".into(),
            });
        };
        let key = PublicKey::from_slice(&key, KeyField::Key)?;
        let signature = Signature::from_slice(&signature)?;
        verify_auth(
            &self.nonce,
            &key,
            timestamp,
            &self.origin,
            &signature,
            now_ms,
            max_skew_ms,
        )?;
        Ok(Authenticated { key, cursor })
    }
}

/// The error frame refusing a sign-in (the session then closes with 4003). A first
/// frame that is not `auth` is answered `auth_required`: the client skipped the
/// handshake. Every other failure keeps its own code.
pub fn auth_refusal(e: &ProtocolError) -> ServerFrame {
    let code = match e {
        ProtocolError::Unauthorized { .. } => ErrorCode::AuthRequired,
        _ => e.code(),
    };
    ServerFrame::Error {
        code,
        detail: e.to_string(),
        reference: None,
        retry_after_ms: None,
    }
}

/// The error frame answering an `auth` on a session that is already authenticated.
pub fn already_authenticated() -> ServerFrame {
    ServerFrame::Error {
        code: ErrorCode::AlreadyAuthenticated,
        detail: "this session is already authenticated".into(),
        reference: None,
        retry_after_ms: None,
    }
}

impl Authenticated {
    /// What the auth cursor acknowledges before the first read: everything through
    /// it, which the client says it processed. A cursor at seq 0 acknowledges nothing.
    pub fn cursor_ack(&self) -> Option<Cursor> {
        self.cursor.filter(|c| c.seq > 0)
    }

    /// The store refused the auth cursor's ack (a cursor the inbox never reached, or
    /// the store failing). The cursor is dropped, so the first read starts at the
    /// beginning and the client gets everything queued; the frame returned tells it
    /// why, after `ready`.
    pub fn cursor_refused(&mut self, e: StoreError) -> ServerFrame {
        self.cursor = None;
        RelayError::from(e).to_frame(None)
    }
}

/// Delivery bookkeeping of an authenticated session: which seqs went out, which are
/// acked, and whether the backlog has been sent.
#[derive(Debug)]
pub struct Delivery {
    pub key: PublicKey,
    epoch: u64,
    /// Highest seq sent in this session (or acknowledged through the auth cursor).
    delivered: u64,
    /// Seqs sent and not yet acknowledged, ascending.
    inflight: VecDeque<u64>,
    window: usize,
    synced: bool,
    /// The last read returned less than it asked for: the session holds everything
    /// stored up to then, and whatever is stored later comes with a wake-up (a stored
    /// permit, so none is missed while the session is busy), which reads. An ack then
    /// needs no read of its own.
    caught_up: bool,
}

/// The inbox moved to a new epoch while the session was open: it must end (4007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochMoved;

/// Frames from one store batch, and whether to read again at once.
#[derive(Debug, PartialEq)]
pub struct Deliveries {
    pub frames: Vec<ServerFrame>,
    /// The batch filled what was asked: more may be waiting, read on while the window
    /// has room (rather than wait for a wake-up that already came).
    pub read_more: bool,
}

/// The store call a pump makes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Nothing: no ack to apply, and the window is full.
    Idle,
    /// Apply the ack only: the window is full, so nothing could be delivered, or the
    /// last read caught up, so a wake-up will say when there is more.
    Ack(Cursor),
    /// Read up to `limit` messages after `after`.
    Fetch { after: Cursor, limit: usize },
    /// Apply the ack and read in one store round trip.
    AckAndFetch {
        through: Cursor,
        after: Cursor,
        limit: usize,
    },
}

/// What an `ack` frame asks the socket loop to do.
#[derive(Debug, PartialEq)]
pub enum AckAction {
    /// Delete through this cursor in the store.
    Delete(Cursor),
    /// Refuse: the client acknowledged something it was never sent.
    Refuse(ServerFrame),
}

impl Delivery {
    /// Starts after the store's first answer. `cursor` is what the client claimed; it
    /// counts as delivered only if the store kept its epoch.
    pub fn new(key: PublicKey, window: u32, epoch: u64, cursor: Option<Cursor>) -> Self {
        let delivered = match cursor {
            Some(c) if c.epoch == epoch => c.seq,
            _ => 0,
        };
        Delivery {
            key,
            epoch,
            delivered,
            inflight: VecDeque::new(),
            window: window as usize,
            synced: false,
            caught_up: false,
        }
    }

    /// Where the next store read starts.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.delivered,
        }
    }

    /// How many more deliveries fit in the unacknowledged window.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.inflight.len())
    }

    pub fn ready_frame(&self) -> ServerFrame {
        ServerFrame::Ready {
            key: self.key.as_bytes().to_vec(),
            epoch: self.epoch,
            window: self.window as u32,
        }
    }

    /// What to ask the store next, with `ack` (from the client) still to apply: a read
    /// only while the window has room, with the ack travelling along, and no read for an
    /// ack once caught up (a wake-up brings the next read; with Redis that saves a read
    /// on every acknowledged message).
    pub fn next_read(&self, ack: Option<Cursor>) -> Read {
        let limit = self.room();
        let after = self.cursor();
        match (ack, limit) {
            (None, 0) => Read::Idle,
            (Some(through), 0) => Read::Ack(through),
            (Some(through), _) if self.caught_up => Read::Ack(through),
            (None, limit) => Read::Fetch { after, limit },
            (Some(through), limit) => Read::AckAndFetch {
                through,
                after,
                limit,
            },
        }
    }

    /// Turns a store batch read with limit `asked` into frames: a gap report if any,
    /// the deliveries, and `synced` the first time the session has caught up; and
    /// whether to read on (the batch was full).
    ///
    /// A batch of another epoch means the inbox moved to a new epoch during the session
    /// (its store found that history may be lost). The session cannot go on: `ack`
    /// frames carry no epoch, so an ack the client sent for the old epoch, still in
    /// flight, would delete the new epoch's messages. [`EpochMoved`] ends the session
    /// (close 4007); the client reconnects with its cursor and is told of the gap.
    pub fn on_batch(&mut self, batch: Batch, asked: usize) -> Result<Deliveries, EpochMoved> {
        if batch.epoch != self.epoch {
            return Err(EpochMoved);
        }
        let mut out = Vec::with_capacity(batch.messages.len() + 2);
        let reason = batch.gap;
        // Step over what is gone, so the same loss is reported once, not on every read.
        self.delivered = self.delivered.max(batch.floor);
        if let Some(reason) = reason {
            out.push(ServerFrame::Gap {
                epoch: self.epoch,
                seq: self.delivered,
                reason,
            });
        }
        let caught_up = batch.messages.len() < asked;
        self.caught_up = caught_up;
        for m in batch.messages {
            if m.seq <= self.delivered {
                continue; // never send the same seq twice in one session
            }
            self.delivered = m.seq;
            self.inflight.push_back(m.seq);
            out.push(ServerFrame::Deliver {
                seq: Some(m.seq),
                id: m.id,
                envelope: m.envelope,
            });
        }
        if caught_up && !self.synced {
            self.synced = true;
            out.push(ServerFrame::Synced {
                epoch: self.epoch,
                seq: self.delivered,
            });
        }
        Ok(Deliveries {
            frames: out,
            read_more: !caught_up,
        })
    }

    /// Handles a cumulative `ack`.
    pub fn on_ack(&mut self, seq: u64) -> AckAction {
        if seq > self.delivered {
            return AckAction::Refuse(ServerFrame::Error {
                code: ErrorCode::CursorAhead,
                detail: format!(
                    "ack {seq} is past the last delivered seq {}",
                    self.delivered
                ),
                reference: None,
                retry_after_ms: None,
            });
        }
        while self.inflight.front().is_some_and(|&s| s <= seq) {
            self.inflight.pop_front();
        }
        AckAction::Delete(Cursor {
            epoch: self.epoch,
            seq,
        })
    }
}

/// How many of a session's sends failed signature verification, and whether that is
/// enough to end it (`max_bad_signatures_per_session`). The IP's budget (in the relay)
/// bounds the CPU an address can cost; this bounds what one connection may try before
/// it must reconnect, which is cheap to refuse (`max_new_connections_per_second`).
#[derive(Debug)]
pub struct SignatureStrikes {
    left: u32,
}

impl SignatureStrikes {
    pub fn new(max_bad_signatures: u32) -> Self {
        SignatureStrikes {
            left: max_bad_signatures.max(1),
        }
    }

    /// Counts the error that answered one `send`. `true`: that was the last bad
    /// signature allowed; send the error frame, then close with
    /// [`close_code::BAD_SIGNATURES`](crate::error::close_code::BAD_SIGNATURES).
    pub fn on_refusal(&mut self, code: ErrorCode) -> bool {
        if code != ErrorCode::BadSignature {
            return false;
        }
        self.left = self.left.saturating_sub(1);
        self.left == 0
    }
}

#[cfg(test)]
mod ref_tests {
    use super::*;

    #[test]
    fn a_send_whose_envelope_is_bad_keeps_its_ref() {
        let bad_envelope = br#"{"type":"send","ref":7,"envelope":{"body":"***"}}"#;
        assert!(decode_frame(Codec::Json, bad_envelope, 1 << 20).is_err());
        assert_eq!(ref_of_bad_send(Codec::Json, bad_envelope), Some(7));
        assert_eq!(
            ref_of_bad_send(Codec::Json, br#"{"type":"send","envelope":1}"#),
            None,
            "a send without ref"
        );
        assert_eq!(
            ref_of_bad_send(Codec::Json, br#"{"type":"ack","ref":7}"#),
            None
        );
        assert_eq!(
            ref_of_bad_send(Codec::Json, br#"{"type":"send","ref":7"#),
            None
        );
        let msgpack = rmp_serde::to_vec_named(&serde_json::json!({
            "type": "send", "ref": 9, "envelope": {"body": 1}
        }))
        .unwrap();
        assert_eq!(ref_of_bad_send(Codec::MsgPack, &msgpack), Some(9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{auth_signing_bytes, Envelope, GapReason, Identity};
    use crate::store::StoredMessage;
    use std::sync::Arc;

    fn batch(epoch: u64, seqs: &[u64], gap: Option<GapReason>) -> Batch {
        let id = Identity::generate();
        Batch {
            epoch,
            gap,
            floor: 0,
            head: seqs.last().copied().unwrap_or(0),
            messages: seqs
                .iter()
                .map(|&seq| {
                    let env = Envelope::seal(&id, id.public_key(), 1, false, vec![seq as u8]);
                    StoredMessage {
                        seq,
                        id: env.id(),
                        envelope: Arc::new(env),
                        stored_at_ms: 0,
                    }
                })
                .collect(),
        }
    }

    fn kinds(frames: &[ServerFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                ServerFrame::Deliver { seq, .. } => format!("d{}", seq.unwrap_or(0)),
                ServerFrame::Synced { seq, .. } => format!("synced{seq}"),
                ServerFrame::Gap { reason, .. } => format!("gap:{reason:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn auth_accepts_only_a_signature_over_this_challenge() {
        let id = Identity::generate();
        let state = Unauthenticated {
            nonce: [7; 32],
            origin: "relay.test:443".into(),
        };
        let sign = |nonce: &[u8; 32], origin: &str| Frame::Auth {
            key: id.public_key().as_bytes().to_vec(),
            timestamp: 1000,
            signature: id
                .sign(&auth_signing_bytes(nonce, &id.public_key(), 1000, origin))
                .to_bytes()
                .to_vec(),
            cursor: None,
        };
        let ok = state
            .on_frame(sign(&[7; 32], "relay.test:443"), 1000, 10)
            .unwrap();
        assert_eq!(ok.key, id.public_key());
        assert!(matches!(
            state.on_frame(sign(&[8; 32], "relay.test:443"), 1000, 10),
            Err(ProtocolError::BadSignature { .. })
        ));
        assert!(matches!(
            state.on_frame(sign(&[7; 32], "evil.test:443"), 1000, 10),
            Err(ProtocolError::BadSignature { .. })
        ));
        assert!(matches!(
            state.on_frame(sign(&[7; 32], "relay.test:443"), 1000 + 11, 10),
            Err(ProtocolError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            state.on_frame(Frame::Ack { seq: 1 }, 1000, 10),
            Err(ProtocolError::Unauthorized { .. })
        ));
    }

    #[test]
    fn backlog_then_synced_once_within_the_window() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 2, 9, None);
        assert_eq!(d.room(), 2);
        let frames = d.on_batch(batch(9, &[1, 2], None), 2).unwrap().frames;
        assert_eq!(kinds(&frames), ["d1", "d2"], "window full: not yet synced");
        assert_eq!(d.room(), 0);
        assert_eq!(d.on_ack(1), AckAction::Delete(Cursor { epoch: 9, seq: 1 }));
        assert_eq!(d.room(), 1);
        let frames = d.on_batch(batch(9, &[3], None), 1).unwrap().frames;
        assert_eq!(kinds(&frames), ["d3"]);
        d.on_ack(3);
        let frames = d.on_batch(batch(9, &[], None), 2).unwrap().frames;
        assert_eq!(kinds(&frames), ["synced3"]);
        let frames = d.on_batch(batch(9, &[4], None), 2).unwrap().frames;
        assert_eq!(kinds(&frames), ["d4"], "synced only once");
    }

    #[test]
    fn never_redelivers_a_seq_in_one_session() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 10, 9, Some(Cursor { epoch: 9, seq: 2 }));
        let frames = d.on_batch(batch(9, &[2, 3], None), 10).unwrap().frames;
        assert_eq!(kinds(&frames), ["d3", "synced3"]);
    }

    #[test]
    fn ack_past_delivered_is_refused() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 10, 9, None);
        d.on_batch(batch(9, &[1], None), 10).unwrap();
        assert!(matches!(
            d.on_ack(2),
            AckAction::Refuse(ServerFrame::Error {
                code: ErrorCode::CursorAhead,
                ..
            })
        ));
    }

    #[test]
    fn ack_0_is_valid_and_acknowledges_nothing() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 10, 9, None);
        assert_eq!(
            d.on_ack(0),
            AckAction::Delete(Cursor { epoch: 9, seq: 0 }),
            "before any delivery"
        );
        d.on_batch(batch(9, &[1], None), 10).unwrap();
        assert_eq!(d.on_ack(0), AckAction::Delete(Cursor { epoch: 9, seq: 0 }));
        assert_eq!(d.room(), 9, "the delivery stays unacknowledged");
    }

    #[test]
    fn epoch_change_and_expiry_are_reported() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 10, 9, Some(Cursor { epoch: 9, seq: 5 }));
        let frames = d
            .on_batch(batch(9, &[7], Some(GapReason::Expired)), 10)
            .unwrap()
            .frames;
        assert_eq!(kinds(&frames), ["gap:Expired", "d7", "synced7"]);
        // A new epoch mid-session ends the session, whatever the batch holds: an ack
        // in flight for epoch 9 must never be applied to epoch 11.
        assert_eq!(
            d.on_batch(batch(11, &[1], Some(GapReason::EpochChanged)), 10),
            Err(EpochMoved)
        );
        assert_eq!(d.cursor(), Cursor { epoch: 9, seq: 7 }, "nothing changed");
    }

    #[test]
    fn an_expiry_is_reported_once_and_the_cursor_steps_over_it() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 10, 9, Some(Cursor { epoch: 9, seq: 2 }));
        let mut b = batch(9, &[6], Some(GapReason::Expired));
        b.floor = 5;
        let frames = d.on_batch(b, 10).unwrap().frames;
        assert_eq!(kinds(&frames), ["gap:Expired", "d6", "synced6"]);
        assert!(
            matches!(
                frames[0],
                ServerFrame::Gap {
                    epoch: 9,
                    seq: 5,
                    ..
                }
            ),
            "{:?}",
            frames[0]
        );
        assert_eq!(
            d.on_ack(5),
            AckAction::Delete(Cursor { epoch: 9, seq: 5 }),
            "acking the lost seqs is allowed"
        );
        let frames = d.on_batch(batch(9, &[], None), 10).unwrap().frames;
        assert!(frames.is_empty(), "no second report: {frames:?}");
    }

    #[test]
    fn oversized_and_unknown_frames_are_typed_errors() {
        assert!(matches!(
            decode_frame(Codec::Json, &[b' '; 100], 10),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(
            decode_frame(Codec::Json, br#"{"type":"subscribe"}"#, 100),
            Err(ProtocolError::UnknownFrame)
        );
        assert!(matches!(
            decode_frame(Codec::Json, b"{not json", 100),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(Codec::MsgPack, b"\xc1", 100),
            Err(ProtocolError::Malformed(_))
        ));
        assert_eq!(
            decode_frame(Codec::Json, br#"{"type":"ack","seq":4}"#, 100),
            Ok(Frame::Ack { seq: 4 })
        );
    }

    #[test]
    fn a_full_batch_reads_on_and_a_short_one_waits_for_a_wake_up() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 4, 9, None);
        assert!(d.on_batch(batch(9, &[1, 2], None), 2).unwrap().read_more);
        assert!(!d.on_batch(batch(9, &[3], None), 2).unwrap().read_more);
        assert!(
            !d.on_batch(batch(9, &[], None), 1).unwrap().read_more,
            "an empty answer is never full"
        );
    }

    #[test]
    fn a_pump_reads_only_with_room_and_the_ack_travels_with_the_read() {
        let key = Identity::generate().public_key();
        let mut d = Delivery::new(key, 2, 9, Some(Cursor { epoch: 9, seq: 4 }));
        let after = Cursor { epoch: 9, seq: 4 };
        assert_eq!(d.next_read(None), Read::Fetch { after, limit: 2 });
        d.on_batch(batch(9, &[5, 6], None), 2).unwrap();
        let full_at = Cursor { epoch: 9, seq: 6 };
        assert_eq!(d.next_read(None), Read::Idle, "the window is full");
        let through = Cursor { epoch: 9, seq: 5 };
        assert_eq!(
            d.next_read(Some(through)),
            Read::Ack(through),
            "full: the ack alone"
        );
        assert_eq!(d.on_ack(5), AckAction::Delete(through));
        assert_eq!(
            d.next_read(Some(through)),
            Read::AckAndFetch {
                through,
                after: full_at,
                limit: 1
            }
        );
        d.on_batch(batch(9, &[7], None), 1).unwrap();
        assert_eq!(d.on_ack(7), AckAction::Delete(Cursor { epoch: 9, seq: 7 }));
        let all = Cursor { epoch: 9, seq: 7 };
        assert_eq!(
            d.next_read(Some(all)),
            Read::AckAndFetch {
                through: all,
                after: all,
                limit: 2
            },
            "the last read filled its limit: more may wait"
        );
        d.on_batch(batch(9, &[], None), 2).unwrap();
        assert_eq!(
            d.next_read(Some(all)),
            Read::Ack(all),
            "caught up: the ack alone, the next wake-up reads"
        );
    }

    #[test]
    fn a_refused_auth_cursor_is_dropped_and_the_client_told_after_ready() {
        let key = Identity::generate().public_key();
        let at = |seq| Authenticated {
            key,
            cursor: Some(Cursor { epoch: 9, seq }),
        };
        assert_eq!(at(0).cursor_ack(), None, "seq 0 acknowledges nothing");
        let mut auth = at(3);
        assert_eq!(auth.cursor_ack(), Some(Cursor { epoch: 9, seq: 3 }));
        let frame = auth.cursor_refused(StoreError::Unavailable("down".into()));
        assert_eq!(auth.cursor, None, "the first read starts at the beginning");
        assert_eq!(auth.cursor_ack(), None);
        assert!(
            matches!(
                frame,
                ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    reference: None,
                    ..
                }
            ),
            "{frame:?}"
        );
    }

    #[test]
    fn a_missing_auth_is_refused_as_auth_required_and_others_keep_their_code() {
        let code = |e: ProtocolError| match auth_refusal(&e) {
            ServerFrame::Error { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(ProtocolError::Unauthorized {
                detail: "first frame".into()
            }),
            ErrorCode::AuthRequired
        );
        assert_eq!(code(ProtocolError::UnknownFrame), ErrorCode::UnknownFrame);
        assert!(matches!(
            already_authenticated(),
            ServerFrame::Error {
                code: ErrorCode::AlreadyAuthenticated,
                ..
            }
        ));
    }

    #[test]
    fn the_nth_bad_signature_ends_the_session() {
        let mut strikes = SignatureStrikes::new(3);
        assert!(!strikes.on_refusal(ErrorCode::BadSignature));
        for other in [
            ErrorCode::StaleTimestamp,
            ErrorCode::RateLimited,
            ErrorCode::InvalidKey,
            ErrorCode::Malformed,
        ] {
            assert!(
                !strikes.on_refusal(other),
                "{other:?} is not a bad signature"
            );
        }
        assert!(!strikes.on_refusal(ErrorCode::BadSignature));
        assert!(strikes.on_refusal(ErrorCode::BadSignature));
        assert!(SignatureStrikes::new(1).on_refusal(ErrorCode::BadSignature));
    }
}
