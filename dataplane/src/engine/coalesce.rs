//! Write coalescing under sustained fan-out load (`engine.writeCoalescingDelay`).
//!
//! A write-combining scope ([`super::cork`]) ends with a *write round*: one write per session
//! it touched. A node that keeps up writes every broadcast on its own, one system call and
//! one wake-up of the client per delivery, even when the next broadcast to the same room is
//! a few milliseconds away. When write rounds take over half of the node's time and scopes
//! follow each other closer than the configured delay, a session's writes take turns instead
//! ([`super::stagger`]): each is written at the end of every few scopes, with the frames of
//! all of them, and no frame waits longer than the delay. Each write carries several
//! broadcasts, as a node that has fallen behind would write them, but without falling behind
//! first, and each scope writes only its turn's share of the sessions. A node that is not
//! busy, or whose broadcasts are far apart, never waits. Like Nagle's algorithm (or Kafka's
//! `linger.ms`), it trades a bounded latency for fewer system calls; bench/PROFILE.md has the
//! measurements.
//!
//! [`Load`] is the decision, as plain data; the turns are plain data too; the rest is the
//! task that bounds the wait. The load is measured per process: the rounds of every engine in
//! it share the same CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::settings::Coalescing;
use super::stagger::{turn_hash, turns_for, Turns};

/// Something that queued writes during a corked scope and writes them at its end.
pub trait Flush: Send + Sync {
    /// Writes what was deferred (called once per `defer`, at the end of the scope or, under
    /// load, of a coalescing delay).
    fn flush(&self);
    /// When and how long its writes may wait under load.
    fn coalescing(&self) -> Coalescing;
}

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.2;
/// Rounds start waiting above `Coalescing::load` of the time spent writing, and stop below
/// this fraction of it (a waiting round writes less often, so its share falls).
const LEAVE: f64 = 0.4;

/// The load that decides whether rounds wait: moving averages of the gap between scopes
/// that write and of the share of time spent in write rounds.
#[derive(Debug, Clone)]
pub(super) struct Load {
    last_scope: Option<Instant>,
    /// Seconds between the ends of consecutive scopes that wrote (none measured yet: `None`).
    scope_gap: Option<f64>,
    last_round: Option<Instant>,
    /// Share of the time between round starts spent writing, 0 to 1.
    duty: f64,
    waiting: bool,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    const fn new() -> Self {
        Self {
            last_scope: None,
            scope_gap: None,
            last_round: None,
            duty: 0.0,
            waiting: false,
        }
    }

    /// A scope with writes ended at `at`: returns whether its round waits.
    pub(super) fn scope_ended(&mut self, at: Instant, how: Coalescing) -> bool {
        if let Some(prev) = self.last_scope {
            let gap = at.saturating_duration_since(prev).as_secs_f64();
            self.scope_gap = Some(
                self.scope_gap
                    .map_or(gap, |g| (1.0 - ALPHA) * g + ALPHA * gap),
            );
        }
        self.last_scope = Some(at);
        let (max, gap) = (how.delay.as_secs_f64(), self.scope_gap.unwrap_or(f64::MAX));
        self.waiting = if max == 0.0 {
            false
        } else if self.waiting {
            self.duty >= LEAVE * how.load && gap <= max
        } else {
            self.duty >= how.load && gap < max
        };
        self.waiting
    }

    /// The moving average of the gaps between scopes that wrote (zero before any).
    pub(super) fn gap(&self) -> Duration {
        Duration::from_secs_f64(self.scope_gap.unwrap_or(0.0).clamp(0.0, 3600.0))
    }

    /// A write round started at `start` and took `took`.
    pub(super) fn round_done(&mut self, start: Instant, took: Duration) {
        if let Some(prev) = self.last_round {
            let gap = start.saturating_duration_since(prev).as_secs_f64();
            let share = if gap > 0.0 {
                (took.as_secs_f64() / gap).min(1.0)
            } else {
                1.0
            };
            self.duty = (1.0 - ALPHA) * self.duty + ALPHA * share;
        }
        self.last_round = Some(start);
    }
}

struct State {
    load: Load,
    /// The settings of the last scope that deferred a session.
    how: Coalescing,
    /// Sessions whose writes wait for their turn.
    turns: Turns<Arc<dyn Flush>>,
    /// A task enforces the delay on what waits.
    armed: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    load: Load::new(),
    how: Coalescing::OFF,
    turns: Turns::new(),
    armed: false,
});

/// Scopes whose writes took turns (`roomcast_write_rounds_coalesced_total`).
static COALESCED: AtomicU64 = AtomicU64::new(0);

/// Write rounds (scopes) whose writes took turns under load, since the process started.
pub fn coalesced_rounds() -> u64 {
    COALESCED.load(Ordering::Relaxed)
}

/// Ends a scope that made `pushes` pushes: writes `deferred` now, or, under load, lets its
/// writes take turns (`stagger`) and writes whatever's turn it is. A scope with one push (an
/// answer to a client's own packet: a handshake, an ack) neither waits nor counts: waiting
/// would merge nothing. The settings are the first session's (a scope's sessions belong to
/// one engine), or the last ones seen when every push joined a write already waiting.
pub(super) fn end_scope(deferred: &mut Vec<Arc<dyn Flush>>, pushes: usize) {
    if pushes < 2 {
        write(deferred, None);
        return;
    }
    let own = deferred.first().map(|first| first.coalescing());
    if own.is_some_and(|how| how.delay.is_zero()) {
        write(deferred, None);
        return;
    }
    let now = Instant::now();
    let mut state = STATE.lock();
    if let Some(own) = own {
        state.how = own;
    }
    let how = state.how;
    if how.delay.is_zero() || !state.load.scope_ended(now, how) {
        drop(state);
        write(deferred, Some(now));
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        drop(state);
        write(deferred, Some(now));
        return;
    };
    COALESCED.fetch_add(1, Ordering::Relaxed);
    let turns = turns_for(how.delay, state.load.gap());
    let hash = |s: &Arc<dyn Flush>| turn_hash(Arc::as_ptr(s));
    state
        .turns
        .scope_ended(deferred, hash, turns, now, how.delay);
    if !state.turns.is_empty() && !state.armed {
        state.armed = true;
        runtime.spawn(enforce_delay());
    }
    drop(state);
    write(deferred, Some(now));
}

/// Writes what has waited the delay, for as long as anything waits: the turns keep writes
/// apart while broadcasts go on; this bounds the wait when they stop.
async fn enforce_delay() {
    let mut last = WriteAll { done: false };
    let mut due = Vec::new();
    loop {
        let (deadline, delay) = {
            let mut state = STATE.lock();
            let delay = state.how.delay;
            match state.turns.deadline(delay) {
                Some(at) => (at, delay),
                None => {
                    state.armed = false;
                    last.done = true;
                    return;
                }
            }
        };
        tokio::time::sleep_until(deadline.into()).await;
        let now = Instant::now();
        STATE.lock().turns.overdue(&mut due, now, delay);
        write(&mut due, Some(now));
    }
}

/// Writes everything still waiting when the task is dropped unfinished: when the runtime
/// shuts down before the delay is over, nothing is left unwritten.
struct WriteAll {
    /// The task ended because nothing waits.
    done: bool,
}

impl Drop for WriteAll {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut all = Vec::new();
        {
            let mut state = STATE.lock();
            state.turns.all(&mut all);
            state.armed = false;
        }
        write(&mut all, None);
    }
}

/// One write round; measured (from `start`) when coalescing is on. Leaves `sessions` empty,
/// with its storage, for the caller to use again.
fn write(sessions: &mut Vec<Arc<dyn Flush>>, start: Option<Instant>) {
    if sessions.is_empty() {
        return;
    }
    for session in sessions.drain(..) {
        session.flush();
    }
    if let Some(start) = start {
        STATE.lock().load.round_done(start, start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOW: Coalescing = Coalescing {
        delay: Duration::from_millis(15),
        load: 0.5,
    };

    /// Scopes every `gap`, each followed by a round of `took`, `n` times from `t`.
    fn drive(load: &mut Load, t: &mut Instant, gap: Duration, took: Duration, n: usize) -> bool {
        let mut waiting = false;
        for _ in 0..n {
            *t += gap;
            waiting = load.scope_ended(*t, HOW);
            if !waiting {
                load.round_done(*t, took);
            }
        }
        waiting
    }

    #[test]
    fn a_busy_node_with_frequent_broadcasts_waits() {
        let (mut load, mut t) = (Load::default(), Instant::now());
        // Dense fan-out: a broadcast every 5 ms, 4.4 ms of writes each.
        assert!(drive(&mut load, &mut t, ms(5), us(4400), 20));
    }

    #[test]
    fn a_node_that_is_not_busy_never_waits() {
        let (mut load, mut t) = (Load::default(), Instant::now());
        // A cross-pod fan-out: 250 deliveries every 10 ms, 1.7 ms of writes.
        assert!(!drive(&mut load, &mut t, ms(10), us(1700), 200));
    }

    #[test]
    fn broadcasts_further_apart_than_the_delay_never_wait() {
        let (mut load, mut t) = (Load::default(), Instant::now());
        // Sparse fan-out: 70 ms of writes every 100 ms; waiting would merge nothing.
        assert!(!drive(&mut load, &mut t, ms(100), ms(70), 50));
    }

    #[test]
    fn zero_delay_turns_it_off() {
        let (mut load, mut t) = (Load::default(), Instant::now());
        for _ in 0..20 {
            t += ms(5);
            assert!(!load.scope_ended(t, Coalescing::OFF));
            load.round_done(t, us(4900));
        }
    }

    #[test]
    fn waiting_stops_when_the_load_goes() {
        let (mut load, mut t) = (Load::default(), Instant::now());
        assert!(drive(&mut load, &mut t, ms(5), us(4400), 20));
        // Waiting: one round per 15 ms carries three broadcasts (5 ms of writes): it goes on.
        for _ in 0..20 {
            for _ in 0..3 {
                t += ms(5);
                assert!(load.scope_ended(t, HOW));
            }
            load.round_done(t, ms(5));
        }
        // Broadcasts now come every 50 ms: the gap average passes the delay, waiting stops.
        let mut stopped = false;
        for _ in 0..20 {
            t += ms(50);
            if !load.scope_ended(t, HOW) {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        // And a quiet node (little writing) stops too, even with frequent scopes.
        let (mut load, mut t) = (Load::default(), Instant::now());
        assert!(drive(&mut load, &mut t, ms(5), us(4400), 20));
        let mut stopped = false;
        for _ in 0..40 {
            t += ms(5);
            if !load.scope_ended(t, HOW) {
                stopped = true;
                break;
            }
            load.round_done(t, us(100));
        }
        assert!(stopped);
    }

    #[test]
    fn load_zero_waits_whenever_broadcasts_are_frequent() {
        let how = Coalescing { load: 0.0, ..HOW };
        let (mut load, mut t) = (Load::default(), Instant::now());
        // The first scope has no gap to measure yet; the second one waits.
        t += ms(5);
        assert!(!load.scope_ended(t, how));
        load.round_done(t, us(10));
        t += ms(5);
        assert!(load.scope_ended(t, how));
        // Only broadcasts further apart than the delay stop it.
        for _ in 0..10 {
            t += ms(5);
            assert!(load.scope_ended(t, how));
            load.round_done(t, Duration::ZERO);
        }
        t += ms(100);
        assert!(!load.scope_ended(t, how));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }
}
