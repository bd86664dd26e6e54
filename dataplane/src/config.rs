//! Hub configuration: the one schema shared by the binary, its config file and the operator.
//!
//! Field names follow the Node `socket.io` server options where one exists (`pingInterval`,
//! `maxHttpBufferSize`, `connectTimeout`, ...) so users can carry their settings over. All
//! durations are milliseconds.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration:{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Invalid(Vec<FieldError>),
}

/// One invalid field, named by its path in the file (e.g. `engine.pingInterval`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

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

impl Config {
    /// Reads a configuration file: YAML (`.yaml`, `.yml`), TOML (`.toml`) or JSON (`.json`).
    /// Fields left out keep their defaults; unknown fields are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        Self::parse(&text, ext).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses configuration text in the format named by `format` (`yaml`, `toml`, `json`).
    pub fn parse(text: &str, format: &str) -> Result<Config, String> {
        match format {
            "toml" => toml::from_str(text).map_err(|e| e.to_string()),
            "json" => serde_json::from_str(text).map_err(|e| e.to_string()),
            "yaml" | "yml" | "" => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
            other => Err(format!(
                "unknown configuration format {other:?} (use .yaml, .toml or .json)"
            )),
        }
    }

    /// Checks cross-field rules; every bad field is reported, named by its path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, reason: &str| {
            errors.push(FieldError {
                field: field.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.node_id.is_empty() || self.node_id.len() > 253 {
            bad("nodeId", "must be 1 to 253 characters");
        }
        if self.node_id.chars().any(char::is_whitespace) {
            bad("nodeId", "must not contain whitespace");
        }
        let e = &self.engine;
        if !e.path.starts_with('/') || !e.path.ends_with('/') {
            bad("engine.path", "must start and end with /");
        }
        if e.transports.is_empty() {
            bad("engine.transports", "at least one transport is needed");
        }
        if e.transports
            .iter()
            .enumerate()
            .any(|(i, t)| e.transports[..i].contains(t))
        {
            bad("engine.transports", "lists a transport twice");
        }
        for (field, value) in [
            ("engine.pingInterval", e.ping_interval),
            ("engine.pingTimeout", e.ping_timeout),
            ("engine.upgradeTimeout", e.upgrade_timeout),
            ("socketio.connectTimeout", self.socketio.connect_timeout),
            ("socketio.ackTimeout", self.socketio.ack_timeout),
        ] {
            if value == 0 || value > 3_600_000 {
                bad(field, "must be between 1 and 3600000 milliseconds");
            }
        }
        if e.max_http_buffer_size == 0 || e.max_http_buffer_size > 256 * 1024 * 1024 {
            bad(
                "engine.maxHttpBufferSize",
                "must be between 1 byte and 256 MiB",
            );
        }
        if self.socketio.namespaces.is_empty() {
            bad(
                "socketio.namespaces",
                "at least one namespace or pattern is needed",
            );
        }
        for ns in &self.socketio.namespaces {
            if !(ns.starts_with('/') || ns.starts_with('*')) || ns.contains(',') {
                bad(
                    "socketio.namespaces",
                    "each entry must start with / (or be a * pattern) and contain no comma",
                );
                break;
            }
        }
        let l = &self.limits;
        for (field, value) in [
            ("limits.maxConnections", l.max_connections),
            (
                "limits.maxNamespacesPerSession",
                l.max_namespaces_per_session,
            ),
            ("limits.maxOutboundFrames", l.max_outbound_frames),
            ("limits.maxOutboundBytes", l.max_outbound_bytes),
            ("limits.maxPendingAcks", l.max_pending_acks),
            ("limits.maxRoomsPerSocket", l.max_rooms_per_socket),
        ] {
            if value == 0 {
                bad(field, "must be at least 1");
            }
        }
        if l.max_outbound_bytes < e.max_http_buffer_size {
            bad(
                "limits.maxOutboundBytes",
                "must be at least engine.maxHttpBufferSize so any accepted message can be sent on",
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn yaml_toml_and_json_agree() {
        let yaml = "nodeId: hub-0\nengine:\n  pingInterval: 1000\n  transports: [websocket]\n";
        let toml =
            "nodeId = \"hub-0\"\n[engine]\npingInterval = 1000\ntransports = [\"websocket\"]\n";
        let json =
            r#"{"nodeId":"hub-0","engine":{"pingInterval":1000,"transports":["websocket"]}}"#;
        let a = Config::parse(yaml, "yaml").unwrap();
        let b = Config::parse(toml, "toml").unwrap();
        let c = Config::parse(json, "json").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.engine.ping_interval, 1000);
        assert_eq!(a.engine.transports, vec![TransportKind::Websocket]);
        assert_eq!(a.engine.ping_timeout, 20_000, "unset fields keep defaults");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::parse("engine:\n  pingIntervall: 5\n", "yaml").unwrap_err();
        assert!(err.contains("pingIntervall"), "{err}");
    }

    #[test]
    fn validation_names_every_bad_field() {
        let mut config = Config::default();
        config.engine.path = "socket".into();
        config.engine.ping_interval = 0;
        config.limits.max_connections = 0;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "engine.path",
                "engine.pingInterval",
                "limits.maxConnections"
            ]
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = Config::default();
        let text = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(Config::parse(&text, "yaml").unwrap(), config);
    }
}
