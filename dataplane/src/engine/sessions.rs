//! The [`Engine`]: one node's Engine.IO server, i.e. its session table, its settings and
//! where it is in its life (warming up, serving, draining).
//!
//! The HTTP entry point ([`Engine::handle`]) is in `router`, on top of the transports; this
//! module sits below them, so that they can create and find sessions. Sessions reach the
//! table back through `SessionHost`, which the engine implements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use parking_lot::{Mutex, RwLock};

use super::forward::proxy::Forwarder;
use super::forward::route::{decide, is_forwarded, Route, SessionRouter};
use super::heartbeat::Heartbeats;
use super::iplimit::PerIp;
use super::outbox::OutboxLimits;
use super::session::{ConnectionFactory, Session, SessionHost};
use super::settings::{Coalescing, EngineSettings};
use super::sid::SidGenerator;
use super::stats::EngineStats;
use super::{CloseReason, HandshakeInfo};
use crate::config::{Config, TransportKind};

/// The Engine.IO server: the session table plus settings.
pub struct Engine {
    pub settings: EngineSettings,
    heartbeats: Arc<Heartbeats>,
    pub stats: Arc<EngineStats>,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    factory: Arc<dyn ConnectionFactory>,
    sids: SidGenerator,
    /// This node's member id, as its session ids name it.
    node_id: String,
    /// Where other members' sessions are served; unset on a single node.
    router: OnceLock<Arc<dyn SessionRouter>>,
    /// Forwards requests for other members' sessions (and keeps idle connections to them).
    pub(super) forwarder: Forwarder,
    /// Where the node is in its life: one of the `PHASE_*` values (see `leave_readiness`
    /// and `close_for_shutdown`).
    phase: AtomicU8,
    /// Not ready yet: a cluster member still connecting to the others.
    warming: AtomicBool,
    /// Open sessions per client address (`limits.maxConnectionsPerIp`), changed only under
    /// the `sessions` write lock; empty when the limit is off.
    per_ip: Mutex<PerIp>,
}

const PHASE_SERVING: u8 = 0;
const PHASE_NOT_READY: u8 = 1;
const PHASE_CLOSING: u8 = 2;

/// Why a new session was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.maxConnections` sessions are open.
    AtLimit,
    /// The node is shutting down; the client should reconnect elsewhere.
    Closing,
    /// `limits.maxConnectionsPerIp` sessions are open from the client's address.
    PerIpLimit,
    /// No application instance can take the session (app links).
    NoApplication,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AtLimit => "Server at its connection limit",
            Refusal::Closing => "Server shutting down",
            Refusal::PerIpLimit => "Too many connections from this address",
            Refusal::NoApplication => "No application instance available",
        }
    }

    /// The HTTP status of the refused handshake.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::AtLimit | Refusal::Closing | Refusal::NoApplication => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::PerIpLimit => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl Engine {
    pub fn new(config: &Config, factory: Arc<dyn ConnectionFactory>) -> Arc<Self> {
        let settings = EngineSettings::from_config(config);
        let stats: Arc<EngineStats> = Default::default();
        Arc::new(Self {
            heartbeats: Heartbeats::new(settings.ping_interval, settings.ping_timeout),
            forwarder: Forwarder::new(&settings, &config.node_id, stats.clone()),
            settings,
            stats,
            sessions: RwLock::new(HashMap::new()),
            factory,
            sids: SidGenerator::new(&config.node_id),
            node_id: config.node_id.clone(),
            router: OnceLock::new(),
            phase: AtomicU8::new(PHASE_SERVING),
            warming: AtomicBool::new(false),
            per_ip: Mutex::new(PerIp::default()),
        })
    }

    /// Whether this node wants new clients (`/readyz`): false while it warms up (see
    /// [`Engine::set_warming`]) and from the start of a drain.
    pub fn is_ready(&self) -> bool {
        self.phase.load(Ordering::Acquire) == PHASE_SERVING && !self.warming.load(Ordering::Acquire)
    }

    /// Whether this node is still warming up (a cluster member that cannot reach every
    /// other member yet). It serves the clients that come all the same.
    pub fn is_warming(&self) -> bool {
        self.warming.load(Ordering::Acquire)
    }

    /// Marks the node as warming up (not ready) or done with it.
    pub fn set_warming(&self, warming: bool) {
        self.warming.store(warming, Ordering::Release);
    }

    /// First step of a drain: leave readiness but keep serving, new clients included.
    pub fn leave_readiness(&self) {
        let _ = self.phase.compare_exchange(
            PHASE_SERVING,
            PHASE_NOT_READY,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Second step of a drain: refuse new sessions and close every open one (clients see a
    /// transport close and reconnect, through the load balancer, to another node).
    pub fn close_for_shutdown(&self) {
        self.phase.store(PHASE_CLOSING, Ordering::Release);
        self.close_all(CloseReason::ServerShutdown);
    }

    /// Forwards requests for other members' sessions along `router`; false if a router
    /// was already set.
    pub fn set_router(&self, router: Arc<dyn SessionRouter>) -> bool {
        self.router.set(router).is_ok()
    }

    /// Where the requests of session `sid` are served.
    pub(super) fn route(&self, sid: &str, headers: &HeaderMap) -> Route {
        let router = self.router.get().map(|r| r.as_ref());
        decide(sid, &self.node_id, is_forwarded(headers), router)
    }

    /// Open sessions on this node.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// Sessions not closed yet: those a drain waits for. A closed polling session may linger
    /// (up to the ping timeout) until its client's next poll collects the close packet; a
    /// client that is gone never collects it.
    pub fn open_session_count(&self) -> usize {
        self.sessions
            .read()
            .values()
            .filter(|s| !s.is_closed())
            .count()
    }

    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(sid).cloned()
    }

    /// Creates and registers a session, unless at the connection limit or shutting down.
    pub(super) fn create_session(
        self: &Arc<Self>,
        transport: TransportKind,
        handshake: HandshakeInfo,
    ) -> Result<Arc<Session>, Refusal> {
        if !self.factory.accepting() {
            return Err(Refusal::NoApplication);
        }
        let session = {
            let mut sessions = self.sessions.write();
            // Checked under the lock `close_for_shutdown` sweeps after, so no session
            // slips in behind the sweep.
            if self.phase.load(Ordering::Acquire) == PHASE_CLOSING {
                return Err(Refusal::Closing);
            }
            if sessions.len() >= self.settings.max_connections {
                return Err(Refusal::AtLimit);
            }
            let per_ip = self.settings.max_connections_per_ip;
            let ip = handshake.address.ip();
            if per_ip > 0 && !self.per_ip.lock().admits(ip, per_ip) {
                return Err(Refusal::PerIpLimit);
            }
            let sid: Arc<str> = Arc::from(self.sids.session_id());
            if per_ip > 0 {
                self.per_ip.lock().add(sid.clone(), ip);
            }
            let host: Weak<dyn SessionHost> = Arc::downgrade(self) as Weak<dyn SessionHost>;
            let session = Session::new(sid.clone(), transport, host);
            sessions.insert(sid, session.clone());
            self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
            session
        };
        let handler = self.factory.open(&session, handshake);
        session.attach_handler(handler);
        self.heartbeats.schedule(&session);
        Ok(session)
    }

    pub(super) fn remove_session(&self, sid: &str) {
        let mut sessions = self.sessions.write();
        if sessions.remove(sid).is_some() {
            if self.settings.max_connections_per_ip > 0 {
                self.per_ip.lock().remove(sid);
            }
            self.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `0` open packet for a new session.
    pub(super) fn open_packet(&self, session: &Session, transport: TransportKind) -> String {
        let upgrades: &[&str] = if transport == TransportKind::Polling
            && self.settings.allow_upgrades
            && self.settings.allows(TransportKind::Websocket)
        {
            &["websocket"]
        } else {
            &[]
        };
        let open = Open {
            sid: &session.sid,
            upgrades,
            ping_interval: millis(self.settings.ping_interval),
            ping_timeout: millis(self.settings.ping_timeout),
            max_payload: self.settings.max_payload,
        };
        // Serialized straight from the struct into one buffer of the usual size: no JSON
        // tree and no second allocation per handshake.
        let mut out = Vec::with_capacity(OPEN_PACKET_CAPACITY);
        out.push(b'0');
        if serde_json::to_writer(&mut out, &open).is_err() {
            out.truncate(1);
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Closes every session (graceful shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<Arc<Session>> = self.sessions.read().values().cloned().collect();
        for session in sessions {
            session.close(reason);
        }
    }
}

/// Room for an open packet: `0{"sid":"<20 chars>","upgrades":["websocket"],"pingInterval":
/// 25000,"pingTimeout":20000,"maxPayload":1000000}` is 111 bytes.
const OPEN_PACKET_CAPACITY: usize = 128;

/// The open packet's JSON, in the reference server's order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Open<'a> {
    sid: &'a str,
    upgrades: &'a [&'a str],
    ping_interval: u64,
    ping_timeout: u64,
    max_payload: usize,
}

/// A duration in whole milliseconds (settings come from `u64` milliseconds, so it fits).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SessionHost for Engine {
    fn outbox_limits(&self) -> OutboxLimits {
        self.settings.outbox
    }

    fn linger(&self) -> Duration {
        self.settings.ping_timeout
    }

    fn coalescing(&self) -> Coalescing {
        self.settings.write_coalescing
    }

    fn pong_received(&self, sid: &str) {
        if let Some(session) = self.session(sid) {
            self.heartbeats.schedule(&session);
        }
    }

    fn remove(&self, sid: &str) {
        self.remove_session(sid);
    }

    fn stats(&self) -> &EngineStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_packet_is_the_reference_servers() {
        let mut config = Config::default();
        config.engine.ping_interval = 25_000;
        config.engine.ping_timeout = 20_000;
        config.engine.max_http_buffer_size = 1_000_000;
        struct None_;
        impl ConnectionFactory for None_ {
            fn open(
                &self,
                _: &Arc<Session>,
                _: HandshakeInfo,
            ) -> Arc<dyn super::super::ConnectionHandler> {
                unreachable!("no session is opened")
            }
        }
        let engine = Engine::new(&config, Arc::new(None_));
        let session = Session::detached("abc", TransportKind::Polling);
        assert_eq!(
            engine.open_packet(&session, TransportKind::Polling),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        assert_eq!(
            engine.open_packet(&session, TransportKind::Websocket),
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }
}
