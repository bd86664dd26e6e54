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
    /// Client authentication at the handshake.
    pub auth: AuthConfig,
    /// The management REST API the application backend calls.
    pub management: ManagementConfig,
    /// Other nodes of the same hub. Left out: a single node.
    #[serde(skip_serializing_if = "ClusterConfig::is_single_node")]
    pub cluster: ClusterConfig,
    /// What SIGTERM does: leave readiness, close the client sessions, exit.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            node_id: "local".to_string(),
            engine: EngineConfig::default(),
            socketio: SocketIoConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            management: ManagementConfig::default(),
            cluster: ClusterConfig::default(),
            shutdown: ShutdownConfig::default(),
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
        let sd = &self.shutdown;
        if sd.grace_period == 0 || sd.grace_period > 3_600_000 {
            bad(
                "shutdown.gracePeriod",
                "must be between 1 and 3600000 milliseconds",
            );
        }
        if sd.drain_delay >= sd.grace_period {
            bad(
                "shutdown.drainDelay",
                "must be shorter than shutdown.gracePeriod",
            );
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
        for (i, ns) in self.socketio.namespaces.iter().enumerate() {
            let at = |field: &str| format!("socketio.namespaces[{i}]{field}");
            let name = &ns.name;
            if !(name.starts_with('/') || name.starts_with('*')) || name.contains(',') {
                bad(
                    &at(".name"),
                    "must start with / (or be a * pattern) and contain no comma",
                );
            }
            if let Some(up) = &ns.upstream {
                if !(up.url.starts_with("http://") || up.url.starts_with("https://")) {
                    bad(&at(".upstream.url"), "must be an http:// or https:// URL");
                }
                if up
                    .events
                    .iter()
                    .any(|e| !["connect", "event", "disconnect"].contains(&e.as_str()))
                {
                    bad(
                        &at(".upstream.events"),
                        "entries must be connect, event or disconnect",
                    );
                }
                if up.timeout == 0 || up.timeout > 600_000 {
                    bad(
                        &at(".upstream.timeout"),
                        "must be between 1 and 600000 milliseconds",
                    );
                }
                if up.secret.is_some() && up.secret_file.is_some() {
                    bad(&at(".upstream"), "set secret or secretFile, not both");
                }
                if up.disconnect_retries > 10 {
                    bad(&at(".upstream.disconnectRetries"), "must be at most 10");
                }
            }
        }
        if self.auth.mode == AuthMode::Jwt {
            let j = &self.auth.jwt;
            let has_key = j.hs256_secret.is_some()
                || j.hs256_secret_file.is_some()
                || !j.public_keys.is_empty()
                || !j.public_key_files.is_empty()
                || j.jwks_url.is_some();
            if !has_key {
                bad(
                    "auth.jwt",
                    "mode jwt needs hs256Secret(File), publicKeys/publicKeyFiles or jwksUrl",
                );
            }
            if j.hs256_secret.is_some() && j.hs256_secret_file.is_some() {
                bad("auth.jwt", "set hs256Secret or hs256SecretFile, not both");
            }
            if j.algorithms.is_empty()
                || j.algorithms
                    .iter()
                    .any(|a| !["HS256", "RS256", "ES256"].contains(&a.as_str()))
            {
                bad(
                    "auth.jwt.algorithms",
                    "must be a non-empty subset of HS256, RS256, ES256",
                );
            }
            if j.jwks_min_refresh_interval == 0
                || j.jwks_refresh_interval < j.jwks_min_refresh_interval
            {
                bad(
                    "auth.jwt.jwksRefreshInterval",
                    "must be at least jwksMinRefreshInterval, which must be positive",
                );
            }
            if j.jwks_url
                .as_ref()
                .is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                bad("auth.jwt.jwksUrl", "must be an http:// or https:// URL");
            }
            if j.hs256_secret.as_ref().is_some_and(String::is_empty) {
                bad("auth.jwt.hs256Secret", "must not be empty");
            }
            if j.issuer.as_ref().is_some_and(String::is_empty) {
                bad(
                    "auth.jwt.issuer",
                    "must not be empty (leave it out to skip the check)",
                );
            }
            if j.audience.iter().any(String::is_empty) {
                bad("auth.jwt.audience", "entries must not be empty");
            }
            if j.leeway > 86_400 {
                bad("auth.jwt.leeway", "must be at most 86400 seconds");
            }
        }
        let m = &self.management;
        if m.listen.is_some() && m.token.is_none() && m.token_file.is_none() {
            bad(
                "management",
                "listen is set but no token or tokenFile: the API would be open",
            );
        }
        if m.token.is_some() && m.token_file.is_some() {
            bad("management", "set token or tokenFile, not both");
        }
        if m.token.as_ref().is_some_and(|t| t.len() < 16) {
            bad("management.token", "must be at least 16 characters");
        }
        if m.max_body_bytes == 0 {
            bad("management.maxBodyBytes", "must be at least 1");
        }
        let c = &self.cluster;
        let sources = c.sources();
        if sources.len() > 1 {
            bad(
                "cluster",
                &format!(
                    "set only one member source, not {} (use cluster.members, cluster.membersFile, cluster.dns or cluster.kubernetes)",
                    sources.join(" and ")
                ),
            );
        }
        if !c.members.is_empty() {
            match c.members() {
                Err(error) => bad("cluster.members", &error.to_string()),
                Ok(members) if members.addr(&self.node_id).is_none() => bad(
                    "cluster.members",
                    "must list this node's own nodeId (with its peer address)",
                ),
                Ok(_) => {}
            }
        }
        if c.members_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bad("cluster.membersFile", "must not be empty");
        }
        if let Some(dns) = &c.dns {
            if dns.name.trim().is_empty() || dns.name.chars().any(char::is_whitespace) {
                bad(
                    "cluster.dns.name",
                    "must be a DNS name, e.g. _peer._tcp.hub-peers.default.svc.cluster.local",
                );
            }
        }
        if let Some(k) = &c.kubernetes {
            let label = |v: &str| {
                !v.is_empty()
                    && v.len() <= 63
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if !label(&k.service) {
                bad(
                    "cluster.kubernetes.service",
                    "must be a Service name (a DNS label)",
                );
            }
            if k.namespace.as_deref().is_some_and(|n| !label(n)) {
                bad(
                    "cluster.kubernetes.namespace",
                    "must be a namespace name (a DNS label)",
                );
            }
            if k.port_name.is_empty() {
                bad("cluster.kubernetes.portName", "must not be empty");
            }
        }
        if c.discovery_interval
            .is_some_and(|ms| !(100..=600_000).contains(&ms))
        {
            bad(
                "cluster.discoveryInterval",
                "must be between 100 and 600000 milliseconds",
            );
        }
        if !c.is_single_node() {
            if c.peer_listen.is_none() {
                bad(
                    "cluster.peerListen",
                    &format!("needed when {} is set", sources.join(" and ")),
                );
            }
        } else if c.peer_listen.is_some() {
            bad(
                "cluster.members",
                "a member source (cluster.members, cluster.membersFile, cluster.dns or cluster.kubernetes) is needed when cluster.peerListen is set",
            );
        }
        if c.advertise_address
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            bad(
                "cluster.advertiseAddress",
                "must be a concrete IP and port that other members can reach",
            );
        }
        if c.heartbeat_interval == 0 || c.heartbeat_interval > 60_000 {
            bad(
                "cluster.heartbeatInterval",
                "must be between 1 and 60000 milliseconds",
            );
        }
        if c.heartbeat_timeout < 2 * c.heartbeat_interval || c.heartbeat_timeout > 600_000 {
            bad(
                "cluster.heartbeatTimeout",
                "must be at least twice heartbeatInterval and at most 600000 milliseconds",
            );
        }
        if c.warm_up_timeout > 600_000 {
            bad(
                "cluster.warmUpTimeout",
                "must be at most 600000 milliseconds",
            );
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
            ("limits.maxUpstreamConcurrency", l.max_upstream_concurrency),
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
    /// matching any run of characters (`/tenant-*`). An entry may be just the name.
    pub namespaces: Vec<NamespaceConfig>,
    /// How long a new engine session may stay without joining a namespace.
    pub connect_timeout: u64,
    /// Default timeout for server-to-client acknowledgements.
    pub ack_timeout: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            namespaces: vec![NamespaceConfig::from("/")],
            connect_timeout: 45_000,
            ack_timeout: 10_000,
        }
    }
}

/// One namespace (or pattern of namespaces) and what happens in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "NamespaceEntry")]
pub struct NamespaceConfig {
    /// Exact name (`/chat`) or pattern (`/tenant-*`).
    pub name: String,
    /// The application's webhook for this namespace; none means events go nowhere
    /// unless policies handle them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamConfig>,
    /// Client event names accepted (exact or `*` patterns); empty accepts every event.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_events: Vec<String>,
    /// Lets clients join rooms and emit to them with no backend logic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PolicyConfig>,
    /// Development mode: every client event not handled otherwise goes to the other
    /// sockets in the sender's rooms (`join`/`leave` events manage rooms).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
}

impl From<&str> for NamespaceConfig {
    fn from(name: &str) -> Self {
        Self::from(name.to_string())
    }
}

impl From<String> for NamespaceConfig {
    fn from(name: String) -> Self {
        NamespaceConfig {
            name,
            upstream: None,
            allowed_events: Vec::new(),
            policies: None,
            relay: false,
        }
    }
}

/// A namespace entry as written in a file: a bare name or the full object.
#[derive(Deserialize)]
#[serde(untagged)]
enum NamespaceEntry {
    Name(String),
    Full(NamespaceObject),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceObject {
    name: String,
    #[serde(default)]
    upstream: Option<UpstreamConfig>,
    #[serde(default)]
    allowed_events: Vec<String>,
    #[serde(default)]
    policies: Option<PolicyConfig>,
    #[serde(default)]
    relay: bool,
}

impl From<NamespaceEntry> for NamespaceConfig {
    fn from(entry: NamespaceEntry) -> Self {
        match entry {
            NamespaceEntry::Name(name) => NamespaceConfig::from(name),
            NamespaceEntry::Full(o) => NamespaceConfig {
                name: o.name,
                upstream: o.upstream,
                allowed_events: o.allowed_events,
                policies: o.policies,
                relay: o.relay,
            },
        }
    }
}

/// An HTTP webhook receiving the namespace's client events as CloudEvents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Where events are POSTed, e.g. `http://app:8080/roomcast`.
    pub url: String,
    /// Which lifecycle events to send: any of `connect`, `event`, `disconnect`.
    #[serde(default = "UpstreamConfig::default_events")]
    pub events: Vec<String>,
    /// Time the app has to answer one request.
    #[serde(default = "UpstreamConfig::default_timeout")]
    pub timeout: u64,
    /// Key of the `X-Roomcast-Signature` HMAC-SHA256 header; prefer `secretFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// File holding the signing key (e.g. a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
    /// Extra attempts for `disconnect` deliveries (other events are never retried).
    #[serde(default = "UpstreamConfig::default_retries")]
    pub disconnect_retries: u32,
}

impl UpstreamConfig {
    fn default_events() -> Vec<String> {
        vec!["connect".into(), "event".into(), "disconnect".into()]
    }
    fn default_timeout() -> u64 {
        5_000
    }
    fn default_retries() -> u32 {
        3
    }
}

/// Client room policies. Patterns use `*` for any run of characters and `{claim}` for a
/// claim of the client's verified token, e.g. `user:{sub}` or `team:{org}:*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rooms clients may join and leave themselves.
    pub join: Vec<String>,
    /// Rooms clients may emit to even when not in them.
    pub emit: Vec<String>,
    /// Whether clients may emit to rooms they are in.
    pub emit_to_joined: bool,
}

/// How clients prove who they are at the handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (default) or `jwt`.
    pub mode: AuthMode,
    pub jwt: JwtConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Jwt,
}

/// JWT verification. Tokens come from `auth.token`, the `access_token` query parameter or
/// an `Authorization: Bearer` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms: HS256, RS256, ES256.
    pub algorithms: Vec<String>,
    /// HS256 shared secret; prefer `hs256SecretFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<std::path::PathBuf>,
    /// PEM public keys (RS256 or ES256).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_key_files: Vec<std::path::PathBuf>,
    /// A JWKS document URL; keys are cached and refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Refresh period of the JWKS cache.
    pub jwks_refresh_interval: u64,
    /// Minimum time between two JWKS fetches (an unknown `kid` triggers one at most this often).
    pub jwks_min_refresh_interval: u64,
    /// Required `iss`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; any one must match, when set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into(), "RS256".into(), "ES256".into()],
            hs256_secret: None,
            hs256_secret_file: None,
            public_keys: Vec::new(),
            public_key_files: Vec::new(),
            jwks_url: None,
            jwks_refresh_interval: 300_000,
            jwks_min_refresh_interval: 10_000,
            issuer: None,
            audience: Vec::new(),
            leeway: 0,
        }
    }
}

/// The management REST API, on its own port. Disabled unless `listen` is set; a token is
/// then required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ManagementConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Bearer token the app presents; prefer `tokenFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            token_file: None,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The other nodes of a hub and how this node talks to them (`docs/local-cluster.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Address the peer (gRPC) endpoint listens on, e.g. `127.0.0.11:7000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<SocketAddr>,
    /// Every member of the cluster, this node included, as `ID=IP:PORT` (the peer
    /// address). Empty: a single node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The client (Socket.IO) address other members forward this node's sessions'
    /// requests to. Default: the bound `listen` address, an unspecified IP (0.0.0.0)
    /// replaced by this node's peer IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<SocketAddr>,
    /// A file of `ID=IP:PORT` entries (one per line or comma separated, `#` comments),
    /// re-read every `discoveryInterval`: members join and leave by rewriting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_file: Option<std::path::PathBuf>,
    /// Members from DNS (a Kubernetes headless Service), re-resolved every
    /// `discoveryInterval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Members from the EndpointSlices of a Kubernetes Service (what the operator sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConfig>,
    /// Milliseconds between two lookups of `membersFile`, `dns` or `kubernetes` (default
    /// 5000 for DNS, 1000 otherwise). A static `members` list is never looked up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_interval: Option<u64>,
    /// Milliseconds a link may stay silent before this node sends a heartbeat on it.
    pub heartbeat_interval: u64,
    /// Milliseconds without anything from a peer after which its link is declared dead and
    /// the peer leaves routing (at least twice `heartbeatInterval`).
    pub heartbeat_timeout: u64,
    /// Milliseconds a starting member stays not ready (`/readyz` 503) while it waits for
    /// its first member lookup and a link to every member, so that no client or management
    /// call reaches it before it can reach the whole cluster. Ready at the latest after
    /// this long, whatever is missing (logged). 0: ready at once.
    pub warm_up_timeout: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peer_listen: None,
            members: Vec::new(),
            advertise_address: None,
            members_file: None,
            dns: None,
            kubernetes: None,
            discovery_interval: None,
            heartbeat_interval: 1_000,
            heartbeat_timeout: 3_000,
            warm_up_timeout: 10_000,
        }
    }
}

/// Member discovery through the EndpointSlices of the peers' headless Service: ready,
/// non-terminating endpoints, each a member named by its pod at its address and the port
/// named `portName` (see `cluster::kube_discovery`; RBAC in docs/operator.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The Service, e.g. `chat-peers`.
    pub service: String,
    /// Its namespace. Default: this pod's (`ROOMCAST_POD_NAMESPACE`, else the service
    /// account's namespace file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name of the peer port in the slices.
    #[serde(default = "KubernetesConfig::default_port_name")]
    pub port_name: String,
}

impl KubernetesConfig {
    fn default_port_name() -> String {
        "peer".to_string()
    }
}

/// Member discovery through DNS: an SRV lookup of `name`, whose every target is a member
/// named by the target's first label (`hub-0.hub-peers.default.svc.cluster.local` is
/// `hub-0`) at the target's address and the SRV port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsConfig {
    /// The SRV name, e.g. `_peer._tcp.hub-peers.default.svc.cluster.local`.
    pub name: String,
    /// `IP:PORT` of the DNS server to ask instead of those of `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<SocketAddr>,
}

/// Where a cluster member learns the member set.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberSource {
    /// `cluster.members`: fixed for the life of the process.
    Static(crate::cluster::Members),
    /// `cluster.membersFile`, re-read every interval.
    File(std::path::PathBuf),
    /// `cluster.dns`, re-resolved every interval.
    Dns(DnsConfig),
    /// `cluster.kubernetes`: a watch of EndpointSlices, read every interval.
    Kubernetes(KubernetesConfig),
}

impl ClusterConfig {
    /// Default `discoveryInterval` for a members file.
    pub const FILE_INTERVAL_MS: u64 = 1_000;
    /// Default `discoveryInterval` for DNS.
    pub const DNS_INTERVAL_MS: u64 = 5_000;

    /// No cluster configured: this node serves alone.
    pub fn is_single_node(&self) -> bool {
        self.sources().is_empty()
    }

    /// The member sources set, by field name.
    fn sources(&self) -> Vec<&'static str> {
        let mut sources = Vec::new();
        if !self.members.is_empty() {
            sources.push("cluster.members");
        }
        if self.members_file.is_some() {
            sources.push("cluster.membersFile");
        }
        if self.dns.is_some() {
            sources.push("cluster.dns");
        }
        if self.kubernetes.is_some() {
            sources.push("cluster.kubernetes");
        }
        sources
    }

    /// The member source of a validated configuration; `None` for a single node.
    pub fn source(&self) -> Result<Option<MemberSource>, crate::cluster::MembersError> {
        Ok(if !self.members.is_empty() {
            Some(MemberSource::Static(self.members()?))
        } else if let Some(path) = &self.members_file {
            Some(MemberSource::File(path.clone()))
        } else if let Some(dns) = &self.dns {
            Some(MemberSource::Dns(dns.clone()))
        } else {
            self.kubernetes.clone().map(MemberSource::Kubernetes)
        })
    }

    /// How often the member source is looked up again.
    pub fn discovery_interval(&self) -> std::time::Duration {
        let default = if self.dns.is_some() {
            Self::DNS_INTERVAL_MS
        } else {
            Self::FILE_INTERVAL_MS
        };
        std::time::Duration::from_millis(self.discovery_interval.unwrap_or(default))
    }

    /// The member list, parsed.
    pub fn members(&self) -> Result<crate::cluster::Members, crate::cluster::MembersError> {
        crate::cluster::Members::parse(&self.members.join(","))
    }
}

/// The graceful drain on SIGTERM (or Ctrl-C), in milliseconds from the signal:
///
/// 1. `/readyz` answers 503 at once, so load balancers and Kubernetes endpoints stop sending
///    new clients; for `drainDelay` the node otherwise serves as usual (the endpoint change
///    takes a moment to reach every load balancer).
/// 2. Then new handshakes get 503 and every client session is closed with an Engine.IO
///    close, so stock clients reconnect at once, through the load balancer, to other nodes.
/// 3. The node exits once its sessions are gone, or at `gracePeriod` at the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ShutdownConfig {
    pub drain_delay: u64,
    pub grace_period: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        // 0 ms suits a local node; the operator sets a few seconds for Kubernetes, where
        // endpoint removal propagates asynchronously. 25 s fits in the default 30 s
        // terminationGracePeriodSeconds.
        Self {
            drain_delay: 0,
            grace_period: 25_000,
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
    /// Webhook requests in flight at once on this node.
    pub max_upstream_concurrency: usize,
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
            max_upstream_concurrency: 256,
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
    fn kubernetes_discovery_is_a_member_source() {
        let yaml = "nodeId: chat-0\ncluster:\n  peerListen: 0.0.0.0:7000\n  kubernetes:\n    service: chat-peers\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        let Some(MemberSource::Kubernetes(k)) = config.cluster.source().unwrap() else {
            panic!("expected the Kubernetes source");
        };
        assert_eq!(k.service, "chat-peers");
        assert_eq!(k.namespace, None);
        assert_eq!(k.port_name, "peer");
        assert_eq!(config.cluster.discovery_interval().as_millis(), 1_000);
        let mut bad = config.clone();
        bad.cluster.kubernetes = Some(KubernetesConfig {
            service: "Chat_Peers".into(),
            namespace: Some("".into()),
            port_name: String::new(),
        });
        bad.cluster.members_file = Some("/m".into());
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cluster",
                "cluster.kubernetes.service",
                "cluster.kubernetes.namespace",
                "cluster.kubernetes.portName"
            ]
        );
    }

    #[test]
    fn cluster_configs_are_checked() {
        let yaml = "nodeId: hub-1\ncluster:\n  peerListen: 127.0.0.12:7000\n  members: [hub-0=127.0.0.11:7000, hub-1=127.0.0.12:7000]\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.members().unwrap().len(), 2);
        assert_eq!(config.cluster.heartbeat_timeout, 3_000);

        let fields = |c: &Config| match c.validate() {
            Err(ConfigError::Invalid(errors)) => {
                errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
            }
            other => panic!("expected field errors, got {other:?}"),
        };
        let mut not_listed = config.clone();
        not_listed.node_id = "hub-9".into();
        assert_eq!(fields(&not_listed), ["cluster.members"]);
        let mut no_listen = config.clone();
        no_listen.cluster.peer_listen = None;
        assert_eq!(fields(&no_listen), ["cluster.peerListen"]);
        let mut bad = config.clone();
        bad.cluster.members.push("hub-2".into());
        bad.cluster.heartbeat_timeout = bad.cluster.heartbeat_interval;
        assert_eq!(
            fields(&bad),
            ["cluster.members", "cluster.heartbeatTimeout"]
        );
        let mut listen_only = Config::default();
        listen_only.cluster.peer_listen = config.cluster.peer_listen;
        assert_eq!(fields(&listen_only), ["cluster.members"]);
        let with_advertise = Config::parse(
            &format!("{yaml}  advertiseAddress: 10.0.0.5:3000\n"),
            "yaml",
        )
        .unwrap();
        with_advertise.validate().unwrap();
        assert_eq!(
            with_advertise.cluster.advertise_address,
            Some("10.0.0.5:3000".parse().unwrap())
        );
        for unusable in ["0.0.0.0:3000", "10.0.0.5:0"] {
            let mut bad = config.clone();
            bad.cluster.advertise_address = Some(unusable.parse().unwrap());
            assert_eq!(fields(&bad), ["cluster.advertiseAddress"], "{unusable}");
        }

        // Sources that change at run time; only one source at a time.
        let yaml = "nodeId: hub-1\ncluster:\n  peerListen: 127.0.0.12:7000\n  membersFile: /etc/roomcast/members\n";
        let file = Config::parse(yaml, "yaml").unwrap();
        file.validate().unwrap();
        assert_eq!(
            file.cluster.source().unwrap(),
            Some(MemberSource::File("/etc/roomcast/members".into()))
        );
        assert_eq!(file.cluster.discovery_interval().as_millis(), 1_000);
        let yaml = "nodeId: hub-1\ncluster:\n  peerListen: 0.0.0.0:7000\n  dns:\n    name: _peer._tcp.hub-peers.default.svc.cluster.local\n    nameserver: 127.0.0.1:5353\n  discoveryInterval: 2000\n";
        let dns = Config::parse(yaml, "yaml").unwrap();
        dns.validate().unwrap();
        let Some(MemberSource::Dns(d)) = dns.cluster.source().unwrap() else {
            panic!("expected a DNS source");
        };
        assert_eq!(d.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(dns.cluster.discovery_interval().as_millis(), 2_000);
        let mut defaults = dns.clone();
        defaults.cluster.discovery_interval = None;
        assert_eq!(defaults.cluster.discovery_interval().as_millis(), 5_000);
        let mut two = dns.clone();
        two.cluster.members_file = Some("/m".into());
        two.cluster.discovery_interval = Some(10);
        let ConfigError::Invalid(errors) = two.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        assert_eq!(errors[0].field, "cluster");
        assert!(
            errors[0]
                .reason
                .contains("cluster.membersFile and cluster.dns"),
            "{}",
            errors[0].reason
        );
        assert_eq!(errors[1].field, "cluster.discoveryInterval");
        let mut no_name = dns.clone();
        no_name.cluster.dns = Some(DnsConfig {
            name: " ".into(),
            nameserver: None,
        });
        no_name.cluster.peer_listen = None;
        assert_eq!(fields(&no_name), ["cluster.dns.name", "cluster.peerListen"]);
        // A single node serializes without a cluster section.
        let json = serde_json::to_string(&Config::default()).unwrap();
        assert!(!json.contains("cluster"), "{json}");
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
    fn namespaces_are_names_or_objects() {
        let yaml = "socketio:\n  namespaces:\n    - /\n    - name: /chat\n      allowedEvents: [message]\n      upstream:\n        url: http://app/hook\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        assert_eq!(config.socketio.namespaces[0], NamespaceConfig::from("/"));
        let chat = &config.socketio.namespaces[1];
        assert_eq!(chat.allowed_events, vec!["message".to_string()]);
        let upstream = chat.upstream.as_ref().unwrap();
        assert_eq!((upstream.timeout, upstream.events.len()), (5_000, 3));
        config.validate().unwrap();
        let err = Config::parse(
            "socketio:\n  namespaces:\n    - name: /x\n      bogus: 1\n",
            "yaml",
        );
        assert!(err.is_err());
    }

    #[test]
    fn jwt_auth_is_validated() {
        let mut config = Config::default();
        config.auth.mode = AuthMode::Jwt;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        assert_eq!(errors[0].field, "auth.jwt", "no key source");
        let j = &mut config.auth.jwt;
        j.hs256_secret = Some(String::new());
        j.jwks_url = Some("ftp://keys".into());
        j.algorithms = vec!["HS512".into()];
        j.issuer = Some(String::new());
        j.audience = vec![String::new()];
        j.leeway = 100_000;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "auth.jwt.algorithms",
                "auth.jwt.jwksUrl",
                "auth.jwt.hs256Secret",
                "auth.jwt.issuer",
                "auth.jwt.audience",
                "auth.jwt.leeway"
            ]
        );
        let yaml = "auth:\n  mode: jwt\n  jwt:\n    algorithms: [RS256]\n    jwksUrl: https://idp.example/.well-known/jwks.json\n    issuer: https://idp.example/\n    audience: [roomcast]\n    leeway: 30\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.auth.jwt.jwks_refresh_interval, 300_000);
    }

    #[test]
    fn open_management_api_is_refused() {
        let mut config = Config::default();
        config.management.listen = Some(([127, 0, 0, 1], 3001).into());
        assert!(config.validate().is_err());
        config.management.token = Some("0123456789abcdef".into());
        config.validate().unwrap();
    }

    /// Every YAML example of docs/configuration.md that is a whole file parses and validates.
    #[test]
    fn documented_examples_are_valid() {
        let doc = include_str!("../../docs/configuration.md");
        let mut checked = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let Some((yaml, _)) = block.split_once("```") else {
                continue;
            };
            let config = Config::parse(yaml, "yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            config.validate().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            checked += 1;
        }
        assert!(checked >= 5, "found {checked} examples");
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = Config::default();
        let text = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(Config::parse(&text, "yaml").unwrap(), config);
    }
}
