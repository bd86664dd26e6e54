//! Disconnecting sockets when their token expires (`auth.jwt.disconnectOnExpiry`).
//!
//! One queue per hub, ordered by expiry time and swept by one task, instead of a timer task
//! per socket: a socket costs one heap entry (a time and a weak reference). Sockets that
//! left before their token expired are skipped when due, and swept out in bulk whenever the
//! queue has doubled since the last such sweep, so reconnecting clients with long-lived
//! tokens do not make it grow without bound.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::socket::Socket;

/// Queues smaller than this are never compacted.
const COMPACT_MIN: usize = 1024;
/// How long the sweeper sleeps when nothing is queued (a push wakes it earlier).
const IDLE: Duration = Duration::from_secs(3600);

struct Entry<T> {
    at: Instant,
    item: Weak<T>,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

/// Items due at given times, earliest first. Pure: the caller says what time it is.
pub(crate) struct Deadlines<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    /// The length after the last compaction.
    compacted_len: usize,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            compacted_len: 0,
        }
    }
}

impl<T> Deadlines<T> {
    /// Adds `item`, due at `at`; returns whether it is now the earliest. When the queue has
    /// doubled since the last compaction, entries `alive` says are gone are dropped first.
    pub fn push(&mut self, at: Instant, item: &Arc<T>, alive: impl Fn(&T) -> bool) -> bool {
        if self.heap.len() >= COMPACT_MIN.max(self.compacted_len.saturating_mul(2)) {
            self.heap
                .retain(|Reverse(e)| e.item.upgrade().is_some_and(|item| alive(&item)));
            self.compacted_len = self.heap.len();
        }
        let earliest = self.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        self.heap.push(Reverse(Entry {
            at,
            item: Arc::downgrade(item),
        }));
        earliest
    }

    /// Takes the items due at `now` (those still alive), and tells when the next one is due.
    pub fn due(&mut self, now: Instant) -> (Vec<Arc<T>>, Option<Instant>) {
        let mut due = Vec::new();
        while let Some(Reverse(entry)) = self.heap.peek() {
            if entry.at > now {
                return (due, Some(entry.at));
            }
            if let Some(Reverse(entry)) = self.heap.pop() {
                due.extend(entry.item.upgrade());
            }
        }
        (due, None)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

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
    fn items_come_due_in_time_order_and_gone_ones_are_skipped() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::default();
        let (a, b, c) = (Arc::new("a"), Arc::new("b"), Arc::new("c"));
        assert!(d.push(s(300), &a, |_| true), "the first is the earliest");
        assert!(d.push(s(100), &b, |_| true), "earlier than a");
        assert!(!d.push(s(200), &c, |_| true));
        assert_eq!(d.due(s(50)).0.len(), 0);
        assert_eq!(d.due(s(50)).1, Some(s(100)));
        let (due, next) = d.due(s(250));
        assert_eq!(due.iter().map(|x| **x).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(next, Some(s(300)));
        // a is gone before its time: nothing comes due.
        drop(a);
        let (due, next) = d.due(s(1000));
        assert!(due.is_empty());
        assert_eq!((next, d.len()), (None, 0));
    }

    #[test]
    fn the_queue_sheds_gone_items_as_it_grows() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let keep = Arc::new(1u32);
        d.push(t0, &keep, |_| true);
        // Thousands of items that are gone at once (sockets that disconnected).
        for n in 0..10 * COMPACT_MIN {
            let gone = Arc::new(n as u32 + 2);
            d.push(t0 + Duration::from_secs(3600), &gone, |_| true);
        }
        assert!(d.len() <= COMPACT_MIN + 1, "{} entries", d.len());
        // Alive but disconnected counts as gone too.
        let dead = Arc::new(0u32);
        let mut d2 = Deadlines::default();
        for _ in 0..COMPACT_MIN + 1 {
            d2.push(t0, &dead, |v| *v != 0);
        }
        assert_eq!(d2.len(), 1);
    }

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
