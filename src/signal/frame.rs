//! The `/signal` wire format: what a client may send, what the relay sends back. No I/O.
//!
//! A client frame is a JSON object with `type` (`join`, `signal`, `leave`) and
//! `call_id`; `signal` also carries `payload`, any JSON, which is passed on byte for
//! byte (it is never parsed into a tree, so numbers and key order survive). Anything
//! else is [`Unusable`]: the caller drops it and keeps the socket.
//!
//! Relayed frames carry the `call_id` they belong to, although the v1 original sent
//! only `type` (and `payload`): one socket may be in several rooms, and without it a
//! client could not tell which call a `peer-leave` is about. v1 clients read only the
//! fields they know, so the extra field is harmless.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::Arc;

/// Longest string `call_id` accepted, in bytes; it bounds what one room name costs.
pub const MAX_CALL_ID_BYTES: usize = 256;

/// A room name: a non-empty JSON string or a JSON integer, as the client gave it. The
/// two kinds never meet (`"1"` and `1` are different rooms), as in the v1 original,
/// whose rooms were a dict keyed by the decoded JSON value.
///
/// An integer is kept as its exact decimal text, never as a machine number: parsing
/// into an `f64` or `i64` and printing again is not exact for every input (`-12e220`
/// came back as another number), and a room name must read the same on every node and
/// in every echo. Numbers with a fraction or an exponent are refused for the same
/// reason (`1.0`, `1e0` and `1` would be one value but three texts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(Arc<str>);

/// `text` if it is a JSON integer, `-?(0|[1-9][0-9]*)`, of at most
/// [`MAX_CALL_ID_BYTES`]; `-0` is the integer `0`.
fn integer_text(text: &str) -> Option<&str> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match text {
        _ if !well_formed || text.len() > MAX_CALL_ID_BYTES => None,
        "-0" => Some("0"),
        _ => Some(text),
    }
}

impl CallId {
    /// A string call id (tests and callers that build one by hand).
    pub fn string(s: &str) -> Option<CallId> {
        (!s.is_empty() && s.len() <= MAX_CALL_ID_BYTES).then(|| CallId(format!("s:{s}").into()))
    }

    /// An integer call id from its decimal text (`None` for anything else).
    pub fn integer(text: &str) -> Option<CallId> {
        integer_text(text).map(|n| CallId(format!("n:{n}").into()))
    }

    /// From the raw JSON of a frame's `call_id`.
    fn from_json(raw: &RawValue) -> Option<CallId> {
        let text = raw.get();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).ok()?;
            CallId::string(&s)
        } else {
            CallId::integer(text)
        }
    }

    /// The canonical form carried between nodes ("s:<string>" or "n:<integer>").
    pub fn key(&self) -> &str {
        &self.0
    }

    /// Parses [`CallId::key`] back (from another node).
    pub fn from_key(key: &str) -> Option<CallId> {
        match key.split_at_checked(2)? {
            ("s:", s) => CallId::string(s),
            ("n:", n) => CallId::integer(n),
            _ => None,
        }
    }

    /// SHA-256 of the canonical form in hex: any call id becomes a safe, fixed-length
    /// name (for Redis channels) and cannot smuggle in a hash tag of its own.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl Serialize for CallId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.split_at(2) {
            // The integer's own text, not a number re-printed: the echo is exact.
            ("n:", n) => match RawValue::from_string(n.to_owned()) {
                Ok(raw) => raw.serialize(serializer),
                Err(_) => serializer.serialize_str(n),
            },
            (_, s) => serializer.serialize_str(s),
        }
    }
}

/// A usable client frame.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Join(CallId),
    Signal {
        call_id: CallId,
        /// `null` when the client sent none.
        payload: &'a RawValue,
    },
    Leave(CallId),
}

impl PartialEq for ClientFrame<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientFrame::Join(a), ClientFrame::Join(b))
            | (ClientFrame::Leave(a), ClientFrame::Leave(b)) => a == b,
            (
                ClientFrame::Signal { call_id, payload },
                ClientFrame::Signal {
                    call_id: c,
                    payload: p,
                },
            ) => call_id == c && payload.get() == p.get(),
            _ => false,
        }
    }
}

/// Why a client frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no usable call_id")]
    NoCallId,
    #[error("unknown or missing type")]
    UnknownType,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    call_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// Decodes one text frame.
pub fn parse(text: &str) -> Result<ClientFrame<'_>, Unusable> {
    // serde would read a JSON array into the struct by position: only objects count.
    if !text.trim_start().starts_with('{') {
        return Err(Unusable::NotAnObject);
    }
    let fields: Fields = serde_json::from_str(text).map_err(|_| Unusable::NotAnObject)?;
    let kind = fields.kind.ok_or(Unusable::UnknownType)?;
    if !matches!(kind.as_ref(), "join" | "signal" | "leave") {
        return Err(Unusable::UnknownType);
    }
    let call_id = fields
        .call_id
        .and_then(CallId::from_json)
        .ok_or(Unusable::NoCallId)?;
    Ok(match kind.as_ref() {
        "join" => ClientFrame::Join(call_id),
        "leave" => ClientFrame::Leave(call_id),
        _ => ClientFrame::Signal {
            call_id,
            payload: fields.payload.unwrap_or(RawValue::NULL),
        },
    })
}

/// A frame the relay sends on a `/signal` socket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerFrame<'a> {
    PeerJoin {
        call_id: &'a CallId,
    },
    Signal {
        call_id: &'a CallId,
        payload: &'a RawValue,
    },
    PeerLeave {
        call_id: &'a CallId,
    },
    Error {
        detail: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        call_id: Option<&'a CallId>,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text, shared by every socket it goes to.
    pub fn text(&self) -> Arc<str> {
        // Serialising these shapes cannot fail: no maps with non-string keys, and a
        // RawValue is valid JSON by construction.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CallId {
        CallId::string(s).unwrap()
    }

    #[test]
    fn usable_frames() {
        assert_eq!(
            parse(r#"{"type":"join","call_id":"c1"}"#),
            Ok(ClientFrame::Join(id("c1")))
        );
        assert_eq!(
            parse(r#" {"call_id":"c1","type":"leave","extra":[1]}"#),
            Ok(ClientFrame::Leave(id("c1")))
        );
        let text = r#"{"type":"signal","call_id":"c1","payload":{"sdp":"v=0","n":1.50}}"#;
        match parse(text) {
            Ok(ClientFrame::Signal { call_id, payload }) => {
                assert_eq!(call_id, id("c1"));
                assert_eq!(payload.get(), r#"{"sdp":"v=0","n":1.50}"#, "byte for byte");
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"type":"signal","call_id":7}"#) {
            Ok(ClientFrame::Signal { call_id, payload }) => {
                assert_eq!(call_id.key(), "n:7");
                assert_eq!(payload.get(), "null");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusable_frames() {
        for (text, why) in [
            ("hello", Unusable::NotAnObject),
            ("[\"join\",\"c1\"]", Unusable::NotAnObject),
            ("{\"type\":\"join\"", Unusable::NotAnObject),
            ("\"join\"", Unusable::NotAnObject),
            (r#"{"type":"join"}"#, Unusable::NoCallId),
            (r#"{"type":"join","call_id":null}"#, Unusable::NoCallId),
            (r#"{"type":"join","call_id":""}"#, Unusable::NoCallId),
            (r#"{"type":"join","call_id":{"a":1}}"#, Unusable::NoCallId),
            (r#"{"type":"join","call_id":[1]}"#, Unusable::NoCallId),
            (r#"{"type":"join","call_id":true}"#, Unusable::NoCallId),
            (r#"{"type":"dance","call_id":"c1"}"#, Unusable::UnknownType),
            (r#"{"call_id":"c1"}"#, Unusable::UnknownType),
            (r#"{"type":5,"call_id":"c1"}"#, Unusable::NotAnObject),
        ] {
            assert_eq!(parse(text), Err(why), "{text}");
        }
        let long = format!(
            r#"{{"type":"join","call_id":"{}"}}"#,
            "x".repeat(MAX_CALL_ID_BYTES + 1)
        );
        assert_eq!(parse(&long), Err(Unusable::NoCallId));
    }

    #[test]
    fn call_ids_keep_their_kind_and_round_trip() {
        let s = id("1");
        let ClientFrame::Join(n) = parse(r#"{"type":"join","call_id":1}"#).unwrap() else {
            panic!()
        };
        assert_ne!(s, n);
        assert_ne!(s.digest_hex(), n.digest_hex());
        assert_eq!(s.digest_hex().len(), 64);
        for c in [s, n, id("a:{b}\"c")] {
            assert_eq!(CallId::from_key(c.key()), Some(c.clone()));
        }
        assert_eq!(CallId::from_key("x:1"), None);
        assert_eq!(CallId::from_key("n:abc"), None);
    }

    #[test]
    fn integer_call_ids_are_their_exact_text_and_floats_are_refused() {
        // Found by fuzzing: `-12e220` went through f64 and was echoed as another
        // number, so two nodes could name one call differently.
        for float in ["-12e220", "1.0", "1e3", "1E3", "0.5", "-0.0", "1.5e-7"] {
            let text = format!(r#"{{"type":"join","call_id":{float}}}"#);
            assert_eq!(parse(&text), Err(Unusable::NoCallId), "{float}");
        }
        let big = "-123456789012345678901234567890123456789";
        let text = format!(r#"{{"type":"join","call_id":{big}}}"#);
        let Ok(ClientFrame::Join(c)) = parse(&text) else {
            panic!("{text}")
        };
        assert_eq!(c.key(), format!("n:{big}"));
        assert_eq!(
            &*ServerFrame::PeerJoin { call_id: &c }.text(),
            format!(r#"{{"type":"peer-join","call_id":{big}}}"#)
        );
        assert_eq!(CallId::integer("-0"), CallId::integer("0"));
        assert_eq!(CallId::integer(&"9".repeat(MAX_CALL_ID_BYTES + 1)), None);
        for bad in ["n:1.5", "n:007", "n:-", "n:+1", "n: 1", "n:"] {
            assert_eq!(CallId::from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_frames_carry_the_call_id_as_given() {
        let c = id("c1");
        let payload = RawValue::from_string(r#"{"candidate":"a=1"}"#.into()).unwrap();
        assert_eq!(
            &*ServerFrame::Signal {
                call_id: &c,
                payload: &payload
            }
            .text(),
            r#"{"type":"signal","call_id":"c1","payload":{"candidate":"a=1"}}"#
        );
        let ClientFrame::Join(n) = parse(r#"{"type":"join","call_id":42}"#).unwrap() else {
            panic!()
        };
        assert_eq!(
            &*ServerFrame::PeerJoin { call_id: &n }.text(),
            r#"{"type":"peer-join","call_id":42}"#
        );
        assert_eq!(
            &*ServerFrame::PeerLeave { call_id: &c }.text(),
            r#"{"type":"peer-leave","call_id":"c1"}"#
        );
        assert_eq!(
            &*ServerFrame::Error {
                detail: "room full",
                call_id: None
            }
            .text(),
            r#"{"type":"error","detail":"room full"}"#
        );
    }
}
