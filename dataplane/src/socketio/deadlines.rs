//! Items due at given times, kept in one heap swept by one task: a timer costs one heap entry
//! (a time and a weak reference) instead of a task. Used for token expiries (`expiry`) and
//! for sockets parked for recovery (`parking`). Items that went away before their time are
//! skipped when due, and shed in bulk whenever the queue has doubled since the last such
//! sweep, so a queue of long deadlines does not grow without bound.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

/// Queues smaller than this are never compacted.
const COMPACT_MIN: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
