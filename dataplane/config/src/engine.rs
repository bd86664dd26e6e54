//! `engine`: Engine.IO options (transports, heartbeats, payload size, CORS).

use serde::{Deserialize, Serialize};

use crate::Problems;

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
    /// How long a polling POST may take to deliver its body once its headers are in
    /// (slower: HTTP 408, the session is closed).
    pub polling_body_timeout: u64,
    /// How long a connection to the client endpoint may take to send a request's headers
    /// (counted from the connection's start or the end of the previous answer).
    pub header_read_timeout: u64,
    /// How long the kernel may hold a new client connection until its first bytes arrive
    /// before handing it to the node (TCP_DEFER_ACCEPT, Linux; whole seconds, rounded up),
    /// in milliseconds. 0: connections are handed over as soon as they are established.
    pub defer_accept: u64,
    /// Under sustained fan-out load (write rounds taking over half of the node's time, room
    /// broadcasts closer together than this), the longest a WebSocket frame may wait so that
    /// each write carries several broadcasts' frames, in milliseconds. 0: every write goes out
    /// at once.
    pub write_coalescing_delay: u64,
    /// The share of its time, in percent, a node must spend in write rounds before its writes
    /// start waiting (they stop again below two fifths of it). 0: whenever broadcasts are
    /// closer together than `writeCoalescingDelay`.
    pub write_coalescing_load: u8,
}

/// The longest `engine.deferAccept`: a client that connected and says nothing is the node's
/// after this, whatever the setting (its `headerReadTimeout` then starts).
pub const MAX_DEFER_ACCEPT: u64 = 60_000;

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
            polling_body_timeout: 10_000,
            header_read_timeout: 10_000,
            defer_accept: 1_000,
            write_coalescing_delay: 6,
            write_coalescing_load: 50,
        }
    }
}

/// CORS for the polling transport. An empty `origin` list disables CORS headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins; `"*"` allows any origin (not with `credentials`).
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

impl EngineConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        if !self.path.starts_with('/') || !self.path.ends_with('/') {
            bad.add("engine.path", "must start and end with /");
        }
        if self.transports.is_empty() {
            bad.add("engine.transports", "at least one transport is needed");
        }
        if self.transports.iter().enumerate().any(|(i, t)| {
            self.transports
                .get(..i)
                .is_some_and(|seen| seen.contains(t))
        }) {
            bad.add("engine.transports", "lists a transport twice");
        }
        bad.millis("engine.pingInterval", self.ping_interval);
        bad.millis("engine.pingTimeout", self.ping_timeout);
        bad.millis("engine.upgradeTimeout", self.upgrade_timeout);
        bad.millis("engine.pollingBodyTimeout", self.polling_body_timeout);
        bad.millis("engine.headerReadTimeout", self.header_read_timeout);
        if self.defer_accept > MAX_DEFER_ACCEPT {
            bad.add(
                "engine.deferAccept",
                "must be at most 60000 ms (0 turns it off)",
            );
        }
        if self.write_coalescing_delay > 1_000 {
            bad.add(
                "engine.writeCoalescingDelay",
                "must be at most 1000 ms (0 turns it off)",
            );
        }
        if self.write_coalescing_load > 100 {
            bad.add("engine.writeCoalescingLoad", "is a percentage: 0 to 100");
        }
        if self.cors.credentials && self.cors.origin.iter().any(|o| o == "*") {
            bad.add(
                "engine.cors",
                "credentials with origin \"*\" would let any site make credentialed requests: list the allowed origins",
            );
        }
        if self.max_http_buffer_size == 0 || self.max_http_buffer_size > 256 * 1024 * 1024 {
            bad.add(
                "engine.maxHttpBufferSize",
                "must be between 1 byte and 256 MiB",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    #[test]
    fn write_coalescing_is_on_by_default_and_bounded() {
        let config = Config::default();
        assert_eq!(config.engine.write_coalescing_delay, 6);
        assert_eq!(config.engine.write_coalescing_load, 50);

        let yaml = "engine:\n  writeCoalescingDelay: 0\n  writeCoalescingLoad: 0\n";
        let off = Config::parse(yaml, "yaml").unwrap();
        off.validate().unwrap();
        assert_eq!(off.engine.write_coalescing_delay, 0);

        let mut bad = Config::default();
        bad.engine.write_coalescing_delay = 1_001;
        bad.engine.write_coalescing_load = 101;
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["engine.writeCoalescingDelay", "engine.writeCoalescingLoad"]
        );
        // A percentage that does not fit a byte is a parse error, not a wrap-around.
        assert!(Config::parse("engine:\n  writeCoalescingLoad: 300\n", "yaml").is_err());
    }

    #[test]
    fn defer_accept_is_one_second_by_default_and_bounded() {
        assert_eq!(Config::default().engine.defer_accept, 1_000);
        let off = Config::parse("engine:\n  deferAccept: 0\n", "yaml").unwrap();
        off.validate().unwrap();
        assert_eq!(off.engine.defer_accept, 0);

        let mut bad = Config::default();
        bad.engine.defer_accept = 60_001;
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["engine.deferAccept"]);
    }
}
