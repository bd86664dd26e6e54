//! WebSocket framing (RFC 6455), server side: pure encode and decode, no I/O.
//!
//! Our own codec instead of tungstenite's stream so that the socket can be shared: a
//! broadcast writes a frame straight to an idle socket from the broadcasting task (see
//! `wsconn`), and an idle connection holds no read or write buffer at all.
//! No extensions are negotiated, so RSV bits must be clear.
//!
//! The decoder reads lengths a client chose: all its arithmetic is checked and it never
//! indexes (the lints below hold it to that), so no input can panic a connection.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::VecDeque;

use bytes::Bytes;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes we send (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The largest frame header: 2 bytes, 8 of extended length, no mask (server frames).
pub const MAX_HEADER: usize = 10;
/// The largest client frame header: 2 bytes, 8 of extended length and the 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// The longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message, valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The client's close frame and its status code, if it sent one.
    Close(Option<u16>),
}

/// Why the client's byte stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8 in a websocket text message")]
    InvalidUtf8,
    #[error("websocket message of {size} bytes or more exceeds the limit of {limit}")]
    TooBig { size: u64, limit: usize },
}

impl WsError {
    /// The status code to close the connection with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => CLOSE_PROTOCOL,
            WsError::InvalidUtf8 => CLOSE_INVALID_DATA,
            WsError::TooBig { .. } => CLOSE_TOO_BIG,
        }
    }
}

/// Writes the header of an unmasked, final frame into `out`; returns its length.
pub fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    let first = 0x80 | opcode;
    if len < 126 {
        // `len < 126`: the cast keeps every bit.
        *out = [first, len as u8, 0, 0, 0, 0, 0, 0, 0, 0];
        2
    } else if let Ok(len) = u16::try_from(len) {
        let [a, b] = len.to_be_bytes();
        *out = [first, 126, a, b, 0, 0, 0, 0, 0, 0];
        4
    } else {
        // A usize fits a u64 on every platform Rust supports.
        let [a, b, c, d, e, f, g, h] = (len as u64).to_be_bytes();
        *out = [first, 127, a, b, c, d, e, f, g, h];
        10
    }
}

/// Appends one whole unmasked, final frame to `out`.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0; MAX_HEADER];
    let n = encode_header(opcode, payload.len(), &mut header);
    out.reserve(n.saturating_add(payload.len()));
    // `n` is 2, 4 or 10: always within the header.
    out.extend_from_slice(header.get(..n).unwrap_or(&header));
    out.extend_from_slice(payload);
}

/// A close frame with a status code and no reason.
pub fn close_frame(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x80 | OP_CLOSE, 2, hi, lo]
}

/// Reassembles client frames into messages. Holds bytes only while a frame or a fragmented
/// message is incomplete: the pending bytes are those of one incomplete frame, whose size was
/// checked against the limit from its header, so they never exceed [`Decoder::max_pending`].
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Bytes of an incomplete frame (at most one).
    pending: Vec<u8>,
    /// A fragmented message being collected: (is text, data so far). Boxed: rare, and every
    /// idle connection's task would carry its size.
    fragments: Option<Box<(bool, Vec<u8>)>>,
}

/// What the start of a buffer holds.
enum Head {
    /// An incomplete header, which needs at least this many bytes in all.
    Need(usize),
    /// A complete header, valid and within the size limit.
    Frame(FrameHead),
}

struct FrameHead {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    /// Header and payload.
    frame_len: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            pending: Vec::new(),
            fragments: None,
        }
    }

    /// True when no partial frame or message is buffered.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.fragments.is_none()
    }

    /// The most bytes of an incomplete frame the decoder ever holds: the largest frame it
    /// accepts (a message at the limit, or a control frame), header included.
    pub fn max_pending(&self) -> usize {
        let control = MAX_CONTROL_PAYLOAD as usize;
        self.max_message
            .max(control)
            .saturating_add(MAX_CLIENT_HEADER)
    }

    /// Decodes what `input` completes into `out`. `input` is scratch: it is unmasked in place.
    /// After an error the stream cannot be read further.
    pub fn decode(
        &mut self,
        input: &mut [u8],
        out: &mut VecDeque<WsMessage>,
    ) -> Result<(), WsError> {
        let mut input = input;
        // First the frame the last read left incomplete: it takes from `input` only the
        // bytes it still lacks, so the pending buffer never holds more than that one frame.
        while !self.pending.is_empty() {
            let need = match self.parse_head(&self.pending)? {
                Head::Need(need) => need,
                Head::Frame(head) => head.frame_len,
            };
            let missing = need.saturating_sub(self.pending.len());
            let taken = std::mem::take(&mut input);
            let cut = missing.min(taken.len());
            // `cut <= taken.len()`, so the split always succeeds.
            let (fill, rest) = taken.split_at_mut_checked(cut).unwrap_or_default();
            self.pending.extend_from_slice(fill);
            input = rest;
            if self.pending.len() < need {
                // All of `input` went to the pending frame, which is still incomplete.
                return Ok(());
            }
            if let Head::Frame(head) = self.parse_head(&self.pending)? {
                if self.pending.len() >= head.frame_len {
                    // Complete: decode it; an idle connection keeps no buffer.
                    let mut frame = std::mem::take(&mut self.pending);
                    self.decode_frames(&mut frame, out)?;
                }
            }
            // Otherwise the header just completed: the next round knows the frame's size.
        }
        let used = self.decode_frames(input, out)?;
        if let Some(rest) = input.get(used..) {
            self.pending.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The number of bytes of an incomplete frame held.
    #[cfg(test)]
    fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Decodes every complete frame at the start of `buf`; returns the bytes used.
    fn decode_frames(
        &mut self,
        buf: &mut [u8],
        out: &mut VecDeque<WsMessage>,
    ) -> Result<usize, WsError> {
        let mut at: usize = 0;
        while let Some(rest) = buf.get_mut(at..) {
            let Head::Frame(head) = self.parse_head(rest)? else {
                break;
            };
            let Some(frame) = rest.get_mut(..head.frame_len) else {
                // The payload is not all there yet.
                break;
            };
            // `header_len <= frame_len`, so the split always succeeds.
            let Some((_, payload)) = frame.split_at_mut_checked(head.header_len) else {
                break;
            };
            unmask(payload, head.mask);
            self.on_frame(&head, payload, out)?;
            // Within `buf`, so no overflow.
            at = at.saturating_add(head.frame_len);
        }
        Ok(at)
    }

    /// Parses a frame header if enough bytes are there; checks it against the protocol and
    /// the size limit as soon as its length is known, so an oversized frame is refused
    /// before its payload is buffered.
    fn parse_head(&self, buf: &[u8]) -> Result<Head, WsError> {
        let [b0, b1, ..] = *buf else {
            return Ok(Head::Need(2));
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("client frame not masked"));
        }
        // The payload length, where the mask starts and where the header ends.
        let (len, mask_at, header_len) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4, 8),
                _ => return Ok(Head::Need(4)),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(n) => (u64::from_be_bytes(n), 10, MAX_CLIENT_HEADER),
                None => return Ok(Head::Need(10)),
            },
            n => (u64::from(n), 2, 6),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(WsError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD {
                    return Err(WsError::Protocol("control frame longer than 125 bytes"));
                }
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let so_far = self.fragments.as_ref().map_or(0, |f| f.1.len() as u64);
                // A declared length near 2^64 must not wrap around to a small size.
                let size = so_far.checked_add(len);
                match size {
                    Some(size) if size <= self.max_message as u64 => {}
                    _ => {
                        return Err(WsError::TooBig {
                            size: size.unwrap_or(u64::MAX),
                            limit: self.max_message,
                        })
                    }
                }
            }
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        let Some(mask) = buf
            .get(mask_at..header_len)
            .and_then(|m| <[u8; 4]>::try_from(m).ok())
        else {
            return Ok(Head::Need(header_len));
        };
        // Bounded by max_message or 125 above, so it fits a usize and adds to the header.
        let too_big = || WsError::TooBig {
            size: len,
            limit: self.max_message,
        };
        let payload_len = usize::try_from(len).map_err(|_| too_big())?;
        let frame_len = header_len.checked_add(payload_len).ok_or_else(too_big)?;
        Ok(Head::Frame(FrameHead {
            fin,
            opcode,
            mask,
            header_len,
            frame_len,
        }))
    }

    fn on_frame(
        &mut self,
        head: &FrameHead,
        payload: &[u8],
        out: &mut VecDeque<WsMessage>,
    ) -> Result<(), WsError> {
        match head.opcode {
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(WsError::Protocol(
                        "new message before the fragmented one ended",
                    ));
                }
                let text = head.opcode == OP_TEXT;
                if head.fin {
                    out.push_back(message(text, Bytes::copy_from_slice(payload))?);
                } else {
                    self.fragments = Some(Box::new((text, payload.to_vec())));
                }
            }
            OP_CONTINUATION => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                fragments.1.extend_from_slice(payload);
                if head.fin {
                    if let Some(fragments) = self.fragments.take() {
                        let (text, data) = *fragments;
                        out.push_back(message(text, Bytes::from(data))?);
                    }
                }
            }
            OP_PING => out.push_back(WsMessage::Ping(Bytes::copy_from_slice(payload))),
            OP_PONG => out.push_back(WsMessage::Pong(Bytes::copy_from_slice(payload))),
            _ => out.push_back(WsMessage::Close(close_code(payload)?)),
        }
        Ok(())
    }
}

fn message(text: bool, data: Bytes) -> Result<WsMessage, WsError> {
    if !text {
        return Ok(WsMessage::Binary(data));
    }
    std::str::from_utf8(&data).map_err(|_| WsError::InvalidUtf8)?;
    Ok(WsMessage::Text(data))
}

/// The status code of a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close frame with a one-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(WsError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// XORs the payload with the client's masking key, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [m0, m1, m2, m3] = mask;
    let wide = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
        }
    }
    // The tail starts at a multiple of 8, so the key's phase is 0 again.
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *b ^= m;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<WsMessage>, WsError> {
        let mut out = VecDeque::new();
        d.decode(&mut bytes.to_vec(), &mut out)?;
        Ok(out.into())
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        let mut h = [0; MAX_HEADER];
        assert_eq!(encode_header(OP_TEXT, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(encode_header(OP_BINARY, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(encode_header(OP_TEXT, 70_000, &mut h), 10);
        assert_eq!(&h[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let mut frame = Vec::new();
        encode_frame(OP_TEXT, b"42[\"a\"]", &mut frame);
        assert_eq!(&frame[..2], &[0x81, 7]);
        assert_eq!(close_frame(1000), [0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn messages_of_every_kind() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(true, OP_TEXT, "4héllo".as_bytes());
        bytes.extend(client_frame(true, OP_BINARY, &[0, 1, 2]));
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_PONG, b""));
        bytes.extend(client_frame(true, OP_CLOSE, &1001u16.to_be_bytes()));
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                WsMessage::Text(Bytes::from("4héllo")),
                WsMessage::Binary(Bytes::from_static(&[0, 1, 2])),
                WsMessage::Ping(Bytes::from_static(b"p")),
                WsMessage::Pong(Bytes::new()),
                WsMessage::Close(Some(1001)),
            ]
        );
        assert!(d.is_idle());
    }

    #[test]
    fn fragments_with_a_ping_between_them() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(false, OP_TEXT, b"4ab");
        bytes.extend(client_frame(true, OP_PING, b""));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"cd"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"ef"));
        let got = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                WsMessage::Ping(Bytes::new()),
                WsMessage::Text(Bytes::from("4abcdef"))
            ]
        );
    }

    #[test]
    fn a_frame_split_at_every_byte() {
        let frame = client_frame(true, OP_TEXT, &[b'x'; 300]);
        for cut in 0..frame.len() {
            let mut d = Decoder::new(1 << 20);
            let mut got = decode_all(&mut d, &frame[..cut]).unwrap();
            assert!(got.is_empty(), "cut at {cut}");
            got = decode_all(&mut d, &frame[cut..]).unwrap();
            assert_eq!(got, vec![WsMessage::Text(Bytes::from(vec![b'x'; 300]))]);
            assert!(d.is_idle());
        }
    }

    #[test]
    fn oversized_messages_are_refused_from_the_header() {
        let mut d = Decoder::new(100);
        // Only the header of a 1 MiB frame: refused before any payload arrives.
        let head = &client_frame(true, OP_BINARY, &vec![0; 1 << 20])[..14];
        let err = decode_all(&mut d, head).unwrap_err();
        assert_eq!(err.close_code(), CLOSE_TOO_BIG);
        // Fragments count together.
        let mut d = Decoder::new(100);
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 60]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 60]));
        let err = decode_all(&mut d, &bytes).unwrap_err();
        assert!(matches!(err, WsError::TooBig { size: 120, .. }));
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x01, b'a'], CLOSE_PROTOCOL),       // unmasked
            (client_frame(true, 0x3, b""), CLOSE_PROTOCOL), // unknown opcode
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"a");
                    f[0] |= 0x40;
                    f
                },
                CLOSE_PROTOCOL,
            ), // RSV1 without an extension
            (client_frame(false, OP_PING, b""), CLOSE_PROTOCOL),
            (client_frame(true, OP_PING, &[0; 126]), CLOSE_PROTOCOL),
            (client_frame(true, OP_CONTINUATION, b"a"), CLOSE_PROTOCOL),
            (client_frame(true, OP_CLOSE, &[3]), CLOSE_PROTOCOL),
            (
                client_frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
                CLOSE_PROTOCOL,
            ),
            (
                client_frame(true, OP_TEXT, &[0xff, 0xfe]),
                CLOSE_INVALID_DATA,
            ),
            (
                {
                    let mut f = client_frame(false, OP_TEXT, b"a");
                    f.extend(client_frame(true, OP_BINARY, b"b"));
                    f
                },
                CLOSE_PROTOCOL,
            ),
        ];
        for (bytes, code) in cases {
            let mut d = Decoder::new(1 << 20);
            let err = decode_all(&mut d, &bytes).unwrap_err();
            assert_eq!(err.close_code(), code, "{bytes:?}: {err}");
        }
    }

    #[test]
    fn utf8_split_across_fragments_is_valid() {
        let mut d = Decoder::new(1 << 20);
        let e = "é".as_bytes();
        let mut bytes = client_frame(false, OP_TEXT, &e[..1]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &e[1..]));
        assert_eq!(
            decode_all(&mut d, &bytes).unwrap(),
            vec![WsMessage::Text(Bytes::from("é"))]
        );
    }

    /// A masked continuation frame header declaring `len` bytes (64-bit length form).
    fn declared_continuation(len: u64) -> Vec<u8> {
        let mut out = vec![0x80 | OP_CONTINUATION, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&KEY);
        out
    }

    #[test]
    fn a_continuation_declaring_2_pow_64_minus_1_is_refused_not_wrapped() {
        // A one-byte first fragment, then a continuation of 2^64 - 1 bytes: the total used
        // to wrap to 0, pass the limit, and overflow the frame's end (a panic).
        let mut bytes = client_frame(false, OP_TEXT, b"a");
        bytes.extend(declared_continuation(u64::MAX));
        let mut d = Decoder::new(1 << 20);
        let err = decode_all(&mut d, &bytes).unwrap_err();
        assert_eq!(err.close_code(), CLOSE_TOO_BIG);
        assert!(matches!(err, WsError::TooBig { size: u64::MAX, .. }));

        // Byte by byte: refused as soon as the length is read, nothing buffered past it.
        let mut d = Decoder::new(1 << 20);
        let mut out = VecDeque::new();
        let mut refused = None;
        for (i, b) in bytes.iter().enumerate() {
            match d.decode(&mut [*b], &mut out) {
                Ok(()) => assert!(d.pending_len() <= MAX_CLIENT_HEADER),
                Err(err) => {
                    refused = Some((i, err));
                    break;
                }
            }
        }
        let (at, err) = refused.expect("the frame is refused");
        assert_eq!(err.close_code(), CLOSE_TOO_BIG);
        // The last byte of the 64-bit length, before the mask arrives.
        assert_eq!(at, client_frame(false, OP_TEXT, b"a").len() + 9);
    }

    #[test]
    fn a_pending_frame_takes_only_the_bytes_it_lacks() {
        let mut d = Decoder::new(300);
        let first = client_frame(true, OP_BINARY, &[7; 300]);
        let second = client_frame(true, OP_TEXT, b"4x");
        let mut out = VecDeque::new();
        d.decode(&mut first[..100].to_vec(), &mut out).unwrap();
        assert_eq!(d.pending_len(), 100);
        let mut rest = first[100..].to_vec();
        rest.extend(&second);
        d.decode(&mut rest, &mut out).unwrap();
        assert_eq!(
            Vec::from(out),
            vec![
                WsMessage::Binary(Bytes::from(vec![7; 300])),
                WsMessage::Text(Bytes::from("4x"))
            ]
        );
        assert!(d.is_idle());
        assert!(d.max_pending() >= first.len());
    }

    /// A masked client frame whose header declares `declared` bytes, in the length form
    /// `form` asks for where it can hold it, followed by `payload` whatever its length.
    fn raw_frame(fin: bool, opcode: u8, declared: u64, form: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match form {
            0 if declared < 126 => out.push(0x80 | declared as u8),
            0 | 1 if declared <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(declared as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&declared.to_be_bytes());
            }
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        let declared = prop_oneof![
            0u64..300,
            (u64::MAX - 300)..=u64::MAX,
            any::<u64>(),
            Just(1u64 << 63),
        ];
        let opcode = prop_oneof![
            Just(OP_CONTINUATION),
            Just(OP_TEXT),
            Just(OP_BINARY),
            Just(OP_PING),
            Just(OP_CLOSE),
            0u8..16,
        ];
        (
            any::<bool>(),
            opcode,
            declared,
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..1500),
            any::<bool>(),
        )
            .prop_map(|(fin, opcode, declared, form, payload, honest)| {
                let declared = if honest {
                    payload.len() as u64
                } else {
                    declared
                };
                raw_frame(fin, opcode, declared, form, &payload)
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..600), 0..16)) {
            let mut d = Decoder::new(256);
            let mut out = VecDeque::new();
            for mut c in chunks {
                if d.decode(&mut c, &mut out).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn chunked_frames_with_huge_lengths_never_panic(
            frames in proptest::collection::vec(arb_frame(), 1..10),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
        ) {
            let stream = frames.concat();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(stream.len());
            points.sort_unstable();
            let mut d = Decoder::new(256);
            let mut out = VecDeque::new();
            let mut from = 0;
            for to in points {
                let mut chunk = stream[from..to].to_vec();
                from = to;
                if d.decode(&mut chunk, &mut out).is_err() {
                    break;
                }
                prop_assert!(d.pending_len() <= d.max_pending());
            }
        }

        #[test]
        fn unmask_matches_the_bytewise_definition(payload in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let mut fast = payload.clone();
            unmask(&mut fast, KEY);
            let slow: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]).collect();
            prop_assert_eq!(fast, slow);
        }
    }
}
