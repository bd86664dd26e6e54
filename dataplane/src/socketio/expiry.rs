//! Disconnecting sockets when their token expires (`auth.jwt.disconnectOnExpiry`).
//!
//! One queue per hub ([`Deadlines`]) swept by one task, instead of a timer task per socket.
//! Sockets that left before their token expired are skipped, so reconnecting clients with
//! long-lived tokens do not make it grow without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::deadlines::Deadlines;
use super::socket::Socket;

/// How long the sweeper sleeps when nothing is queued (a push wakes it earlier).
const IDLE: Duration = Duration::from_secs(3600);

/// When a token with claims `claims` expires, as an [`Instant`]: its `exp` (Unix seconds)
/// plus `leeway` seconds. `None` without a numeric `exp`.
pub(crate) fn expiry_of(claims: &Value, leeway: u64, now: Instant) -> Option<Instant> {
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() {
        return None;
    }
    let at_unix = exp + leeway as f64;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let left = (at_unix - now_unix).max(0.0);
    // A far-future expiry is capped (Duration would overflow); such a socket never expires.
    let left = Duration::try_from_secs_f64(left.min(1e9)).unwrap_or(Duration::ZERO);
    now.checked_add(left)
}

/// The hub's sockets waiting for their token to expire.
#[derive(Default)]
pub(crate) struct TokenExpiries {
    queue: Mutex<Deadlines<Socket>>,
    wake: Arc<Notify>,
    sweeper_started: AtomicBool,
}

impl TokenExpiries {
    /// Disconnects `socket` at `at` (unless it left before).
    pub fn push(self: &Arc<Self>, at: Instant, socket: &Arc<Socket>) {
        let earliest = self.queue.lock().push(at, socket, Socket::connected);
        if !self.sweeper_started.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let wake = self.wake.clone();
            tokio::spawn(async move {
                loop {
                    let Some(this) = weak.upgrade() else { return };
                    let next = this.sweep(Instant::now());
                    drop(this);
                    tokio::select! {
                        () = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + IDLE)) => {}
                        () = wake.notified() => {}
                    }
                }
            });
        } else if earliest {
            self.wake.notify_one();
        }
    }

    /// Disconnects the due sockets; returns when the next one is due.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let (due, next) = self.queue.lock().due(now);
        for socket in due {
            if socket.connected() {
                tracing::debug!(
                    socket = socket.id(),
                    nsp = socket.nsp(),
                    "token expired: disconnecting"
                );
                socket.disconnect(false);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_is_exp_plus_leeway_from_the_claims() {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = expiry_of(&json!({"exp": unix + 10}), 0, now).unwrap();
        let left = at - now;
        assert!(
            left > Duration::from_secs(8) && left <= Duration::from_secs(10),
            "{left:?}"
        );
        let at = expiry_of(&json!({"exp": unix + 10}), 5, now).unwrap();
        assert!(at - now > Duration::from_secs(13));
        // Already expired (accepted within the leeway): due at once.
        assert_eq!(expiry_of(&json!({"exp": unix - 100}), 0, now), Some(now));
        assert_eq!(expiry_of(&json!({"sub": "x"}), 0, now), None);
        assert_eq!(expiry_of(&json!({"exp": "soon"}), 0, now), None);
        assert!(expiry_of(&json!({"exp": 1e300}), 0, now).is_some());
    }
}
