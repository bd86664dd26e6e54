//! Engine.IO v4 packets and the HTTP long-polling payload format. Pure code, no I/O.
//!
//! A text packet is one ASCII digit (its type) followed by its data. A binary packet is
//! raw bytes on WebSocket and `b` + base64 inside a polling payload, where packets are
//! separated by the record separator `\x1e`.
//!
//! The decoders read what clients send: they never index and all arithmetic is checked
//! (the lints below hold them to that), so no input can panic a connection.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use base64::Engine as _;
use bytes::{Buf, Bytes};

/// The separator between packets in an HTTP long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// One decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open(String),
    Close,
    Ping(Bytes),
    Pong(Bytes),
    Message(Bytes),
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(u8),
    #[error("invalid base64 in binary packet")]
    BadBase64,
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
}

impl Packet {
    /// Decodes one text packet (a WebSocket text frame or one record of a polling payload).
    /// The message data is returned as a slice of `input`, without copying.
    pub fn decode_text(input: Bytes) -> Result<Packet, DecodeError> {
        let Some((&first, rest)) = input.split_first() else {
            return Err(DecodeError::Empty);
        };
        if first == b'b' {
            // Line-wrapped base64 (socket.io-client-java sends a line break every 76
            // characters and one at the end) is valid for Node's engine.io, which ignores
            // white space: so do we.
            let compact: std::borrow::Cow<[u8]> = if rest.iter().any(u8::is_ascii_whitespace) {
                rest.iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect::<Vec<u8>>()
                    .into()
            } else {
                rest.into()
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .map_err(|_| DecodeError::BadBase64)?;
            return Ok(Packet::Binary(Bytes::from(decoded)));
        }
        // Advanced in place: slicing a `Bytes` that owns a fresh buffer (a WebSocket message)
        // would allocate a shared header for the two handles, once per message.
        let mut data = input;
        data.advance(1);
        Ok(match first {
            b'0' => Packet::Open(
                String::from_utf8(data.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?,
            ),
            b'1' => Packet::Close,
            b'2' => Packet::Ping(data),
            b'3' => Packet::Pong(data),
            b'4' => Packet::Message(data),
            b'5' => Packet::Upgrade,
            b'6' => Packet::Noop,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// Encodes a packet as text, as on a WebSocket text frame or inside a polling payload.
    pub fn encode_text(&self) -> String {
        fn with(prefix: char, data: &[u8]) -> String {
            let mut out = String::with_capacity(data.len().saturating_add(1));
            out.push(prefix);
            out.push_str(&String::from_utf8_lossy(data));
            out
        }
        match self {
            Packet::Open(json) => with('0', json.as_bytes()),
            Packet::Close => "1".to_string(),
            Packet::Ping(data) => with('2', data),
            Packet::Pong(data) => with('3', data),
            Packet::Message(data) => with('4', data),
            Packet::Upgrade => "5".to_string(),
            Packet::Noop => "6".to_string(),
            Packet::Binary(data) => {
                let mut out = String::from("b");
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
                out
            }
        }
    }
}

/// The packets of a polling POST body, decoded one at a time as they are taken (see
/// [`records`]): a body of many tiny packets never becomes a vector of them.
#[derive(Debug, Clone)]
pub struct Records {
    body: Bytes,
    /// Where the next record starts.
    pos: usize,
    /// The last record was returned, or one failed to decode.
    done: bool,
}

/// The records of a polling POST body, decoded lazily. The body must be valid UTF-8 (checked
/// here, without allocating); each record then decodes when the iterator reaches it, and the
/// first one that does not decode ends the iteration with its error (the caller closes the
/// session; the records before it were handled, as by the reference server).
pub fn records(body: Bytes) -> Result<Records, DecodeError> {
    if std::str::from_utf8(&body).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(Records {
        body,
        pos: 0,
        done: false,
    })
}

impl Iterator for Records {
    type Item = Result<Packet, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.body.get(self.pos..)?;
        let (record, next) = match rest.iter().position(|b| *b == RECORD_SEPARATOR) {
            Some(len) => (
                rest.get(..len)?,
                self.pos.checked_add(len).and_then(|p| p.checked_add(1)),
            ),
            None => (rest, None),
        };
        let packet = Packet::decode_text(self.body.slice_ref(record));
        match next {
            Some(next) if packet.is_ok() => self.pos = next,
            _ => self.done = true,
        }
        Some(packet)
    }
}

/// Splits a polling POST body into packets, all at once. Every record must decode, or the
/// whole payload is rejected. The transport uses [`records`]; this is for tools and tests.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    records(body)?.collect()
}

/// Appends one binary packet to a polling payload as `b` + base64.
pub fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'b');
    let start = out.len();
    let Some(end) = base64::encoded_len(data.len(), true).and_then(|n| start.checked_add(n)) else {
        // Only for inputs near `usize::MAX` bytes, which no buffer holds.
        return;
    };
    out.resize(end, 0);
    // The buffer was sized for the exact encoded length, so this cannot fail.
    let written = out
        .get_mut(start..)
        .and_then(|tail| {
            base64::engine::general_purpose::STANDARD
                .encode_slice(data, tail)
                .ok()
        })
        .unwrap_or(0);
    out.truncate(start.saturating_add(written));
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_each_type() {
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"1")),
            Ok(Packet::Close)
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"2probe")),
            Ok(Packet::Ping(Bytes::from_static(b"probe")))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"4hello")),
            Ok(Packet::Message(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"5")),
            Ok(Packet::Upgrade)
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"6")),
            Ok(Packet::Noop)
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"bAQIDBA==")),
            Ok(Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Packet::decode_text(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"9x")),
            Err(DecodeError::UnknownType(b'9'))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"b!!!")),
            Err(DecodeError::BadBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e\x1e4b")),
            Err(DecodeError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff")),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn splits_payloads() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e3")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Bytes::from_static(b"hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Pong(Bytes::new()),
            ]
        );
    }

    #[test]
    fn records_decode_lazily_and_stop_at_the_first_bad_one() {
        // A million one-byte packets: taking the first two decodes two, nothing more.
        let body = Bytes::from(vec!["6"; 1_000_000].join("\u{1e}"));
        let mut lazy = records(body.clone()).unwrap();
        assert_eq!(lazy.next(), Some(Ok(Packet::Noop)));
        assert_eq!(lazy.next(), Some(Ok(Packet::Noop)));
        assert_eq!(lazy.pos, 4, "only the records taken were looked at");
        assert_eq!(records(body).unwrap().count(), 1_000_000);
        // Good records before a bad one are returned, then the error, then nothing.
        let mut mixed = records(Bytes::from_static(b"4a\x1e9x\x1e4b")).unwrap();
        assert_eq!(
            mixed.next(),
            Some(Ok(Packet::Message(Bytes::from_static(b"a"))))
        );
        assert_eq!(mixed.next(), Some(Err(DecodeError::UnknownType(b'9'))));
        assert_eq!(mixed.next(), None);
        // A trailing separator is an empty record, as before; an empty body is one too.
        let trailing: Vec<_> = records(Bytes::from_static(b"4a\x1e")).unwrap().collect();
        assert_eq!(
            trailing,
            vec![
                Ok(Packet::Message(Bytes::from_static(b"a"))),
                Err(DecodeError::Empty)
            ]
        );
        let empty: Vec<_> = records(Bytes::new()).unwrap().collect();
        assert_eq!(empty, vec![Err(DecodeError::Empty)]);
        assert_eq!(
            records(Bytes::from_static(b"4\xff")).err(),
            Some(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn line_wrapped_base64_is_accepted() {
        let wrapped = Bytes::from_static(b"bAP+A\nAQID\r\n");
        assert_eq!(
            Packet::decode_text(wrapped),
            Ok(Packet::Binary(Bytes::from_static(&[0, 255, 128, 1, 2, 3])))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"bAP*A")),
            Err(DecodeError::BadBase64)
        );
    }

    #[test]
    fn base64_matches_encoder() {
        let mut out = Vec::new();
        push_base64(&mut out, &[1, 2, 3, 4]);
        assert_eq!(out, b"bAQIDBA==");
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let text = "[^\u{1e}]{0,40}";
        prop_oneof![
            text.prop_map(Packet::Open),
            Just(Packet::Close),
            text.prop_map(|s| Packet::Ping(Bytes::from(s))),
            text.prop_map(|s| Packet::Pong(Bytes::from(s))),
            text.prop_map(|s| Packet::Message(Bytes::from(s))),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|v| Packet::Binary(Bytes::from(v))),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trip(packet in arb_packet()) {
            let encoded = packet.encode_text();
            prop_assert_eq!(Packet::decode_text(Bytes::from(encoded)), Ok(packet));
        }

        #[test]
        fn payload_round_trip(packets in proptest::collection::vec(arb_packet(), 1..8)) {
            let body = packets.iter().map(Packet::encode_text).collect::<Vec<_>>().join("\u{1e}");
            prop_assert_eq!(decode_payload(Bytes::from(body)), Ok(packets));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_payload(Bytes::from(bytes.clone()));
            let _ = Packet::decode_text(Bytes::from(bytes));
        }
    }
}
