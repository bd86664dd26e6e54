//! Socket.IO v5 packet codec. Pure code, no I/O.
//!
//! Wire form: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, where the
//! namespace is omitted for `/`. Binary packets are followed by `<attachments>` binary
//! Engine.IO messages, referenced from the JSON by `{"_placeholder":true,"num":N}`.
//!
//! Every byte here comes from a client: no indexing, no unchecked arithmetic (a wrapped
//! length is how a client panics a connection), enforced by the lints below.

#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::ser::{SerializeSeq, Serializer};
use serde_json::Value;

/// The seven Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// Event names a client may not emit: they mean lifecycle changes on the server side.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A decoded packet header and JSON data; binary attachments arrive separately.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    /// Borrowed for the main namespace `/`, which most packets name: no allocation.
    pub nsp: Cow<'static, str>,
    pub id: Option<u64>,
    pub attachments: usize,
    pub data: Option<Value>,
}

/// Why a Socket.IO packet was rejected. Any of these closes the engine session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("illegal attachments count")]
    BadAttachments,
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    #[error("invalid ack id")]
    BadAckId,
    #[error("invalid JSON payload")]
    BadJson,
    #[error("invalid payload for this packet type")]
    InvalidPayload,
    #[error("attachment placeholder out of range")]
    BadPlaceholder,
}

impl Packet {
    /// Decodes one Socket.IO packet from the text of an Engine.IO message.
    pub fn decode(input: &str, max_attachments: usize) -> Result<Packet, DecodeError> {
        let first = *input.as_bytes().first().ok_or(DecodeError::Empty)?;
        let kind = PacketKind::from_byte(first).ok_or(DecodeError::UnknownType)?;
        // The type is one ASCII byte, so this is a char boundary.
        let mut rest = input.get(1..).unwrap_or_default();

        let mut attachments = 0;
        if kind.is_binary() {
            let (digits, after) = rest.split_once('-').ok_or(DecodeError::BadAttachments)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::BadAttachments);
            }
            attachments = digits.parse().map_err(|_| DecodeError::BadAttachments)?;
            if attachments > max_attachments {
                return Err(DecodeError::TooManyAttachments(attachments));
            }
            rest = after;
        }

        let mut nsp = Cow::Borrowed("/");
        if rest.starts_with('/') {
            let (name, after) = rest.split_once(',').unwrap_or((rest, ""));
            if name != "/" {
                nsp = Cow::Owned(name.to_string());
            }
            rest = after;
        }

        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, after) = rest.split_at_checked(digits).unwrap_or(("", rest));
        let id = if digits.is_empty() {
            None
        } else {
            Some(digits.parse::<u64>().map_err(|_| DecodeError::BadAckId)?)
        };
        rest = after;

        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str::<Value>(rest).map_err(|_| DecodeError::BadJson)?)
        };

        let packet = Packet {
            kind,
            nsp,
            id,
            attachments,
            data,
        };
        packet.validate()?;
        Ok(packet)
    }

    /// The payload rules of the protocol for each packet type.
    fn validate(&self) -> Result<(), DecodeError> {
        let ok = match (self.kind, &self.data) {
            (PacketKind::Connect, None) => true,
            (PacketKind::Connect, Some(Value::Object(_))) => true,
            (PacketKind::Disconnect, None) => true,
            (PacketKind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
            (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => {
                match items.first() {
                    Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                    Some(Value::Number(_)) => true,
                    _ => false,
                }
            }
            (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => self.id.is_some(),
            _ => false,
        };
        if !ok {
            return Err(DecodeError::InvalidPayload);
        }
        if self.kind.is_binary() {
            if let Some(data) = &self.data {
                check_placeholders(data, self.attachments)?;
            }
        }
        Ok(())
    }
}

/// Every attachment must be referenced by exactly one `{"_placeholder":true,"num":N}`, as
/// the reference encoder writes them. A placeholder used twice would let one attachment be
/// expanded once per reference (a 256 KiB attachment referenced 4,000 times is a gigabyte
/// once turned into JSON), and an unreferenced one would be carried for nothing.
fn check_placeholders(value: &Value, attachments: usize) -> Result<(), DecodeError> {
    let mut seen = vec![false; attachments];
    mark_placeholders(value, &mut seen)?;
    if seen.iter().all(|s| *s) {
        Ok(())
    } else {
        Err(DecodeError::BadPlaceholder)
    }
}

fn mark_placeholders(value: &Value, seen: &mut [bool]) -> Result<(), DecodeError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| mark_placeholders(v, seen)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                let slot = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| seen.get_mut(n))
                    .ok_or(DecodeError::BadPlaceholder)?;
                if std::mem::replace(slot, true) {
                    return Err(DecodeError::BadPlaceholder);
                }
                Ok(())
            } else {
                map.values().try_for_each(|v| mark_placeholders(v, seen))
            }
        }
        _ => Ok(()),
    }
}

/// Writes the header of a packet, prefixed with the Engine.IO message type `4`, so the
/// result is a complete Engine.IO text frame.
fn header(
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    capacity: usize,
) -> String {
    let mut out = String::with_capacity(nsp.len().saturating_add(capacity).saturating_add(8));
    out.push('4');
    out.push(char::from(b'0'.saturating_add(kind as u8)));
    if kind.is_binary() {
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
    out
}

/// Encodes an EVENT (or BINARY_EVENT when `attachments > 0`) as an Engine.IO text frame.
pub fn encode_event(
    nsp: &str,
    event: &str,
    args: &[Value],
    attachments: usize,
    id: Option<u64>,
) -> String {
    encode_event_with(nsp, event, args, attachments, id, None)
}

/// An EVENT without ack id whose last argument is the recovery offset `tag`, if any (what
/// socket.io clients with connection state recovery read as their last offset).
pub fn encode_event_tagged(
    nsp: &str,
    event: &str,
    args: &[Value],
    attachments: usize,
    tag: Option<&str>,
) -> String {
    encode_event_with(nsp, event, args, attachments, None, tag)
}

fn encode_event_with(
    nsp: &str,
    event: &str,
    args: &[Value],
    attachments: usize,
    id: Option<u64>,
    tag: Option<&str>,
) -> String {
    let kind = if attachments > 0 {
        PacketKind::BinaryEvent
    } else {
        PacketKind::Event
    };
    let mut writer =
        header(kind, nsp, attachments, id, event.len().saturating_add(16)).into_bytes();
    let mut ser = serde_json::Serializer::new(&mut writer);
    // Serializing `&str` and `Value` into a Vec cannot fail.
    let _ = (|| -> Result<(), serde_json::Error> {
        let mut seq = ser.serialize_seq(Some(args.len().saturating_add(2)))?;
        seq.serialize_element(event)?;
        for arg in args {
            seq.serialize_element(arg)?;
        }
        if let Some(tag) = tag {
            seq.serialize_element(tag)?;
        }
        seq.end()
    })();
    // The header is ASCII and serde_json writes UTF-8, so this never falls back.
    String::from_utf8(writer).unwrap_or_default()
}

/// Encodes an ACK (or BINARY_ACK) answering packet `id`.
pub fn encode_ack(nsp: &str, id: u64, args: &[Value], attachments: usize) -> String {
    let kind = if attachments > 0 {
        PacketKind::BinaryAck
    } else {
        PacketKind::Ack
    };
    let mut out = header(kind, nsp, attachments, Some(id), 16);
    out.push_str(&serde_json::to_string(args).unwrap_or_else(|_| "[]".to_string()));
    out
}

/// Encodes the CONNECT answer carrying the socket id.
pub fn encode_connect(nsp: &str, sid: &str) -> String {
    encode_connect_pid(nsp, sid, None)
}

/// A CONNECT answer; with connection state recovery it carries the private session id.
pub fn encode_connect_pid(nsp: &str, sid: &str, pid: Option<&str>) -> String {
    let mut out = header(
        PacketKind::Connect,
        nsp,
        0,
        None,
        sid.len().saturating_add(16),
    );
    // Serialized straight from the struct: no JSON tree built per connection.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        sid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<&'a str>,
    }
    out.push_str(&serde_json::to_string(&Body { sid, pid }).unwrap_or_default());
    out
}

/// Encodes a CONNECT_ERROR with a message and optional data, as the Node server does.
pub fn encode_connect_error(nsp: &str, message: &str, data: Option<&Value>) -> String {
    let mut out = header(PacketKind::ConnectError, nsp, 0, None, 32);
    let body = match data {
        Some(data) => serde_json::json!({ "message": message, "data": data }),
        None => serde_json::json!({ "message": message }),
    };
    out.push_str(&body.to_string());
    out
}

/// Encodes a DISCONNECT for a namespace.
pub fn encode_disconnect(nsp: &str) -> String {
    header(PacketKind::Disconnect, nsp, 0, None, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode(s: &str) -> Result<Packet, DecodeError> {
        Packet::decode(s, 10)
    }

    #[test]
    fn decodes_spec_examples() {
        assert_eq!(
            decode("0").unwrap(),
            Packet {
                kind: PacketKind::Connect,
                nsp: "/".into(),
                id: None,
                attachments: 0,
                data: None
            }
        );
        let p = decode("0/admin,{\"token\":\"123\"}").unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, Some(json!({"token": "123"})));
        let p = decode("2/admin,12[\"bar\"]").unwrap();
        assert_eq!(
            (p.kind, p.id, &*p.nsp),
            (PacketKind::Event, Some(12), "/admin")
        );
        let p = decode("51-[\"baz\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!((p.kind, p.attachments), (PacketKind::BinaryEvent, 1));
        let p = decode("61-/admin,13[{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(
            (p.kind, p.id, p.attachments),
            (PacketKind::BinaryAck, Some(13), 1)
        );
        assert_eq!(decode("1/admin,").unwrap().nsp, "/admin");
        assert_eq!(decode("1/admin").unwrap().nsp, "/admin");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("9"), Err(DecodeError::UnknownType));
        assert_eq!(decode("2["), Err(DecodeError::BadJson));
        assert_eq!(decode("2garbage"), Err(DecodeError::BadJson));
        assert_eq!(decode("2{}"), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("2[]"), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("2"), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("0[1]"), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("1{}"), Err(DecodeError::InvalidPayload));
        assert_eq!(decode("3[1]"), Err(DecodeError::InvalidPayload));
        assert_eq!(
            decode("2[\"disconnect\"]"),
            Err(DecodeError::InvalidPayload)
        );
        assert_eq!(decode("5x-[\"a\"]"), Err(DecodeError::BadAttachments));
        assert_eq!(decode("5-[\"a\"]"), Err(DecodeError::BadAttachments));
        assert_eq!(
            decode("511-[\"a\"]"),
            Err(DecodeError::TooManyAttachments(11))
        );
        assert_eq!(
            decode("51-[\"a\",{\"_placeholder\":true,\"num\":1}]"),
            Err(DecodeError::BadPlaceholder)
        );
        assert_eq!(
            decode("299999999999999999999999[\"a\"]"),
            Err(DecodeError::BadAckId)
        );
    }

    /// One attachment referenced many times would be expanded once per reference when the
    /// event is turned into JSON (webhooks, broadcast acks): refused at decode time.
    #[test]
    fn each_attachment_is_referenced_exactly_once() {
        let ph = |n: u64| json!({ "_placeholder": true, "num": n }).to_string();
        let twice = format!("51-[\"a\",{},{}]", ph(0), ph(0));
        assert_eq!(decode(&twice), Err(DecodeError::BadPlaceholder));
        let many = format!("51-[\"a\",[{}]]", vec![ph(0); 4000].join(","));
        assert_eq!(decode(&many), Err(DecodeError::BadPlaceholder));
        let unused = format!("52-[\"a\",{}]", ph(1));
        assert_eq!(decode(&unused), Err(DecodeError::BadPlaceholder));
        let both = format!("52-[\"a\",{{\"x\":{}}},[{}]]", ph(1), ph(0));
        assert_eq!(decode(&both).map(|p| p.attachments), Ok(2));
        let huge = format!("51-[\"a\",{{\"_placeholder\":true,\"num\":{}}}]", u64::MAX);
        assert_eq!(decode(&huge), Err(DecodeError::BadPlaceholder));
    }

    #[test]
    fn encodes_like_the_reference_parser() {
        assert_eq!(
            encode_event("/", "hello", &[json!(1)], 0, None),
            "42[\"hello\",1]"
        );
        assert_eq!(
            encode_event(
                "/admin",
                "hi",
                &[json!({"_placeholder": true, "num": 0})],
                1,
                Some(7)
            ),
            "451-/admin,7[\"hi\",{\"_placeholder\":true,\"num\":0}]"
        );
        assert_eq!(encode_ack("/", 3, &[json!("ok")], 0), "433[\"ok\"]");
        assert_eq!(encode_connect("/", "abc"), "40{\"sid\":\"abc\"}");
        assert_eq!(encode_connect("/x", "abc"), "40/x,{\"sid\":\"abc\"}");
        assert_eq!(
            encode_connect_pid("/", "abc", Some("p")),
            // the reference server's order: { sid, pid }
            "40{\"sid\":\"abc\",\"pid\":\"p\"}"
        );
        assert_eq!(
            encode_event_tagged("/", "e", &[serde_json::json!(1)], 0, Some("o-1")),
            "42[\"e\",1,\"o-1\"]"
        );
        assert_eq!(
            encode_connect_error("/x", "Invalid namespace", None),
            "44/x,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(encode_disconnect("/"), "41");
        assert_eq!(encode_disconnect("/chat"), "41/chat,");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn event_round_trip(
            nsp in prop_oneof![Just("/".to_string()), "/[a-z0-9]{1,8}"],
            event in "[^\\x00]{0,10}",
            args in proptest::collection::vec(arb_json(), 0..16),
            id in proptest::option::of(0u64..1_000_000),
        ) {
            let frame = encode_event(&nsp, &event, &args, 0, id);
            let packet = Packet::decode(&frame[1..], 10).unwrap();
            let mut expected = vec![Value::String(event)];
            expected.extend(args);
            prop_assert_eq!(packet.kind, PacketKind::Event);
            prop_assert_eq!(packet.nsp, nsp);
            prop_assert_eq!(packet.id, id);
            prop_assert_eq!(packet.data, Some(Value::Array(expected)));
        }

        #[test]
        fn ack_round_trip(args in proptest::collection::vec(arb_json(), 0..4), id in 0u64..1_000_000) {
            let frame = encode_ack("/", id, &args, 0);
            let packet = Packet::decode(&frame[1..], 10).unwrap();
            prop_assert_eq!(packet.id, Some(id));
            prop_assert_eq!(packet.data, Some(Value::Array(args)));
        }

        /// Up to a thousand placeholder references: accepted exactly when every attachment
        /// is referenced once.
        #[test]
        fn placeholders_are_accepted_only_when_each_is_used_once(
            attachments in 0usize..12,
            refs in proptest::collection::vec(0u64..13, 0..1000),
        ) {
            let refs = if refs.len() % 3 == 0 {
                (0..attachments as u64).rev().collect()
            } else {
                refs
            };
            let args: Vec<Value> =
                refs.iter().map(|&n| json!({ "_placeholder": true, "num": n })).collect();
            let text = format!("5{attachments}-[\"e\",{}]", Value::Array(args));
            let mut sorted = refs.clone();
            sorted.sort_unstable();
            let once = sorted == (0..attachments as u64).collect::<Vec<_>>();
            let decoded = Packet::decode(&text, 12);
            prop_assert_eq!(decoded.is_ok(), once, "{:?}", decoded);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,1024}") {
            let _ = Packet::decode(&text, 10);
        }

        #[test]
        fn arbitrary_prefixed_text_never_panics(kind in 0u8..7, text in ".{0,1024}") {
            let _ = Packet::decode(&format!("{kind}{text}"), 10);
        }
    }
}
