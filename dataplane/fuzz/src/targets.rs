//! The fuzz targets' logic, shared by the libFuzzer harnesses (`fuzz_targets/`, built by
//! `cargo fuzz`) and the corpus replay test (`dataplane/tests/fuzz_corpus.rs`, a plain
//! `cargo test` without instrumentation). Each function takes the raw fuzz input and panics
//! on a finding: a panic inside the code under test, or a broken invariant asserted here.
//!
//! Every path into the data plane goes through the `use` lines below, so a copy of this
//! file can be pointed at an older layout of the crate (see docs/fuzzing.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use roomcast_config::Config;
use roomcast_dataplane::app::policy::pattern_allows;
use roomcast_dataplane::engine::packet as eio;
use roomcast_dataplane::engine::wsframe::{Decoder, WsError, WsMessage};
use roomcast_dataplane::socketio::packet::{Packet, PacketKind};
use roomcast_dataplane::socketio::payload::Payload;

/// The names of the targets, as under `fuzz_targets/` and `seeds/`.
pub const TARGETS: &[&str] = &[
    "wsframe",
    "engine_packet",
    "socketio_packet",
    "policy",
    "config",
];

/// Runs the target called `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "wsframe" => wsframe(data),
        "engine_packet" => engine_packet(data),
        "socketio_packet" => socketio_packet(data),
        "policy" => policy(data),
        "config" => config(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// The message limit of the WebSocket decoder under test (`maxHttpBufferSize` is 1 MB by
/// default; a small one lets the fuzzer reach the limit).
const WS_MAX_MESSAGE: usize = 1024;

/// WebSocket frame decoder, fed in chunks. Input: one byte `n`, then `n % 16` chunk sizes
/// (one byte each, used in turn; none means one chunk), then the client's byte stream.
/// Chunked decoding must give the same messages and the same error as decoding the whole
/// stream at once, and no message may exceed the limit.
pub fn wsframe(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let (whole, whole_err) = ws_decode(stream, &[]);
    let (chunked, chunked_err) = ws_decode(stream, sizes);
    assert_eq!(whole, chunked, "chunking changed the messages");
    assert_eq!(whole_err, chunked_err, "chunking changed the error");
    for message in &whole {
        if let WsMessage::Text(b) | WsMessage::Binary(b) = message {
            assert!(b.len() <= WS_MAX_MESSAGE, "a message over the limit");
        }
    }
}

fn ws_decode(stream: &[u8], sizes: &[u8]) -> (Vec<WsMessage>, Option<WsError>) {
    let mut decoder = Decoder::new(WS_MAX_MESSAGE);
    let mut out = VecDeque::new();
    let mut at = 0;
    let mut turn = 0;
    while at < stream.len() {
        let size = match sizes.get(turn % sizes.len().max(1)) {
            // 0..=255 becomes 1..=256: every call makes progress.
            Some(&s) => usize::from(s) + 1,
            None => stream.len(),
        };
        turn += 1;
        let end = (at + size).min(stream.len());
        let mut chunk = stream[at..end].to_vec();
        at = end;
        if let Err(err) = decoder.decode(&mut chunk, &mut out) {
            return (out.into(), Some(err));
        }
    }
    (out.into(), None)
}

/// Engine.IO: the polling payload decoders (the transport's lazy `records` and the eager
/// `decode_payload`) and the text packet decoder. Both payload decoders must agree (the lazy
/// one stops at the first bad record, with the eager one's error); every packet must survive
/// its own encoding; a payload never decodes to more data than it holds.
pub fn engine_packet(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let _ = eio::Packet::decode_text(body.clone());
    let lazy = lazy_records(body.clone());
    let eager = eio::decode_payload(body);
    let packets = match (lazy, eager) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (Ok(mut items), Err(err)) => {
            assert_eq!(
                items.pop(),
                Some(Err(err)),
                "the lazy decoder ends on the error"
            );
            assert!(
                items.iter().all(Result::is_ok),
                "the lazy decoder went on after an error"
            );
            return;
        }
        (Ok(items), Ok(packets)) => {
            let same: Vec<_> = packets.iter().cloned().map(Ok).collect();
            assert_eq!(items, same, "lazy and eager decoding differ");
            packets
        }
        (Err(err), Ok(_)) => panic!("only the lazy decoder refused the body: {err}"),
    };
    assert!(packets.len() <= data.len() + 1, "more packets than records");
    let mut total = 0;
    for packet in packets {
        total += match &packet {
            eio::Packet::Open(s) => s.len(),
            eio::Packet::Ping(b)
            | eio::Packet::Pong(b)
            | eio::Packet::Message(b)
            | eio::Packet::Binary(b) => b.len(),
            _ => 0,
        };
        let again = eio::Packet::decode_text(Bytes::from(packet.encode_text()));
        assert_eq!(
            again,
            Ok(packet),
            "a decoded packet does not survive encoding"
        );
    }
    assert!(
        total <= data.len(),
        "decoded {total} bytes from {}",
        data.len()
    );
}

type Records = Vec<Result<eio::Packet, eio::DecodeError>>;

/// The transport's lazy decoder, collected. `scripts/fuzz-old.sh` swaps this line for the eager
/// decoder on code that predates the lazy one.
fn lazy_records(body: Bytes) -> Result<Records, eio::DecodeError> {
    Ok(eio::records(body)?.collect()) // fuzz-old: lazy
}

/// The attachments limit (`limits.maxAttachments`, default 16).
const MAX_ATTACHMENTS: usize = 16;

/// Socket.IO: a packet, its attachments reassembled as the connection does, then the
/// arguments turned into JSON as for a webhook body or a broadcast ack
/// (`Payload::to_json_base64`). Input: the packet text, then each attachment after a 0xFF
/// byte (never in UTF-8 text). The JSON must be no bigger than the arguments with each
/// attachment inlined once: a placeholder expanded once per reference is an amplification.
pub fn socketio_packet(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0xFF);
    let Some(Ok(text)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let Ok(packet) = Packet::decode(text, MAX_ATTACHMENTS) else {
        return;
    };
    assert!(packet.attachments <= MAX_ATTACHMENTS);
    let binary = matches!(packet.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck);
    let mut attachments = Vec::new();
    if binary {
        attachments = parts
            .take(packet.attachments)
            .map(Bytes::copy_from_slice)
            .collect();
        if attachments.len() < packet.attachments {
            // The connection waits for the rest.
            return;
        }
    }
    // What `Connection::dispatch` hands the application: an event's arguments after its
    // name, an ack's arguments.
    let mut args = match packet.data {
        Some(Value::Array(args)) => args,
        _ => return,
    };
    if matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent) && !args.is_empty() {
        args.remove(0);
    }
    let plain_len = json_len(&args);
    let inline: usize = attachments
        .iter()
        .map(|a| a.len().div_ceil(3) * 4 + r#"{"_binary":""}"#.len())
        .sum();
    let payload = Payload { args, attachments };
    let expanded = json_len(&payload.to_json_base64());
    assert!(
        expanded <= plain_len + inline,
        "attachments expanded to {expanded} bytes of JSON from {plain_len} bytes of \
         arguments and {} of attachments ({} bytes of input)",
        payload.attachments.iter().map(Bytes::len).sum::<usize>(),
        data.len(),
    );
}

fn json_len(values: &[Value]) -> usize {
    serde_json::to_vec(values).map_or(0, |v| v.len())
}

/// The longest pattern and room the policy target tries (room names are limited to a few
/// hundred bytes; configured patterns are short).
const POLICY_MAX_PATTERN: usize = 64;
const POLICY_MAX_ROOM: usize = 512;
/// A linear matcher decides these sizes in microseconds, even instrumented.
const POLICY_TIME_BOUND: Duration = Duration::from_millis(250);

/// The policy matcher. Input: the pattern, a newline, the room. Must agree with a plain
/// dynamic-programming glob matcher (for patterns without claims) and stay within
/// [`POLICY_TIME_BOUND`]: a backtracking matcher takes time exponential in the wildcards.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, room) = text.split_once('\n').unwrap_or((text, ""));
    if pattern.len() > POLICY_MAX_PATTERN || room.len() > POLICY_MAX_ROOM {
        return;
    }
    let claims = serde_json::json!({ "sub": "u1", "org": { "id": 7, "name": "a*b" } });
    let started = Instant::now();
    let allowed = pattern_allows(pattern, room, Some(&claims));
    let took = started.elapsed();
    assert!(
        took <= POLICY_TIME_BOUND,
        "matching a {}-byte pattern against a {}-byte room took {took:?}",
        pattern.len(),
        room.len()
    );
    if !pattern.contains('{') {
        assert_eq!(allowed, glob(pattern, room), "{pattern:?} against {room:?}");
    }
}

/// `*` matches any run of characters; everything else matches itself. O(pattern × text).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: the pattern so far matches t[..j].
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for pc in p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 0..t.len() {
                next[j + 1] = row[j] && t[j] == pc;
            }
        }
        row = next;
    }
    row[t.len()]
}

/// The configuration loader. Input: a format byte (YAML, JSON or TOML), then the text.
/// Parsing and validation must not panic; a valid configuration must survive its own JSON
/// form unchanged.
pub fn config(data: &[u8]) {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let format = match format % 3 {
        0 => "yaml",
        1 => "json",
        _ => "toml",
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(config) = Config::parse(text, format) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let json = serde_json::to_string(&config).expect("a configuration serializes");
    let again = Config::parse(&json, "json").expect("a configuration's JSON parses");
    assert_eq!(again, config, "JSON round trip changed the configuration");
}
