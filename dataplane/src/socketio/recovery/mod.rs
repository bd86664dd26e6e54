//! Connection state recovery (socket.io's `connectionStateRecovery`), hub-wide: a client
//! cut off for less than `maxDisconnectionDuration` gets its socket id, rooms and data back
//! and every packet it missed, on whichever node it reconnects to. See docs/recovery.md.
//!
//! This module is the node's part that needs no socket: the log of recent deliveries
//! (`log`), the replay decision (`plan`), ids (`ids`), and the interface to other nodes
//! ([`Handover`], implemented by the cluster). Parked sockets live in their namespace
//! (`socketio::parking`).

pub mod ids;
pub mod log;
pub mod plan;

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use log::{Log, LogLimits, Replayed, SessionBounds, Unrecoverable};
pub use plan::{SessionRecovery, Tail};

use crate::config::RecoveryConfig;

/// A session as another node needs it to take it over: who it is and where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    pub nsp: String,
    pub id: String,
    pub pid: String,
    pub rooms: Vec<String>,
    pub data: Value,
}

/// How this node reaches sessions held by other nodes (the cluster's peer links). A node
/// that is not part of a cluster has none: only its own sessions can be recovered.
pub trait Handover: Send + Sync {
    /// Finds the node holding session `pid` and its state; a live session there is
    /// disconnected first (its client is the one asking).
    fn find(&self, pid: &str) -> BoxFuture<'static, Result<(String, SessionState), Unrecoverable>>;

    /// Takes session `pid` from `holder`, which ends it there once every node delivers to
    /// this one, and returns what the client (last at `offset`) missed.
    fn take(
        &self,
        holder: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> BoxFuture<'static, Result<Tail, Unrecoverable>>;

    /// Resolves once every other node has heard of this node's room changes so far.
    fn propagated(&self) -> BoxFuture<'static, ()>;
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct RecoveryStats {
    pub recovered_local: AtomicU64,
    pub recovered_remote: AtomicU64,
    pub handed_over: AtomicU64,
    pub adopted: AtomicU64,
    pub expired: AtomicU64,
    pub failed: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub replayed_packets: AtomicU64,
    /// Hand-overs to other nodes being answered now (a draining node waits for them).
    pub handing_over: std::sync::atomic::AtomicUsize,
}

impl RecoveryStats {
    pub fn fail(&self, why: Unrecoverable) {
        *self.failed.lock().entry(why.label()).or_default() += 1;
    }
}

/// The hub's recovery state.
pub struct Recovery {
    pub config: RecoveryConfig,
    log: Mutex<Log>,
    offsets: ids::Offsets,
    /// This node's member id, for the pids it makes (empty on a single node).
    member: OnceLock<String>,
    handover: OnceLock<std::sync::Arc<dyn Handover>>,
    pub stats: RecoveryStats,
    ping_window: Duration,
    closing: std::sync::atomic::AtomicBool,
}

impl Recovery {
    pub fn new(config: &RecoveryConfig, ping_window: Duration) -> Self {
        let retention = Duration::from_millis(config.max_disconnection_duration) + ping_window;
        Self {
            config: config.clone(),
            log: Mutex::new(Log::new(LogLimits {
                max_bytes: config.max_buffer_bytes,
                retention,
            })),
            offsets: ids::Offsets::default(),
            member: OnceLock::new(),
            handover: OnceLock::new(),
            stats: RecoveryStats::default(),
            ping_window,
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts answering a hand-over; false once the node is closing (see
    /// [`Recovery::hand_overs_done`]). Every `true` is followed by [`Recovery::end_hand_over`].
    pub fn begin_hand_over(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.stats.handing_over.fetch_add(1, SeqCst);
        if self.closing.load(SeqCst) {
            self.stats.handing_over.fetch_sub(1, SeqCst);
            return false;
        }
        true
    }

    pub fn end_hand_over(&self) {
        self.stats
            .handing_over
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How long a lost connection can go unnoticed (ping interval + ping timeout).
    pub fn ping_window(&self) -> Duration {
        self.ping_window
    }

    pub fn bounds(&self) -> SessionBounds {
        SessionBounds {
            max_packets: self.config.max_packets_per_session,
            max_bytes: self.config.max_bytes_per_session,
        }
    }

    pub fn max_disconnection(&self) -> Duration {
        Duration::from_millis(self.config.max_disconnection_duration)
    }

    pub fn next_offset(&self) -> std::sync::Arc<str> {
        self.offsets.next()
    }

    pub fn new_pid(&self) -> std::sync::Arc<str> {
        ids::new_pid(self.member.get().map_or("", String::as_str))
    }

    pub fn member(&self) -> &str {
        self.member.get().map_or("", String::as_str)
    }

    pub fn set_member(&self, member: &str) {
        let _ = self.member.set(member.to_string());
    }

    pub fn set_handover(&self, handover: std::sync::Arc<dyn Handover>) -> bool {
        self.handover.set(handover).is_ok()
    }

    pub fn handover(&self) -> Option<&std::sync::Arc<dyn Handover>> {
        self.handover.get()
    }

    /// The log, locked. Callers that also hold a namespace lock take it first.
    pub fn log(&self) -> parking_lot::MutexGuard<'_, Log> {
        self.log.lock()
    }

    /// Waits (at most `limit`) until no hand-over to another node is being answered: a
    /// draining node must not exit with a session it took out of its rooms but has not sent.
    /// New hand-overs are refused from now on (their sessions would leave with the process).
    pub async fn hand_overs_done(&self, limit: Duration) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self
            .stats
            .handing_over
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops what is past the retention (also done on every append).
    pub fn prune(&self) {
        self.log.lock().prune(Instant::now());
    }
}
