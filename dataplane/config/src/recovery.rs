//! `socketio.connectionStateRecovery`: resuming a client's session after a short
//! disconnection, on any node of the hub (see docs/recovery.md).

use serde::{Deserialize, Serialize};

use crate::Problems;

/// Connection state recovery, as socket.io's `connectionStateRecovery` option, hub-wide.
/// Off by default (as in socket.io): with it on, every non-volatile event without ack that a
/// client receives carries an offset as its last argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RecoveryConfig {
    pub enabled: bool,
    /// How long a disconnected session can be recovered (socket.io's default: 2 minutes).
    pub max_disconnection_duration: u64,
    /// Recovered sockets skip the `connect` webhook (as socket.io skips middlewares). A JWT
    /// is checked on every connect, recovered or not, when `auth.mode` is `jwt`.
    pub skip_middlewares: bool,
    /// A session that missed more packets than this is not recovered (fresh session).
    pub max_packets_per_session: usize,
    /// A session that missed more bytes than this is not recovered (fresh session).
    pub max_bytes_per_session: usize,
    /// Bytes of recent packets a node keeps for replay; the oldest go first, and a session
    /// whose missed packets are gone is not recovered.
    pub max_buffer_bytes: usize,
    /// Disconnected sessions a node keeps for recovery; past it, a disconnected session is
    /// ended at once.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_disconnection_duration: 120_000,
            skip_middlewares: true,
            max_packets_per_session: 500,
            max_bytes_per_session: 1 << 20,
            max_buffer_bytes: 64 << 20,
            max_sessions: 100_000,
        }
    }
}

impl RecoveryConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        let at = "socketio.connectionStateRecovery";
        bad.millis(
            &format!("{at}.maxDisconnectionDuration"),
            self.max_disconnection_duration,
        );
        for (field, value) in [
            ("maxPacketsPerSession", self.max_packets_per_session),
            ("maxBytesPerSession", self.max_bytes_per_session),
            ("maxBufferBytes", self.max_buffer_bytes),
            ("maxSessions", self.max_sessions),
        ] {
            if value == 0 {
                bad.add(&format!("{at}.{field}"), "must be at least 1");
            }
        }
        if self.max_bytes_per_session > self.max_buffer_bytes {
            bad.add(
                &format!("{at}.maxBytesPerSession"),
                "must not exceed maxBufferBytes",
            );
        }
    }
}
