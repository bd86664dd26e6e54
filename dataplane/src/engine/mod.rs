//! Engine.IO v4: sessions, the polling and WebSocket transports, upgrades and heartbeats.
//!
//! The engine knows nothing of Socket.IO: it hands each session's messages to a
//! [`ConnectionHandler`] created by a [`ConnectionFactory`] at handshake time.

pub mod cork;
pub mod forward;
mod heartbeat;
pub mod http;
pub mod outbox;
pub mod packet;
mod polling;
pub mod session;
pub mod sid;
mod websocket;
mod wsconn;
pub mod wsframe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::config::{Config, TransportKind};
pub use forward::{Route, SessionRouter};
pub use outbox::{Frame, OutboxLimits, PushOutcome};
pub use session::{CloseReason, Session};

/// What the engine knows of the HTTP request that opened a session.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    pub headers: ::http::HeaderMap,
    pub query: String,
    pub address: SocketAddr,
    pub url: String,
    pub time: std::time::SystemTime,
    pub secure: bool,
}

/// The layer above the engine (Socket.IO) for one session.
pub trait ConnectionHandler: Send + Sync {
    /// A text message (the data of an Engine.IO `4` packet), valid UTF-8.
    fn on_message(&self, text: Bytes);
    /// A binary message.
    fn on_binary(&self, data: Bytes);
    /// The session closed; called exactly once.
    fn on_close(&self, reason: CloseReason);
}

/// Creates the upper-layer handler of each new session.
pub trait ConnectionFactory: Send + Sync {
    fn open(&self, session: &Arc<Session>, handshake: HandshakeInfo) -> Arc<dyn ConnectionHandler>;
}

/// Engine settings resolved from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub path: String,
    pub transports: Vec<TransportKind>,
    pub allow_upgrades: bool,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    pub max_payload: usize,
    pub max_connections: usize,
    pub outbox: OutboxLimits,
    pub cors_origins: Vec<String>,
    pub cors_credentials: bool,
}

impl EngineSettings {
    pub fn from_config(config: &Config) -> Self {
        let e = &config.engine;
        Self {
            path: e.path.clone(),
            transports: e.transports.clone(),
            allow_upgrades: e.allow_upgrades,
            ping_interval: Duration::from_millis(e.ping_interval),
            ping_timeout: Duration::from_millis(e.ping_timeout),
            upgrade_timeout: Duration::from_millis(e.upgrade_timeout),
            max_payload: e.max_http_buffer_size,
            max_connections: config.limits.max_connections,
            outbox: OutboxLimits {
                max_frames: config.limits.max_outbound_frames,
                max_bytes: config.limits.max_outbound_bytes,
            },
            cors_origins: e.cors.origin.clone(),
            cors_credentials: e.cors.credentials,
        }
    }

    fn allows(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}

/// The Engine.IO server: the session table plus settings.
pub struct Engine {
    pub settings: EngineSettings,
    heartbeats: Arc<heartbeat::Heartbeats>,
    pub stats: Arc<crate::metrics::EngineStats>,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    factory: Arc<dyn ConnectionFactory>,
    sids: sid::SidGenerator,
    /// This node's member id, as its session ids name it.
    node_id: String,
    /// Where other members' sessions are served; unset on a single node.
    router: OnceLock<Arc<dyn SessionRouter>>,
    /// Idle connections to other members, for forwarded polling requests.
    owners: forward::OwnerConnections,
    /// Where the node is in its life: one of the `PHASE_*` values (see `leave_readiness`
    /// and `close_for_shutdown`).
    phase: AtomicU8,
    /// Not ready yet: a cluster member still connecting to the others.
    warming: AtomicBool,
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
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AtLimit => "Server at its connection limit",
            Refusal::Closing => "Server shutting down",
        }
    }
}

impl Engine {
    pub fn new(config: &Config, factory: Arc<dyn ConnectionFactory>) -> Arc<Self> {
        Arc::new(Self {
            settings: EngineSettings::from_config(config),
            heartbeats: heartbeat::Heartbeats::new(
                Duration::from_millis(config.engine.ping_interval),
                Duration::from_millis(config.engine.ping_timeout),
            ),
            stats: Default::default(),
            sessions: RwLock::new(HashMap::new()),
            factory,
            sids: sid::SidGenerator::new(&config.node_id),
            node_id: config.node_id.clone(),
            router: OnceLock::new(),
            owners: Default::default(),
            phase: AtomicU8::new(PHASE_SERVING),
            warming: AtomicBool::new(false),
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

    /// Open sessions on this node.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(sid).cloned()
    }

    /// Creates and registers a session, unless at the connection limit or shutting down.
    fn create_session(
        self: &Arc<Self>,
        transport: TransportKind,
        handshake: HandshakeInfo,
    ) -> Result<Arc<Session>, Refusal> {
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
            let sid: Arc<str> = Arc::from(self.sids.session_id());
            let session = Session::new(sid.clone(), transport, Arc::downgrade(self));
            sessions.insert(sid, session.clone());
            self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
            session
        };
        let handler = self.factory.open(&session, handshake);
        session.attach_handler(handler);
        self.heartbeats.schedule(&session);
        Ok(session)
    }

    fn remove_session(&self, sid: &str) {
        if self.sessions.write().remove(sid).is_some() {
            self.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `0` open packet for a new session.
    fn open_packet(&self, session: &Session, transport: TransportKind) -> String {
        let upgrades: &[&str] = if transport == TransportKind::Polling
            && self.settings.allow_upgrades
            && self.settings.allows(TransportKind::Websocket)
        {
            &["websocket"]
        } else {
            &[]
        };
        let open = serde_json::json!({
            "sid": &*session.sid,
            "upgrades": upgrades,
            "pingInterval": self.settings.ping_interval.as_millis() as u64,
            "pingTimeout": self.settings.ping_timeout.as_millis() as u64,
            "maxPayload": self.settings.max_payload,
        });
        format!("0{open}")
    }

    /// Closes every session (graceful shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<Arc<Session>> = self.sessions.read().values().cloned().collect();
        for session in sessions {
            session.close(reason);
        }
    }
}
