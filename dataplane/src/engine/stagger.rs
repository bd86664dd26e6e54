//! Staggered turns for the writes that wait under fan-out load (`coalesce`), as plain data.
//!
//! Letting every waiting write go out together, when a delay is over, makes each write carry
//! several broadcasts but costs latency twice: the first broadcast waits the whole delay, and
//! the round then reaches every socket of the room at once, so the last socket written waits
//! for a whole room's worth of system calls. Turns spread the same saving over time instead.
//! With `k` turns, a socket is written at the end of every `k`-th broadcast, in the turn its
//! hash gives it, and carries the `k` broadcasts since its last write; each broadcast's end
//! writes only about a `k`-th of the room. A frame waits at most `k - 1` broadcasts (and never
//! more than the delay: [`Turns::overdue`]), and each write costs what it did before.
//!
//! `T` is what is written (a session, in practice); tests use numbers.

use std::time::{Duration, Instant};

/// Most turns: a socket's write carries at most this many broadcasts of one room.
pub(super) const MAX_TURNS: u64 = 16;

/// How many turns keep every frame within `delay`, for broadcasts `gap` apart: a frame waits
/// at most `turns - 1` gaps. At least 2 (one turn would merge nothing).
pub(super) fn turns_for(delay: Duration, gap: Duration) -> u64 {
    if gap.is_zero() {
        return MAX_TURNS;
    }
    let gaps = delay.as_nanos() / gap.as_nanos();
    u64::try_from(gaps)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
        .clamp(2, MAX_TURNS)
}

/// The turn of something written: a hash of its address, the same for as long as it lives,
/// so that a socket keeps its turn from one broadcast to the next.
pub(super) fn turn_hash<T: ?Sized>(item: *const T) -> u64 {
    // Allocations are aligned: drop the low bits, then spread the rest (Fibonacci hashing).
    ((item.cast::<()>() as usize as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

struct Waiting<T> {
    item: T,
    /// When it started waiting.
    since: Instant,
    /// The scope at whose end it is written.
    due: u64,
}

/// Writes waiting for their turn, oldest first.
pub(super) struct Turns<T> {
    waiting: Vec<Waiting<T>>,
    /// The storage `waiting` is sorted into, kept to avoid allocating per scope.
    spare: Vec<Waiting<T>>,
    /// Scopes ended while writes waited.
    scope: u64,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Turns<T> {
    pub(super) const fn new() -> Self {
        Self {
            waiting: Vec::new(),
            spare: Vec::new(),
            scope: 0,
        }
    }

    /// Number of writes waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// A scope whose writes wait ended at `now`, with `turns` turns. `io` holds the scope's
    /// new writes, whose turns `hash` gives ([`turn_hash`]); on return it holds what is to be
    /// written now: those whose turn this is, new or waiting, and those that waited `delay`
    /// already.
    pub(super) fn scope_ended(
        &mut self,
        io: &mut Vec<T>,
        hash: impl Fn(&T) -> u64,
        turns: u64,
        now: Instant,
        delay: Duration,
    ) {
        self.scope = self.scope.wrapping_add(1);
        let (scope, turns) = (self.scope, turns.max(1));
        let mut i = 0;
        while i < io.len() {
            // The next scope, from this one on, that falls in the item's turn.
            let wait = (hash(&io[i]) % turns + turns - scope % turns) % turns;
            if wait == 0 {
                i += 1;
            } else {
                let item = io.swap_remove(i);
                self.waiting.push(Waiting {
                    item,
                    since: now,
                    due: scope.wrapping_add(wait),
                });
            }
        }
        self.take(io, |w| w.due == scope || now >= w.since + delay);
    }

    /// Moves what has waited `delay` by `now` into `out`.
    pub(super) fn overdue(&mut self, out: &mut Vec<T>, now: Instant, delay: Duration) {
        self.take(out, |w| now >= w.since + delay);
    }

    /// Moves everything waiting into `out`.
    pub(super) fn all(&mut self, out: &mut Vec<T>) {
        self.take(out, |_| true);
    }

    /// When the oldest waiting write will have waited `delay`.
    pub(super) fn deadline(&self, delay: Duration) -> Option<Instant> {
        self.waiting.first().map(|w| w.since + delay)
    }

    /// Moves the waiting writes `now` picks into `out`, keeping the others in their order.
    fn take(&mut self, out: &mut Vec<T>, now: impl Fn(&Waiting<T>) -> bool) {
        if self.waiting.is_empty() {
            return;
        }
        let mut keep = std::mem::take(&mut self.spare);
        for w in self.waiting.drain(..) {
            if now(&w) {
                out.push(w.item);
            } else {
                keep.push(w);
            }
        }
        self.spare = std::mem::replace(&mut self.waiting, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Items are their own hashes.
    fn own(item: &u64) -> u64 {
        *item
    }

    /// Items 0..n.
    fn scope(turns: &mut Turns<u64>, n: u64, k: u64, at: Instant) -> Vec<u64> {
        let mut out: Vec<u64> = (0..n).collect();
        turns.scope_ended(&mut out, own, k, at, DELAY);
        out.sort_unstable();
        out
    }

    #[test]
    fn turns_keep_every_frame_within_the_delay() {
        assert_eq!(turns_for(ms(10), ms(5)), 3);
        assert_eq!(turns_for(ms(10), ms(6)), 2);
        assert_eq!(turns_for(ms(10), ms(20)), 2);
        assert_eq!(turns_for(ms(10), Duration::from_micros(100)), MAX_TURNS);
        assert_eq!(turns_for(ms(10), Duration::ZERO), MAX_TURNS);
    }

    #[test]
    fn each_scope_writes_one_turn_and_each_item_once_per_k_scopes() {
        let (mut turns, t0) = (Turns::default(), Instant::now());
        let mut written = vec![0u32; 9];
        for s in 0..9u32 {
            // Every item is pushed to by every scope, but one already waiting is not new.
            let at = t0 + ms(u64::from(s));
            let mut io: Vec<u64> = (0..9u64).filter(|i| !waiting(&turns, *i)).collect();
            turns.scope_ended(&mut io, own, 3, at, DELAY);
            assert_eq!(io.len(), 3, "scope {s} writes a third");
            for i in io {
                written[usize::try_from(i).unwrap_or(0)] += 1;
            }
        }
        assert!(written.iter().all(|n| *n == 3), "{written:?}");
    }

    fn waiting(turns: &Turns<u64>, item: u64) -> bool {
        turns.waiting.iter().any(|w| w.item == item)
    }

    #[test]
    fn nothing_waits_past_the_delay() {
        let (mut turns, t0) = (Turns::default(), Instant::now());
        let now = scope(&mut turns, 8, 4, t0);
        assert_eq!(now, vec![1, 5]);
        assert_eq!(turns.len(), 6);
        assert_eq!(turns.deadline(DELAY), Some(t0 + DELAY));
        let mut out = Vec::new();
        turns.overdue(&mut out, t0 + ms(9), DELAY);
        assert!(out.is_empty());
        turns.overdue(&mut out, t0 + DELAY, DELAY);
        assert_eq!(out.len(), 6);
        assert_eq!(turns.len(), 0);
        assert_eq!(turns.deadline(DELAY), None);
        // A scope that ends late writes the overdue ones with its own turn.
        let _ = scope(&mut turns, 8, 4, t0 + ms(20));
        let mut io = Vec::new();
        turns.scope_ended(&mut io, own, 4, t0 + ms(31), DELAY);
        assert_eq!(io.len(), 6);
    }

    #[test]
    fn all_empties_the_waiting_list() {
        let (mut turns, t0) = (Turns::default(), Instant::now());
        let _ = scope(&mut turns, 100, 5, t0);
        assert_eq!(turns.len(), 80);
        let mut out = Vec::new();
        turns.all(&mut out);
        assert_eq!(out.len(), 80);
        assert_eq!(turns.len(), 0);
    }

    #[test]
    fn hashes_of_neighbouring_allocations_spread_over_the_turns() {
        let items: Vec<Box<[u8; 200]>> = (0..3000).map(|_| Box::new([0u8; 200])).collect();
        let mut per_turn = [0u32; 3];
        for item in &items {
            let h = turn_hash(std::ptr::from_ref::<[u8; 200]>(item));
            per_turn[usize::try_from(h % 3).unwrap_or(0)] += 1;
        }
        assert!(
            per_turn.iter().all(|n| (800..1200).contains(n)),
            "{per_turn:?}"
        );
    }
}
