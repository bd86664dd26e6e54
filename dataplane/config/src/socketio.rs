//! `socketio`: Socket.IO options, namespaces, their webhooks (upstream) and client room policies.

use serde::{Deserialize, Serialize};

use crate::Problems;
use crate::RecoveryConfig;

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
    /// Handshake secrets that `fetchSockets`, webhooks and peers may show. Every one of
    /// [`SECRETS`] is redacted (its value replaced by `[redacted]`) unless listed here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub show_secrets: Vec<String>,
    /// Resuming sessions after a short disconnection (socket.io's `connectionStateRecovery`).
    pub connection_state_recovery: RecoveryConfig,
}

/// The handshake secrets redacted by default: request headers (`cookie`, `authorization`,
/// `proxy-authorization`), the `access_token` query parameter (in `query` and `url`) and
/// the `token` of the client's `auth` object (`auth.token`).
pub const SECRETS: &[&str] = &[
    "cookie",
    "authorization",
    "proxy-authorization",
    "access_token",
    "auth.token",
];

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            namespaces: vec![NamespaceConfig::from("/")],
            connect_timeout: 45_000,
            ack_timeout: 10_000,
            show_secrets: Vec::new(),
            connection_state_recovery: RecoveryConfig::default(),
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

impl SocketIoConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        bad.millis("socketio.connectTimeout", self.connect_timeout);
        bad.millis("socketio.ackTimeout", self.ack_timeout);
        self.connection_state_recovery.validate(bad);
        if self.namespaces.is_empty() {
            bad.add(
                "socketio.namespaces",
                "at least one namespace or pattern is needed",
            );
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            ns.validate(&format!("socketio.namespaces[{i}]"), bad);
        }
        for (i, secret) in self.show_secrets.iter().enumerate() {
            if !SECRETS.contains(&secret.as_str()) {
                bad.add(
                    &format!("socketio.showSecrets[{i}]"),
                    &format!("must be one of {}", SECRETS.join(", ")),
                );
            }
        }
    }
}

impl NamespaceConfig {
    fn validate(&self, at: &str, bad: &mut Problems) {
        let name = &self.name;
        if !(name.starts_with('/') || name.starts_with('*')) || name.contains(',') {
            bad.add(
                &format!("{at}.name"),
                "must start with / (or be a * pattern) and contain no comma",
            );
        }
        if let Some(up) = &self.upstream {
            up.validate(&format!("{at}.upstream"), bad);
        }
    }
}

impl UpstreamConfig {
    fn validate(&self, at: &str, bad: &mut Problems) {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bad.add(&format!("{at}.url"), "must be an http:// or https:// URL");
        }
        if self
            .events
            .iter()
            .any(|e| !["connect", "event", "disconnect", "reconnect"].contains(&e.as_str()))
        {
            bad.add(
                &format!("{at}.events"),
                "entries must be connect, event, disconnect or reconnect",
            );
        }
        if self.timeout == 0 || self.timeout > 600_000 {
            bad.add(
                &format!("{at}.timeout"),
                "must be between 1 and 600000 milliseconds",
            );
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            bad.add(at, "set secret or secretFile, not both");
        }
        if self.disconnect_retries > 10 {
            bad.add(&format!("{at}.disconnectRetries"), "must be at most 10");
        }
    }
}
