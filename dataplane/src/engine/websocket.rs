//! The WebSocket transport: direct WebSocket sessions and upgrades from polling.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::http::{Body, EngineError, Responder};
use super::outbox::Frame;
use super::packet::Packet;
use super::session::{CloseReason, Session};
use super::{Engine, HandshakeInfo};
use crate::config::TransportKind;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Small initial read buffer: most sessions are idle, and the buffer grows on demand.
const READ_BUFFER: usize = 1024;

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
                    StatusCode::SERVICE_UNAVAILABLE,
                    EngineError::Forbidden.code(),
                    refusal.message(),
                )
            }
        },
        (None, None) => return responder.error(EngineError::BadRequest),
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                if let Mode::Fresh(session) = mode {
                    session.close(CloseReason::TransportError);
                }
                return;
            }
        };
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = READ_BUFFER;
        // Frames fed between two flushes are coalesced into one write up to this size.
        config.write_buffer_size = 16 * 1024;
        config.max_message_size = Some(engine.settings.max_payload);
        config.max_frame_size = Some(engine.settings.max_payload);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
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

async fn run_fresh(engine: Arc<Engine>, session: Arc<Session>, mut ws: Ws) {
    let open = engine.open_packet(&session, TransportKind::Websocket);
    if ws.send(Message::Text(open.into())).await.is_err() {
        session.close(CloseReason::TransportError);
        return;
    }
    // The long-lived loop gets a task of its own, sized for its idle state only; this task
    // (the handshake) ends here.
    tokio::spawn(serve(engine, session, ws));
}

/// The upgrade dance: `2probe` → `3probe`, then `5` switches the session to this socket.
async fn run_upgrade(engine: Arc<Engine>, session: Arc<Session>, mut ws: Ws) {
    let allowed = {
        let mut t = session.transport.lock();
        let allowed = !t.upgrading && t.transport == TransportKind::Polling;
        t.upgrading |= allowed;
        allowed
    };
    if !allowed {
        // Only one upgrade per session; a second WebSocket for the same sid is refused.
        let _ = ws.close(None).await;
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
        // The long-lived loop gets a task of its own, sized for its idle state only; this
        // task (handshake or upgrade state) ends here.
        tokio::spawn(serve(engine, session, ws));
    } else {
        let _ = ws.close(None).await;
    }
}

/// Waits for `2probe` (answered `3probe`) then `5`; false on anything else or timeout.
async fn probe(engine: &Engine, session: &Session, ws: &mut Ws) -> bool {
    let deadline = tokio::time::sleep(engine.settings.upgrade_timeout);
    tokio::pin!(deadline);
    let mut probed = false;
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = &mut deadline => return false,
            _ = session.wait_closed() => return false,
        };
        let Some(Ok(Message::Text(text))) = msg else {
            if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
                continue;
            }
            return false;
        };
        match Packet::decode_text(Bytes::from(text)) {
            Ok(Packet::Ping(data)) if &data[..] == b"probe" && !probed => {
                probed = true;
                if ws
                    .send(Message::Text(Utf8Bytes::from_static("3probe")))
                    .await
                    .is_err()
                {
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

/// Main loop: writes queued frames in batches (one flush per batch) and reads packets.
async fn serve(engine: Arc<Engine>, session: Arc<Session>, mut ws: Ws) {
    let mut batch: Vec<Frame> = Vec::new();
    let reason = loop {
        let more = session.outbox.drain_into(&mut batch);
        if !batch.is_empty() {
            engine
                .stats
                .frames_sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let closing = session.outbox.is_closed();
            // Boxed: a write in progress is transient; the idle task stays small.
            let write = Box::pin(write_batch(&session, &mut ws, &mut batch, closing));
            if let Err(reason) = write.await {
                break reason;
            }
        }
        if more {
            continue;
        }
        if session.outbox.is_closed() {
            let _ = ws.close(None).await;
            return;
        }
        tokio::select! {
            biased;
            _ = session.outbox.ready() => {}
            msg = ws.next() => match msg.inspect(|_| {
                engine.stats.packets_received.fetch_add(1, Ordering::Relaxed);
            }) {
                Some(Ok(Message::Text(text))) => match Packet::decode_text(Bytes::from(text)) {
                    Ok(packet) => session.on_packet(packet),
                    Err(error) => {
                        tracing::debug!(sid = %session.sid, %error, "malformed websocket packet");
                        break CloseReason::ParseError;
                    }
                },
                Some(Ok(Message::Binary(data))) => session.on_packet(Packet::Binary(data)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => break CloseReason::TransportClose,
                Some(Err(error)) => {
                    tracing::debug!(sid = %session.sid, %error, "websocket error");
                    break CloseReason::TransportError;
                }
            },
        }
    };
    session.close(reason);
    let _ = ws.close(None).await;
}

/// Feeds a batch of frames and flushes once; gives up if the session closes meanwhile
/// (a slow consumer must not pin the task on a full socket).
async fn write_batch(
    session: &Session,
    ws: &mut Ws,
    batch: &mut Vec<Frame>,
    closing: bool,
) -> Result<(), CloseReason> {
    let write = async {
        for frame in batch.drain(..) {
            let msg = match frame {
                // The close packet is for polling; on WebSocket the close frame says it.
                Frame::Text(text) if closing && text.as_str() == "1" => continue,
                Frame::Text(text) => Message::Text(text),
                Frame::Binary(data) => Message::Binary(data),
            };
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    let result = if closing {
        write.await.map_err(|_| CloseReason::TransportError)
    } else {
        tokio::select! {
            r = write => r.map_err(|_| CloseReason::TransportError),
            _ = session.wait_closed() => Ok(()),
        }
    };
    batch.clear();
    if batch.capacity() > 256 {
        batch.shrink_to(16);
    }
    result
}
