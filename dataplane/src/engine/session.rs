//! One Engine.IO session: its transport state, outbound queue and heartbeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::outbox::{Frame, Outbox, OutboxLimits, PushOutcome};
use super::packet::Packet;
use super::{ConnectionHandler, Engine};
use crate::config::TransportKind;

/// Why a session ended. The strings are the Socket.IO disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a close packet.
    TransportClose,
    /// The connection failed (I/O error, protocol violation on the wire).
    TransportError,
    PingTimeout,
    /// The client sent a packet that could not be decoded.
    ParseError,
    /// The server closed the session (e.g. `disconnect(true)`).
    ForcedClose,
    /// The client could not keep up with its outbound queue.
    SlowConsumer,
    /// The session never joined a namespace within `connectTimeout`.
    ConnectTimeout,
    ServerShutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }
}

/// Which transport carries the session and whose turn it is to use it.
#[derive(Debug)]
pub(super) struct TransportState {
    pub transport: TransportKind,
    /// A WebSocket probe succeeded and the upgrade is in progress.
    pub upgrading: bool,
    /// A polling GET is waiting for frames.
    pub get_active: bool,
    /// A polling POST is being processed.
    pub post_active: bool,
}

pub struct Session {
    pub sid: Arc<str>,
    pub outbox: Outbox,
    pub(super) transport: Mutex<TransportState>,
    /// When an unanswered ping times out; `None` while no ping is outstanding.
    pong_deadline: Mutex<Option<Instant>>,
    /// Woken once when the session closes, for tasks blocked on I/O.
    pub(super) closed_notify: Notify,
    closed: AtomicBool,
    handler: OnceLock<Arc<dyn ConnectionHandler>>,
    engine: Weak<Engine>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish()
    }
}

impl Session {
    pub(super) fn new(sid: Arc<str>, transport: TransportKind, engine: Weak<Engine>) -> Arc<Self> {
        Arc::new(Self {
            sid,
            outbox: Outbox::default(),
            transport: Mutex::new(TransportState {
                transport,
                upgrading: false,
                get_active: false,
                post_active: false,
            }),
            pong_deadline: Mutex::new(None),
            closed_notify: Notify::new(),
            closed: AtomicBool::new(false),
            handler: OnceLock::new(),
            engine,
        })
    }

    pub(super) fn attach_handler(&self, handler: Arc<dyn ConnectionHandler>) {
        let _ = self.handler.set(handler);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn transport(&self) -> TransportKind {
        self.transport.lock().transport
    }

    fn limits(&self) -> OutboxLimits {
        self.engine
            .upgrade()
            .map(|e| e.settings.outbox)
            .unwrap_or(OutboxLimits {
                max_frames: 0,
                max_bytes: 0,
            })
    }

    /// Queues the frames of one packet. A non-volatile packet that does not fit closes the
    /// session as a slow consumer; a volatile one is silently dropped.
    pub fn send(self: &Arc<Self>, frames: &[Frame], volatile: bool) -> PushOutcome {
        let limits = self.limits();
        let outcome = self.push(frames, volatile, limits);
        if outcome == PushOutcome::Overflow {
            tracing::warn!(sid = %self.sid, max_frames = limits.max_frames, max_bytes = limits.max_bytes,
                "closing slow consumer: outbound queue full");
            self.close(CloseReason::SlowConsumer);
        }
        outcome
    }

    /// Queues or writes the frames of one packet, leaving an overflow to the caller (a
    /// broadcast loop closes slow consumers after it releases its locks). Inside a
    /// write-combining scope (`cork`), the write waits for the end of the scope.
    pub fn push(
        self: &Arc<Self>,
        frames: &[Frame],
        volatile: bool,
        limits: OutboxLimits,
    ) -> PushOutcome {
        if !super::cork::is_active() {
            return self.outbox.push(frames, volatile, limits);
        }
        let (outcome, first) = self.outbox.push_deferred(frames, volatile, limits);
        if first {
            super::cork::defer(self.clone());
        }
        outcome
    }

    /// Handles one decoded packet from whichever transport carries the session.
    pub(super) fn on_packet(&self, packet: Packet) {
        match packet {
            Packet::Pong(_) => {
                // Only a pong that answers an outstanding ping schedules the next one.
                if self.pong_deadline.lock().take().is_some() {
                    if let Some(engine) = self.engine.upgrade() {
                        if let Some(me) = engine.session(&self.sid) {
                            engine.heartbeats.schedule(&me);
                        }
                    }
                }
            }
            Packet::Message(text) => {
                if let Some(h) = self.handler.get() {
                    h.on_message(text);
                }
            }
            Packet::Binary(data) => {
                if let Some(h) = self.handler.get() {
                    h.on_binary(data);
                }
            }
            Packet::Close => self.close(CloseReason::TransportClose),
            // Pings come from the server in v4; upgrade and noop only matter during an
            // upgrade, handled by the WebSocket transport; a client never sends open.
            Packet::Ping(_) | Packet::Upgrade | Packet::Noop | Packet::Open(_) => {}
        }
    }

    /// Closes the session once: unregisters it, tells the upper layer, and lets the
    /// transport flush what is queued (a pending poll receives the close packet).
    pub fn close(&self, reason: CloseReason) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "session closed");
        if let Some(engine) = self.engine.upgrade() {
            // A server-side close of a polling session with no GET waiting stays findable
            // until the client's next poll collects the close packet (as in the reference
            // server); otherwise that poll would get "unknown sid" and the client would see a
            // transport error instead of a close. A timer removes it if no poll comes.
            let server_side = matches!(
                reason,
                CloseReason::ForcedClose
                    | CloseReason::ConnectTimeout
                    | CloseReason::SlowConsumer
                    | CloseReason::ServerShutdown
            );
            let linger = server_side && {
                let t = self.transport.lock();
                t.transport == TransportKind::Polling && !t.get_active
            };
            if linger {
                let (weak, sid) = (self.engine.clone(), self.sid.clone());
                let grace = engine.settings.ping_timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let Some(engine) = weak.upgrade() {
                        engine.remove_session(&sid);
                    }
                });
            } else {
                engine.remove_session(&self.sid);
            }
            if reason == CloseReason::SlowConsumer {
                engine.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(h) = self.handler.get() {
            h.on_close(reason);
        }
        // A pending poll learns of a server-side close from the close packet; when the client
        // closed, it is released with a noop, as by the reference server.
        let last = if reason == CloseReason::TransportClose {
            Frame::NOOP
        } else {
            Frame::CLOSE
        };
        self.outbox.push_control(last);
        self.outbox.close();
        self.closed_notify.notify_waiters();
    }

    pub(super) fn set_pong_deadline(&self, deadline: Option<Instant>) {
        *self.pong_deadline.lock() = deadline;
    }

    /// Closes the session if its ping went unanswered past the deadline (checked on each
    /// request too, so the answer never depends on when the heartbeat timer fires).
    pub(super) fn close_if_ping_overdue(&self) -> bool {
        self.close_if_ping_overdue_at(Instant::now())
    }

    pub(super) fn close_if_ping_overdue_at(&self, now: Instant) -> bool {
        let overdue = self.pong_deadline.lock().is_some_and(|d| now >= d);
        if overdue {
            self.close(CloseReason::PingTimeout);
        }
        overdue
    }

    /// Resolves when the session is closed.
    pub(super) async fn wait_closed(&self) {
        let notified = self.closed_notify.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }
}

/// Resets a transport flag when a request ends, however it ends.
pub(super) struct FlagGuard<'a> {
    pub session: &'a Session,
    pub get: bool,
}

impl Drop for FlagGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.session.transport.lock();
        if self.get {
            t.get_active = false;
        } else {
            t.post_active = false;
        }
    }
}

/// Upper layer for tests and for the engine conformance server: echoes every message.
pub struct EchoHandler {
    pub session: Weak<Session>,
}

impl ConnectionHandler for EchoHandler {
    fn on_message(&self, text: Bytes) {
        if let Some(s) = self.session.upgrade() {
            let mut out = String::with_capacity(text.len() + 1);
            out.push('4');
            out.push_str(&String::from_utf8_lossy(&text));
            s.send(&[Frame::from(out)], false);
        }
    }

    fn on_binary(&self, data: Bytes) {
        if let Some(s) = self.session.upgrade() {
            s.send(&[Frame::Binary(data)], false);
        }
    }

    fn on_close(&self, _reason: CloseReason) {}
}
