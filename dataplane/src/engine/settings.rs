//! The engine's settings, resolved once from the configuration.
//!
//! A module of its own so that the pieces that only need settings (the CORS responder,
//! the forwarder) do not depend on the `Engine` itself.

use std::time::Duration;

use super::outbox::OutboxLimits;
use crate::config::{Config, TransportKind};

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
    /// Longest wait for a polling POST's body.
    pub polling_body_timeout: Duration,
    /// Longest wait for a request's headers on the client endpoint.
    pub header_read_timeout: Duration,
    /// How long the kernel holds a new connection until its first bytes (`deferAccept`);
    /// zero: not at all.
    pub defer_accept: Duration,
    /// Largest sum of header name and value bytes a handshake may carry.
    pub max_handshake_header_bytes: usize,
    /// Open sessions per client IP address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// When and how long a write round may wait under fan-out load (`coalesce`).
    pub write_coalescing: Coalescing,
}

/// `engine.writeCoalescingDelay` and `engine.writeCoalescingLoad`, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coalescing {
    /// The longest a write round waits; zero: never.
    pub delay: Duration,
    /// Share of the time spent writing (0 to 1) above which rounds start waiting.
    pub load: f64,
}

impl Coalescing {
    /// Never waits.
    pub const OFF: Coalescing = Coalescing {
        delay: Duration::ZERO,
        load: 1.0,
    };
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
            polling_body_timeout: Duration::from_millis(e.polling_body_timeout),
            header_read_timeout: Duration::from_millis(e.header_read_timeout),
            defer_accept: Duration::from_millis(e.defer_accept),
            max_handshake_header_bytes: config.limits.max_handshake_header_bytes,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            write_coalescing: Coalescing {
                delay: Duration::from_millis(e.write_coalescing_delay),
                load: f64::from(e.write_coalescing_load.min(100)) / 100.0,
            },
        }
    }

    pub(super) fn allows(&self, transport: TransportKind) -> bool {
        self.transports.contains(&transport)
    }
}
