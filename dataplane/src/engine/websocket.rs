//! The WebSocket transport: direct WebSocket sessions and upgrades from polling.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::cork;
use super::outbox::Frame;
use super::packet::Packet;
use super::response::{Body, EngineError, Responder};
use super::rewind::Rewind;
use super::session::Session;
use super::sessions::Engine;
use super::wsconn::{encode_frame, ReadError, WsConn};
use super::wsframe::{self, WsMessage};
use super::{CloseReason, HandshakeInfo};
use crate::config::TransportKind;

/// Answers a WebSocket upgrade request with 101 and starts the transport task.
/// `existing` is the polling session being upgraded; otherwise a session is created.
pub(super) fn accept(
    engine: Arc<Engine>,
    mut req: Request<Incoming>,
    responder: &Responder,
    existing: Option<Arc<Session>>,
    handshake: Option<HandshakeInfo>,
) -> Response<Body> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return responder.error(EngineError::BadRequest);
    };

    let mode = match (existing, handshake) {
        (Some(session), _) => Mode::Upgrade(session),
        (None, Some(handshake)) => match engine.create_session(TransportKind::Websocket, handshake)
        {
            Ok(session) => Mode::Fresh(session),
            Err(refusal) => {
                return responder.status_json(
                    refusal.status(),
                    EngineError::Forbidden.code(),
                    refusal.message(),
                )
            }
        },
        (None, None) => return responder.error(EngineError::BadRequest),
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        // Our listener serves TCP streams only, so the downcast failing would be a bug.
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded
                .downcast::<TokioIo<Rewind>>()
                .map_err(|_| "the upgraded connection is not a TCP stream".to_string()),
            Err(error) => Err(error.to_string()),
        };
        let ws = match upgraded {
            Ok(parts) => {
                // hyper read ahead first, then anything of the direct path's head it had
                // not reached: in that order, both come before the socket's next bytes.
                let (stream, unread) = parts.io.into_inner().into_parts();
                let mut early = parts.read_buf.to_vec();
                early.extend_from_slice(&unread);
                WsConn::new(stream, &early, engine.settings.max_payload)
            }
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                if let Mode::Fresh(session) = mode {
                    session.close(CloseReason::TransportError);
                }
                return;
            }
        };
        match mode {
            Mode::Fresh(session) => run_fresh(engine, session, ws).await,
            Mode::Upgrade(session) => run_upgrade(engine, session, ws).await,
        }
    });

    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

enum Mode {
    Fresh(Arc<Session>),
    Upgrade(Arc<Session>),
}

async fn run_fresh(engine: Arc<Engine>, session: Arc<Session>, ws: WsConn) {
    let open = engine.open_packet(&session, TransportKind::Websocket);
    // A client that takes nothing cannot hold the handshake longer than an upgrade may take.
    let sent = tokio::time::timeout(engine.settings.upgrade_timeout, ws.send_text(&open)).await;
    if !matches!(sent, Ok(Ok(()))) {
        session.close(CloseReason::TransportError);
        return;
    }
    // The long-lived loop gets a task of its own, sized for its idle state only; this task
    // (the handshake) ends here.
    tokio::spawn(serve(engine, session, ws));
}

/// The upgrade dance: `2probe` → `3probe`, then `5` switches the session to this socket.
async fn run_upgrade(engine: Arc<Engine>, session: Arc<Session>, mut ws: WsConn) {
    let allowed = {
        let mut t = session.transport.lock();
        let allowed = !t.upgrading && t.transport == TransportKind::Polling;
        t.upgrading |= allowed;
        allowed
    };
    if !allowed {
        // Only one upgrade per session; a second WebSocket for the same sid is refused.
        ws.close(wsframe::CLOSE_NORMAL).await;
        return;
    }
    // Boxed: the probe's state is transient and must not size the long-lived task.
    let upgraded = Box::pin(probe(&engine, &session, &mut ws)).await;
    {
        let mut t = session.transport.lock();
        t.upgrading = false;
        if upgraded && !session.is_closed() {
            t.transport = TransportKind::Websocket;
        }
    }
    session.outbox.wake();
    if upgraded && !session.is_closed() {
        tracing::debug!(sid = %session.sid, "upgraded to websocket");
        if let Some(handler) = session.handler() {
            handler.on_upgrade();
        }
        // The long-lived loop gets a task of its own, sized for its idle state only; this
        // task (handshake or upgrade state) ends here.
        tokio::spawn(serve(engine, session, ws));
    } else {
        ws.close(wsframe::CLOSE_NORMAL).await;
    }
}

/// Waits for `2probe` (answered `3probe`) then `5`; false on anything else or timeout.
/// Everything counts against `upgradeTimeout`, writes included: a client that stops reading
/// (a full TCP window) cannot hold the probe longer.
async fn probe(engine: &Engine, session: &Session, ws: &mut WsConn) -> bool {
    let until = tokio::time::Instant::now() + engine.settings.upgrade_timeout;
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    let mut probed = false;
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = &mut deadline => return false,
            _ = session.wait_closed() => return false,
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Ping(data))) => {
                if !written_by(until, ws.write_all(&pong(&data))).await {
                    return false;
                }
                continue;
            }
            Some(Ok(WsMessage::Pong(_))) => continue,
            _ => return false,
        };
        match Packet::decode_text(text) {
            Ok(Packet::Ping(data)) if &data[..] == b"probe" && !probed => {
                probed = true;
                if !written_by(until, ws.send_text("3probe")).await {
                    return false;
                }
                // Release the pending GET with a noop so the client can send `5`.
                session.outbox.wake();
            }
            Ok(Packet::Upgrade) if probed => return true,
            _ => return false,
        }
    }
}

/// Whether `write` completed by `until`.
async fn written_by(
    until: tokio::time::Instant,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> bool {
    matches!(tokio::time::timeout_at(until, write).await, Ok(Ok(())))
}

/// The pong frame answering a ping.
fn pong(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wsframe::encode_frame(wsframe::OP_PONG, data, &mut out);
    out
}

/// How the main loop ended.
enum End {
    /// The session closed (queued frames were written): say goodbye normally.
    Closed,
    /// The client broke the protocol: close with its status code.
    Protocol(u16),
    /// The socket is gone or was abandoned mid-frame: no close frame.
    Abort,
}

/// Main loop: writes queued frames in batches (one write per batch) and reads packets. The
/// outbox writes directly to the socket while this task is idle.
pub(super) async fn serve(engine: Arc<Engine>, session: Arc<Session>, mut ws: WsConn) {
    session.outbox.attach_sink(ws.sink(engine.stats.clone()));
    let mut batch: Vec<Frame> = Vec::new();
    // Pong frames owed to the client, written with the next batch.
    let mut control: Vec<u8> = Vec::new();
    let end = loop {
        // Scoped: what the write takes must not stay in the idle task's state.
        let more = {
            let mut rest = None;
            let more = session.outbox.begin_write(&mut rest, &mut batch);
            if rest.is_some() || !batch.is_empty() || !control.is_empty() {
                engine
                    .stats
                    .frames_sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let closing = session.outbox.is_closed();
                // Boxed: a write in progress is transient; the idle task stays small.
                let write = Box::pin(write_batch(
                    &session,
                    &ws,
                    rest,
                    &mut batch,
                    &mut control,
                    closing.then_some(engine.settings.ping_timeout),
                ));
                let written = write.await;
                session.outbox.end_write();
                if !more {
                    // Idle from here on: keep no batch storage.
                    batch = Vec::new();
                }
                if let Err(reason) = written {
                    session.close(reason);
                    break End::Abort;
                }
            } else {
                // Nothing to write: let direct writes resume at once.
                session.outbox.end_write();
            }
            more
        };
        if more {
            continue;
        }
        if session.outbox.is_closed() {
            break End::Closed;
        }
        // The outbox first, then the socket; both wait in slots of their own (the outbox's
        // waker, the stream's reader), so the idle future holds no waiter nodes.
        let woke = std::future::poll_fn(|cx| {
            if session.outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(None);
            }
            ws.poll_next(cx).map(Some)
        })
        .await;
        if let Some(msg) = woke {
            // Everything this read brought is handled in one write-combining scope.
            let end = cork::corked(|| {
                let mut msg = msg;
                loop {
                    if let Some(end) = on_message(&engine, &session, &mut control, msg) {
                        return Some(end);
                    }
                    msg = Some(ws.try_next()?);
                }
            });
            if let Some(end) = end {
                break end;
            }
        }
    };
    session.outbox.detach_sink();
    // Boxed: the closing state (a read buffer, a timer) must not size the idle task.
    match end {
        End::Closed => Box::pin(ws.close(wsframe::CLOSE_NORMAL)).await,
        End::Protocol(code) => Box::pin(ws.close(code)).await,
        End::Abort => {}
    }
}

/// Handles one message from the client; `Some` ends the connection.
fn on_message(
    engine: &Engine,
    session: &Session,
    control: &mut Vec<u8>,
    msg: Option<Result<WsMessage, ReadError>>,
) -> Option<End> {
    engine
        .stats
        .packets_received
        .fetch_add(1, Ordering::Relaxed);
    match msg {
        Some(Ok(WsMessage::Text(text))) => match Packet::decode_text(text) {
            Ok(packet) => session.on_packet(packet),
            Err(error) => {
                tracing::debug!(sid = %session.sid, %error, "malformed websocket packet");
                session.close(CloseReason::ParseError);
                return Some(End::Closed);
            }
        },
        Some(Ok(WsMessage::Binary(data))) => session.on_packet(Packet::Binary(data)),
        Some(Ok(WsMessage::Ping(data))) => control.extend_from_slice(&pong(&data)),
        Some(Ok(WsMessage::Pong(_))) => {}
        Some(Ok(WsMessage::Close(_))) | None => {
            session.close(CloseReason::TransportClose);
            return Some(End::Closed);
        }
        Some(Err(ReadError::Protocol(error))) => {
            tracing::debug!(sid = %session.sid, %error, "websocket protocol error");
            session.close(CloseReason::TransportError);
            return Some(End::Protocol(error.close_code()));
        }
        Some(Err(ReadError::Io(error))) => {
            tracing::debug!(sid = %session.sid, %error, "websocket read error");
            session.close(CloseReason::TransportError);
            return Some(End::Abort);
        }
    }
    None
}

/// Writes the rest of a partly written frame, owed pongs and a batch of frames in one write;
/// gives up if the session closes meanwhile (a slow consumer must not pin the task on a
/// full socket). `closing` is set, with the time the last frames get (`pingTimeout`), when
/// the session is closed already: a client that reads nothing cannot hold the task longer.
async fn write_batch(
    session: &Session,
    ws: &WsConn,
    rest: Option<Bytes>,
    batch: &mut Vec<Frame>,
    control: &mut Vec<u8>,
    closing: Option<std::time::Duration>,
) -> Result<(), CloseReason> {
    let is_closing = closing.is_some();
    let mut wire = Vec::new();
    // A partly written frame must be finished before any other frame starts.
    if let Some(rest) = rest {
        wire.extend_from_slice(&rest);
    }
    wire.append(control);
    for frame in batch.drain(..) {
        // The close packet is for polling; on WebSocket the close frame says it.
        if is_closing && matches!(&frame, Frame::Text(t) if t.as_str() == "1") {
            continue;
        }
        encode_frame(&frame, &mut wire);
    }
    if batch.capacity() > 256 {
        batch.shrink_to(16);
    }
    if control.capacity() > 256 {
        *control = Vec::new();
    }
    let write = ws.write_all(&wire);
    if let Some(limit) = closing {
        match tokio::time::timeout(limit, write).await {
            Ok(written) => written.map_err(|_| CloseReason::TransportError),
            Err(_) => {
                tracing::debug!(sid = %session.sid, "closing websocket not read: dropped");
                Err(CloseReason::TransportError)
            }
        }
    } else {
        tokio::select! {
            r = write => r.map_err(|_| CloseReason::TransportError),
            // Abandoned mid-write: the socket is dropped without a close frame.
            _ = session.wait_closed() => Err(CloseReason::SlowConsumer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::session::EchoHandler;
    use crate::engine::{ConnectionFactory, ConnectionHandler};
    use tokio::net::TcpStream;

    struct Echo;

    impl ConnectionFactory for Echo {
        fn open(&self, session: &Arc<Session>, _: HandshakeInfo) -> Arc<dyn ConnectionHandler> {
            Arc::new(EchoHandler {
                session: Arc::downgrade(session),
            })
        }
    }

    /// Every idle WebSocket connection holds one `serve` task. Its future must stay within
    /// 384 bytes, so that tokio's task cell (header, future, trailer; 128-byte aligned) is
    /// 512 bytes, not 640 (bench/PROFILE.md: what an idle connection costs). Anything large
    /// or rare that the loop holds across its idle wait belongs in a box.
    #[tokio::test]
    async fn the_idle_task_stays_in_its_size_class() {
        let engine = Engine::new(&crate::config::Config::default(), Arc::new(Echo));
        let session = Session::detached("sid", TransportKind::Websocket);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        let (_client, server) = (client.unwrap(), accepted.unwrap().0);
        let ws = WsConn::new(server, &[], 1024);
        let task = serve(engine, session, ws);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 384,
            "the idle WebSocket task's future is {size} bytes"
        );
    }
}
