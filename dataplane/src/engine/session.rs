//! One Engine.IO session: its transport state, outbound queue and heartbeat.
//!
//! A session does not know the `Engine` (in `sessions`) that holds it: it
//! reaches its table through the narrow `SessionHost` trait, which the engine implements,
//! so that the session table can hold sessions without the two modules depending on each
//! other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::cork::{self, Flush};
use super::outbox::{Frame, Outbox, OutboxLimits, PushOutcome};
use super::packet::Packet;
use super::settings::Coalescing;
use super::stats::EngineStats;
use super::{CloseReason, ConnectionHandler, HandshakeInfo};
use crate::config::TransportKind;

/// Creates the upper-layer handler of each new session.
pub trait ConnectionFactory: Send + Sync {
    fn open(&self, session: &Arc<Session>, handshake: HandshakeInfo) -> Arc<dyn ConnectionHandler>;
    /// Whether a new session could be served now; false refuses the handshake (503) before
    /// a session exists (app links: no application instance is linked).
    fn accepting(&self) -> bool {
        true
    }
}

/// What a session needs of the table that holds it (the engine).
pub(super) trait SessionHost: Send + Sync {
    /// The limits of every session's outbound queue.
    fn outbox_limits(&self) -> OutboxLimits;
    /// How long a closed polling session stays findable for its last poll.
    fn linger(&self) -> Duration;
    /// When and how long a write may wait under fan-out load (`coalesce`).
    fn coalescing(&self) -> Coalescing;
    /// The session answered its ping: schedule its next one.
    fn pong_received(&self, sid: &str);
    /// Takes the session out of the table.
    fn remove(&self, sid: &str);
    /// The counters the session bumps.
    fn stats(&self) -> &EngineStats;
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
    host: Weak<dyn SessionHost>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish()
    }
}

impl Session {
    pub(super) fn new(
        sid: Arc<str>,
        transport: TransportKind,
        host: Weak<dyn SessionHost>,
    ) -> Arc<Self> {
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
            host,
        })
    }

    /// A session no engine holds (tests of the parts below the engine).
    #[cfg(test)]
    pub(super) fn detached(sid: &str, transport: TransportKind) -> Arc<Self> {
        Self::new(Arc::from(sid), transport, Weak::<NoHost>::new())
    }

    /// A closed session no client holds: what a socket taken over from another node
    /// points to until its client reconnects (it never sends anything).
    pub fn placeholder() -> Arc<Self> {
        let session = Self::new(
            Arc::from(""),
            TransportKind::Websocket,
            Weak::<NoHost>::new(),
        );
        session.closed.store(true, Ordering::Release);
        session
    }

    pub(super) fn attach_handler(&self, handler: Arc<dyn ConnectionHandler>) {
        let _ = self.handler.set(handler);
    }

    pub(super) fn handler(&self) -> Option<&Arc<dyn ConnectionHandler>> {
        self.handler.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn transport(&self) -> TransportKind {
        self.transport.lock().transport
    }

    fn limits(&self) -> OutboxLimits {
        self.host
            .upgrade()
            .map(|h| h.outbox_limits())
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
        if !cork::is_active() {
            return self.outbox.push(frames, volatile, limits);
        }
        let (outcome, first) = self.outbox.push_deferred(frames, volatile, limits);
        if first {
            cork::defer(self.clone());
        } else {
            cork::pushed();
        }
        outcome
    }

    /// Handles one decoded packet from whichever transport carries the session.
    pub(super) fn on_packet(&self, packet: Packet) {
        match packet {
            Packet::Pong(_) => {
                // Only a pong that answers an outstanding ping schedules the next one.
                if self.pong_deadline.lock().take().is_some() {
                    if let Some(host) = self.host.upgrade() {
                        host.pong_received(&self.sid);
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
        if let Some(host) = self.host.upgrade() {
            // A server-side close of a polling session stays findable until the client's
            // next poll collects the close packet (as in the reference server): with no GET
            // waiting, or with one that is answered with the packets queued before the close
            // (the close packet then goes in the next answer; see `polling::poll`). Otherwise
            // that poll would get "unknown sid" and the client would see a transport error
            // instead of a close. A timer removes it if no poll comes.
            let server_side = matches!(
                reason,
                CloseReason::ForcedClose
                    | CloseReason::ConnectTimeout
                    | CloseReason::SlowConsumer
                    | CloseReason::ServerShutdown
            );
            let linger = server_side && self.transport.lock().transport == TransportKind::Polling;
            if linger {
                let (weak, sid) = (self.host.clone(), self.sid.clone());
                let grace = host.linger();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let Some(host) = weak.upgrade() {
                        host.remove(&sid);
                    }
                });
            } else {
                host.remove(&self.sid);
            }
            if reason == CloseReason::SlowConsumer {
                host.stats().slow_consumers.fetch_add(1, Ordering::Relaxed);
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

    /// The client collected the close packet of a lingering session: it can go now.
    pub(super) fn collected_close(&self) {
        if let Some(host) = self.host.upgrade() {
            host.remove(&self.sid);
        }
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

impl Flush for Session {
    /// Writes what a corked scope queued (see `cork`).
    fn flush(&self) {
        self.outbox.flush_deferred();
    }

    fn coalescing(&self) -> Coalescing {
        self.host
            .upgrade()
            .map_or(Coalescing::OFF, |h| h.coalescing())
    }
}

/// The host of a detached session: never alive, so never called.
struct NoHost(EngineStats);

impl SessionHost for NoHost {
    fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_frames: 0,
            max_bytes: 0,
        }
    }

    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    fn coalescing(&self) -> Coalescing {
        Coalescing::OFF
    }

    fn pong_received(&self, _: &str) {}

    fn remove(&self, _: &str) {}

    fn stats(&self) -> &EngineStats {
        &self.0
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
