//! The engine's counters: plain atomics bumped on the hot paths.
//!
//! They live in the engine, which updates them; `metrics` (a layer above) only reads them
//! for `/metrics`.

use std::sync::atomic::AtomicU64;

/// Engine counters.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub packets_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub slow_consumers: AtomicU64,
    /// Polling requests and WebSocket upgrades forwarded to their session's owner.
    pub forwarded_requests: AtomicU64,
    pub forwarded_upgrades: AtomicU64,
    /// Forwards that failed (owner unreachable, broken answer, body too large).
    pub forward_failures: AtomicU64,
    /// Requests for another member's session that could not be routed (owner unknown,
    /// its link down, or already forwarded once): answered as an unknown session.
    pub forward_unroutable: AtomicU64,
}
