//! Hub configuration: the one schema shared by the binary, its config file and the operator.
//!
//! Field names follow the Node `socket.io` server options where one exists (`pingInterval`,
//! `maxHttpBufferSize`, `connectTimeout`, ...) so users can carry their settings over. All
//! durations are milliseconds.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Everything a hub process needs to run. `Config::default()` is the embedded default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Address the Socket.IO endpoint listens on.
    pub listen: SocketAddr,
    /// Stable member id of this hub process (the pod name in Kubernetes). Encoded into every
    /// Engine.IO session id so any pod can tell which pod owns a session.
    pub node_id: String,
    pub engine: EngineConfig,
    pub socketio: SocketIoConfig,
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            node_id: "local".to_string(),
            engine: EngineConfig::default(),
            socketio: SocketIoConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// A transport a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Polling,
    Websocket,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::Websocket => "websocket",
        }
    }
}

/// Engine.IO options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EngineConfig {
    /// HTTP path of the endpoint; always ends with `/`.
    pub path: String,
    /// Transports accepted, in the order given to clients.
    pub transports: Vec<TransportKind>,
    /// Whether a polling session may upgrade to WebSocket.
    pub allow_upgrades: bool,
    /// Interval between server pings.
    pub ping_interval: u64,
    /// How long after a ping the client has to answer before the session is closed.
    pub ping_timeout: u64,
    /// How long an upgrade may take before it is cancelled.
    pub upgrade_timeout: u64,
    /// Largest accepted message or HTTP body, in bytes (`maxPayload` in the handshake).
    pub max_http_buffer_size: usize,
    pub cors: CorsConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io/".to_string(),
            transports: vec![TransportKind::Polling, TransportKind::Websocket],
            allow_upgrades: true,
            ping_interval: 25_000,
            ping_timeout: 20_000,
            upgrade_timeout: 10_000,
            max_http_buffer_size: 1_000_000,
            cors: CorsConfig::default(),
        }
    }
}

/// CORS for the polling transport. An empty `origin` list disables CORS headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins; `"*"` allows any origin (reflected when `credentials` is set).
    pub origin: Vec<String>,
    pub credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origin: vec!["*".to_string()],
            credentials: false,
        }
    }
}

/// Socket.IO options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Namespaces clients may connect to: exact names (`/chat`) or patterns with `*`
    /// matching any run of characters (`/tenant-*`).
    pub namespaces: Vec<String>,
    /// How long a new engine session may stay without joining a namespace.
    pub connect_timeout: u64,
    /// Default timeout for server-to-client acknowledgements.
    pub ack_timeout: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            namespaces: vec!["/".to_string()],
            connect_timeout: 45_000,
            ack_timeout: 10_000,
        }
    }
}

/// Explicit resource limits. Every one is enforced with a clear error, never a panic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open Engine.IO sessions per process; handshakes beyond it get HTTP 503.
    pub max_connections: usize,
    /// Namespaces one engine session may join at once.
    pub max_namespaces_per_session: usize,
    /// Frames queued for one connection; past it volatile frames are dropped, and a
    /// connection still over the limit is disconnected as a slow consumer.
    pub max_outbound_frames: usize,
    /// Bytes queued for one connection; same policy as `maxOutboundFrames`.
    pub max_outbound_bytes: usize,
    /// Server-to-client acknowledgements awaited per socket.
    pub max_pending_acks: usize,
    /// Binary attachments accepted in one packet.
    pub max_attachments: usize,
    /// Rooms one socket may be in.
    pub max_rooms_per_socket: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_namespaces_per_session: 16,
            max_outbound_frames: 1_024,
            max_outbound_bytes: 4 * 1024 * 1024,
            max_pending_acks: 256,
            max_attachments: 16,
            max_rooms_per_socket: 1_024,
        }
    }
}
