//! Server pings for every session of a node, driven by one task and two queues instead of a
//! timer task per session.
//!
//! Every session pings on the same schedule (`pingInterval` after the handshake or after its
//! last pong) and every ping has the same timeout, so deadlines arrive in the order they are
//! queued: a FIFO per kind is a complete timer. An idle session costs one queue entry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::outbox::Frame;
use super::session::Session;

type Entry = (Instant, Weak<Session>);

pub(super) struct Heartbeats {
    interval: Duration,
    timeout: Duration,
    /// When each session is due for its next ping.
    pings: Mutex<VecDeque<Entry>>,
    /// When each outstanding ping must have been answered.
    checks: Mutex<VecDeque<Entry>>,
    wake: Notify,
    started: AtomicBool,
}

impl Heartbeats {
    pub fn new(interval: Duration, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            interval,
            timeout,
            pings: Mutex::new(VecDeque::new()),
            checks: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            started: AtomicBool::new(false),
        })
    }

    /// Schedules the session's next ping one interval from now (at the handshake and after
    /// each pong).
    pub fn schedule(self: &Arc<Self>, session: &Arc<Session>) {
        let was_empty = {
            let mut pings = self.pings.lock();
            pings.push_back((Instant::now() + self.interval, Arc::downgrade(session)));
            pings.len() == 1
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Self::drive(self.clone()));
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// The one timer task of the node (it lives as long as the process).
    async fn drive(self: Arc<Self>) {
        loop {
            let next = self.tick(Instant::now());
            let wake = self.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = wake => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Sends the pings and enforces the timeouts that are due; returns the next deadline.
    fn tick(&self, now: Instant) -> Option<Instant> {
        loop {
            let due = pop_due(&self.pings, now);
            let Some((at, session)) = due else { break };
            let Some(session) = session.upgrade() else {
                continue;
            };
            if session.is_closed() {
                continue;
            }
            // Deadlines count from the scheduled ping so timer lateness never adds up, but a
            // ping sent late still leaves the client half its timeout.
            let deadline = (at + self.timeout).max(now + self.timeout / 2);
            session.set_pong_deadline(Some(deadline));
            session.outbox.push_control(Frame::PING);
            self.checks
                .lock()
                .push_back((deadline, Arc::downgrade(&session)));
        }
        while let Some((_, session)) = pop_due(&self.checks, now) {
            if let Some(session) = session.upgrade() {
                session.close_if_ping_overdue_at(now);
            }
        }
        let next_ping = self.pings.lock().front().map(|(at, _)| *at);
        let next_check = self.checks.lock().front().map(|(at, _)| *at);
        match (next_ping, next_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn pop_due(queue: &Mutex<VecDeque<Entry>>, now: Instant) -> Option<Entry> {
    let mut q = queue.lock();
    match q.front() {
        Some((at, _)) if *at <= now => q.pop_front(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportKind;
    use crate::engine::packet::Packet;

    fn session() -> Arc<Session> {
        Session::detached("sid", TransportKind::Websocket)
    }

    fn drained(session: &Session) -> Vec<Frame> {
        let mut out = Vec::new();
        while session.outbox.drain_into(&mut out) {}
        out
    }

    #[tokio::test(start_paused = true)]
    async fn pings_on_schedule_and_times_out_without_pong() {
        let hb = Heartbeats::new(Duration::from_millis(300), Duration::from_millis(200));
        let s = session();
        hb.schedule(&s);
        let start = Instant::now();
        assert_eq!(
            hb.tick(start + Duration::from_millis(299)),
            Some(start + Duration::from_millis(300))
        );
        assert!(drained(&s).is_empty(), "no ping before the interval");
        hb.tick(start + Duration::from_millis(300));
        assert_eq!(drained(&s), vec![Frame::PING]);
        hb.tick(start + Duration::from_millis(499));
        assert!(!s.is_closed());
        hb.tick(start + Duration::from_millis(500));
        assert!(
            s.is_closed(),
            "no pong within the timeout closes the session"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_clears_the_deadline() {
        let hb = Heartbeats::new(Duration::from_millis(300), Duration::from_millis(200));
        let s = session();
        hb.schedule(&s);
        let start = Instant::now();
        hb.tick(start + Duration::from_millis(300));
        // The session has no engine here, so the pong only clears the deadline.
        s.on_packet(Packet::Pong(Default::default()));
        hb.tick(start + Duration::from_millis(600));
        assert!(!s.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_sessions_are_skipped() {
        let hb = Heartbeats::new(Duration::from_millis(10), Duration::from_millis(10));
        let s = session();
        hb.schedule(&s);
        drop(s);
        assert_eq!(hb.tick(Instant::now() + Duration::from_secs(1)), None);
    }
}
