//! The direct path of a new WebSocket connection: the engine answers the handshake itself,
//! without hyper, when a connection's first request is a fresh Engine.IO WebSocket handshake
//! (`GET {path}?EIO=4&transport=websocket`, no `sid`, `Upgrade: websocket`).
//!
//! Why: that is how nearly every client connects, and through hyper it took three tasks (the
//! HTTP connection, the upgrade, the session's loop), hyper's request and response objects,
//! and two writes (the `101`, then the open packet). Here it is two tasks (the connection's,
//! then the session's loop) and one write: the `101` and the open packet go out together. Everything else, and every answer that is not
//! a `101` (errors, refusals, polling, upgrades, requests for other nodes' sessions), still
//! goes through hyper and the router, which see the request from its first byte
//! ([`Rewind`]): this path answers only what it is sure the router would accept.
//!
//! The head is read into a buffer of [`HEAD_BYTES`] within `headerReadTimeout`, counted from
//! the connection's start; hyper gets what is left of that time for the first request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::request::{header_bytes, parse_query};
use super::rewind::Rewind;
use super::session::Session;
use super::sessions::Engine;
use super::settings::EngineSettings;
use super::websocket;
use super::wsconn::WsConn;
use super::wsframe;
use super::{CloseReason, HandshakeInfo, Headers};
use crate::config::TransportKind;

/// The largest request head this path reads. A longer one (a browser with many cookies) is
/// served by hyper, which has its own limits.
pub const HEAD_BYTES: usize = 8 * 1024;

/// The head buffer's first size; it grows (×4) up to [`HEAD_BYTES`] for a longer head.
const HEAD_START: usize = 1024;

/// Headers a head may have for this path; one with more goes to hyper.
const MAX_HEADERS: usize = 48;

/// How a connection's first request is served.
pub enum Accepted {
    /// A new WebSocket session, answered: serve it with [`DirectSocket::serve`].
    WebSocket(DirectSocket),
    /// Anything else: hyper serves `io` (which replays what was read), giving the first
    /// request's headers at most `header_read_timeout` more.
    Http {
        io: Rewind,
        header_read_timeout: Duration,
    },
    /// The connection is over: closed, timed out before its head, or the answer could not
    /// be written.
    Done,
}

/// A WebSocket session whose handshake this path answered.
pub struct DirectSocket {
    engine: Arc<Engine>,
    session: Arc<Session>,
    ws: WsConn,
}

impl DirectSocket {
    /// The session's loop, until it ends (the future to spawn as the session's task).
    pub fn serve(self) -> impl std::future::Future<Output = ()> {
        websocket::serve(self.engine, self.session, self.ws)
    }
}

/// Reads the first request's head and answers it if it is a fresh WebSocket handshake.
/// `reserved` paths (the health probes) are always left to hyper.
pub async fn accept(
    engine: Arc<Engine>,
    mut stream: TcpStream,
    peer: SocketAddr,
    reserved: fn(&str) -> bool,
) -> Accepted {
    let settings = &engine.settings;
    let deadline = Instant::now() + settings.header_read_timeout;
    // Small first: a client library's head fits, with no 8 KiB to zero for it.
    let mut buf = vec![0u8; HEAD_START];
    let mut filled = 0;
    let head = loop {
        if filled == buf.len() {
            buf.resize(buf.len().saturating_mul(4).min(HEAD_BYTES), 0);
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..])).await;
        match read {
            // As hyper does: no head in time, or a broken socket, ends it without an answer.
            Err(_) | Ok(Err(_)) => return Accepted::Done,
            Ok(Ok(0)) if filled == 0 => return Accepted::Done,
            // The client stopped sending mid-head: hyper answers what it got, as always.
            Ok(Ok(0)) => break Head::Other,
            Ok(Ok(n)) => filled += n,
        }
        match parse_head(&buf[..filled], settings, reserved) {
            Head::Partial if filled < HEAD_BYTES => continue,
            Head::Partial => break Head::Other,
            head => break head,
        }
    };
    buf.truncate(filled);
    let fresh = match head {
        Head::Fresh(fresh) => fresh,
        Head::Partial | Head::Other => return to_hyper(stream, buf, deadline),
    };
    let handshake = HandshakeInfo {
        headers: fresh.headers,
        address: peer,
        url: fresh.url,
        time: std::time::SystemTime::now(),
        secure: false,
    };
    // A refusal (limits, draining, no app) is answered by the router, which asks again and
    // gets the same answer, with the same error body and CORS headers as ever.
    let Ok(session) = engine.create_session(TransportKind::Websocket, handshake) else {
        return to_hyper(stream, buf, deadline);
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n");
    out.extend_from_slice(b"upgrade: websocket\r\nsec-websocket-accept: ");
    out.extend_from_slice(fresh.accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    let open = engine.open_packet(&session, TransportKind::Websocket);
    wsframe::encode_frame(wsframe::OP_TEXT, open.as_bytes(), &mut out);
    // Whatever followed the head is the client's first WebSocket frames.
    let ws = WsConn::new(
        stream,
        buf.get(fresh.len..).unwrap_or_default(),
        settings.max_payload,
    );
    drop(buf);
    // A client that takes nothing cannot hold the handshake longer than an upgrade may take.
    let sent = tokio::time::timeout(settings.upgrade_timeout, ws.write_all(&out)).await;
    if !matches!(sent, Ok(Ok(()))) {
        session.close(CloseReason::TransportError);
        return Accepted::Done;
    }
    Accepted::WebSocket(DirectSocket {
        engine,
        session,
        ws,
    })
}

/// Hands the connection to hyper with what was read and what is left of the head's time.
fn to_hyper(stream: TcpStream, read: Vec<u8>, deadline: Instant) -> Accepted {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Accepted::Done;
    }
    Accepted::Http {
        io: Rewind::new(stream, read),
        header_read_timeout: left,
    }
}

/// What a request head is, as far as this path is concerned.
#[derive(Debug)]
enum Head {
    /// Not complete yet.
    Partial,
    /// A fresh WebSocket handshake the router would accept.
    Fresh(Fresh),
    /// Anything else, valid or not: the router (or hyper) answers it.
    Other,
}

/// What the handshake's answer and session need from the head.
#[derive(Debug)]
struct Fresh {
    /// Bytes of the head, its blank line included.
    len: usize,
    /// `Sec-WebSocket-Accept`.
    accept: String,
    /// The request target.
    url: String,
    headers: Headers,
}

/// Classifies the head at the start of `buf`. Only a request every check of the router
/// would let through to a new WebSocket session is `Fresh`.
fn parse_head(buf: &[u8], settings: &EngineSettings, reserved: fn(&str) -> bool) -> Head {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Head::Other;
    }
    // Origin form only, parsed as hyper parses it.
    let Some(target) = req.path.filter(|t| t.starts_with('/')) else {
        return Head::Other;
    };
    let Ok(target) = PathAndQuery::try_from(target) else {
        return Head::Other;
    };
    if reserved(target.path()) || !target.path().starts_with(settings.path.as_str()) {
        return Head::Other;
    }
    let query = parse_query(target.query().unwrap_or(""));
    if query.transport != Some("websocket")
        || query.eio != Some("4")
        || query.sid.is_some()
        || !settings.allows(TransportKind::Websocket)
    {
        return Head::Other;
    }
    let headers = req.headers.iter();
    let first = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = first("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let version = first("sec-websocket-version").is_some_and(|v| v == b"13");
    let Some(key) = first("sec-websocket-key").filter(|_| upgrade && version) else {
        return Head::Other;
    };
    // A GET with a body is hyper's to read.
    if first("content-length").is_some() || first("transfer-encoding").is_some() {
        return Head::Other;
    }
    let pairs = || headers.clone().map(|h| (h.name, h.value));
    if header_bytes(pairs()) > settings.max_handshake_header_bytes {
        return Head::Other;
    }
    Head::Fresh(Fresh {
        len,
        accept: derive_accept_key(key),
        url: target.as_str().to_owned(),
        headers: Headers::from_pairs(pairs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EngineSettings {
        EngineSettings::from_config(&crate::config::Config::default())
    }

    fn no_probe(path: &str) -> bool {
        path == "/healthz"
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn handshake(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    const FRESH: &str = "/socket.io/?EIO=4&transport=websocket";

    #[test]
    fn a_fresh_handshake_is_answered_here() {
        let head = handshake(FRESH, "X-Who: me\r\n");
        let Head::Fresh(fresh) = parse_head(head.as_bytes(), &settings(), no_probe) else {
            panic!("not fresh");
        };
        assert_eq!(fresh.len, head.len());
        // RFC 6455's own example.
        assert_eq!(fresh.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(fresh.url, FRESH);
        let names: Vec<_> = fresh.headers.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names.first().map(String::as_str), Some("host"));
        assert!(names.iter().any(|n| n == "x-who"));
    }

    #[test]
    fn an_incomplete_head_is_partial() {
        let head = handshake(FRESH, "");
        let cut = &head.as_bytes()[..head.len() - 2];
        assert!(matches!(
            parse_head(cut, &settings(), no_probe),
            Head::Partial
        ));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let s = settings();
        let other = |head: String| {
            let got = parse_head(head.as_bytes(), &s, no_probe);
            assert!(matches!(got, Head::Other), "{head:?} gave {got:?}");
        };
        // Other transports, versions, sessions and paths.
        other(handshake("/socket.io/?EIO=4&transport=polling", ""));
        other(handshake("/socket.io/?EIO=3&transport=websocket", ""));
        other(handshake(
            "/socket.io/?EIO=4&transport=websocket&sid=abc",
            "",
        ));
        other(handshake("/other/?EIO=4&transport=websocket", ""));
        other(handshake(
            "http://x/socket.io/?EIO=4&transport=websocket",
            "",
        ));
        other(handshake("/healthz", ""));
        other(handshake(FRESH, "").replace("GET", "POST"));
        other(handshake(FRESH, "").replace("HTTP/1.1", "HTTP/1.0"));
        // Not quite a WebSocket handshake: the router answers with its error.
        other(handshake(FRESH, "").replace("Upgrade: websocket", "Upgrade: h2c"));
        other(handshake(FRESH, "").replace("Version: 13", "Version: 8"));
        other(handshake(FRESH, "").replace("Sec-WebSocket-Key", "X-Key"));
        other(handshake(FRESH, "Content-Length: 3\r\n"));
        other(handshake(FRESH, "Transfer-Encoding: chunked\r\n"));
        // Malformed, too many headers, or past the handshake's header limit.
        other("GET /socket.io/ HTTP/1.1\r\nBad Header\r\n\r\n".to_string());
        other(handshake(FRESH, &"X-Many: 1\r\n".repeat(MAX_HEADERS)));
        let big = format!("X-Big: {}\r\n", "b".repeat(s.max_handshake_header_bytes));
        other(handshake(FRESH, &big));
    }

    #[test]
    fn websocket_off_goes_to_hyper() {
        let mut s = settings();
        s.transports = vec![TransportKind::Polling];
        let head = handshake(FRESH, "");
        assert!(matches!(
            parse_head(head.as_bytes(), &s, no_probe),
            Head::Other
        ));
    }
}
