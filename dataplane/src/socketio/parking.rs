//! Sockets kept for connection state recovery: every socket of a hub with recovery on is
//! known by its private session id, and a socket whose connection was lost stays *parked*
//! in its namespace (in its rooms, its packets logged) until it is recovered, handed to
//! another node, or `maxDisconnectionDuration` passes.
//!
//! Their deadlines sit in one [`Deadlines`] queue swept by one task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::deadlines::Deadlines;
use super::recovery::Recovery;
use super::socket::{DisconnectReason, Joining, Socket};

pub(crate) struct Parking {
    pub recovery: Arc<Recovery>,
    by_pid: Mutex<HashMap<Arc<str>, Weak<Socket>>>,
    queue: Mutex<Deadlines<Socket>>,
    parked: AtomicUsize,
    sweeper_started: AtomicBool,
    /// Sessions taken over from a draining node whose tail has not come yet.
    pending: Mutex<std::collections::HashSet<Arc<str>>>,
    /// What every parked socket points to instead of its closed engine session and its
    /// handshake: a parked socket keeps only what recovery needs.
    placeholder: Arc<crate::engine::Session>,
    unknown_handshake: Arc<crate::engine::HandshakeInfo>,
}

impl Parking {
    pub fn new(recovery: Arc<Recovery>) -> Arc<Self> {
        Arc::new(Self {
            recovery,
            by_pid: Mutex::new(HashMap::new()),
            queue: Mutex::default(),
            parked: AtomicUsize::new(0),
            sweeper_started: AtomicBool::new(false),
            pending: Mutex::default(),
            placeholder: crate::engine::Session::placeholder(),
            unknown_handshake: Arc::new(crate::engine::HandshakeInfo::unknown()),
        })
    }

    /// What a parked socket is made of: its id, claims and data, and for the rest (engine
    /// session, connection, handshake) shared stand-ins. A parked socket keeps only what
    /// recovery and the application's `disconnect` need.
    pub(super) fn parked_joining(
        &self,
        id: Arc<str>,
        claims: Option<serde_json::Value>,
        data: serde_json::Value,
    ) -> Joining {
        Joining {
            session: self.placeholder.clone(),
            conn: super::socket::no_transport(),
            handshake: self.unknown_handshake.clone(),
            auth: serde_json::Value::Null,
            claims,
            data,
            id: Some(id),
        }
    }

    /// The parked socket of session `pid`, once it is not waiting for its tail (a session
    /// taken over from a draining node). A live one is disconnected first (its client is the
    /// one reconnecting, elsewhere): that parks it.
    pub async fn parked_session(&self, pid: &str) -> Option<Arc<Socket>> {
        let mut socket = self.lookup(pid)?;
        if socket.connected() {
            socket.close_transport();
            socket = self.lookup(pid)?;
        }
        self.settled(pid).await.then_some(socket)
    }

    /// Makes `socket` findable by its pid.
    pub fn register(&self, pid: &Arc<str>, socket: &Arc<Socket>) {
        self.by_pid
            .lock()
            .insert(pid.clone(), Arc::downgrade(socket));
    }

    /// Forgets `pid` if it still names `socket`.
    pub fn forget(&self, pid: &str, socket: &Arc<Socket>) {
        let mut map = self.by_pid.lock();
        if map
            .get(pid)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(socket)))
        {
            map.remove(pid);
        }
    }

    /// The socket (live or parked) of session `pid`.
    pub fn lookup(&self, pid: &str) -> Option<Arc<Socket>> {
        self.by_pid.lock().get(pid).and_then(Weak::upgrade)
    }

    pub fn set_pending(&self, pid: &Arc<str>, pending: bool) {
        let mut set = self.pending.lock();
        if pending {
            set.insert(pid.clone());
        } else {
            set.remove(pid);
        }
    }

    /// Waits (a bounded time) until session `pid` is not waiting for its tail any more.
    pub async fn settled(&self, pid: &str) -> bool {
        for _ in 0..150 {
            if !self.pending.lock().contains(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Every parked socket (what a draining node hands over).
    pub fn parked_sockets(&self) -> Vec<Arc<Socket>> {
        self.by_pid
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| s.is_parked())
            .collect()
    }

    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Parks `socket` for `within` (the full window for a socket disconnected here);
    /// false when `recovery.maxSessions` are parked already.
    pub fn park(self: &Arc<Self>, socket: &Arc<Socket>, within: Duration) -> bool {
        let max = self.recovery.config.max_sessions;
        if self
            .parked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            tracing::warn!(socket = socket.id(), max, "session not kept for recovery: socketio.connectionStateRecovery.maxSessions reached");
            return false;
        }
        socket.set_parked(true);
        self.queue
            .lock()
            .push(Instant::now() + within, socket, Socket::is_parked);
        self.start_sweeper();
        true
    }

    /// Takes a parked socket out of the parked state; true for the one caller that now
    /// owns it (to recover, hand over or end it).
    pub fn claim(&self, socket: &Socket) -> bool {
        if socket.unpark() {
            self.parked.fetch_sub(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let idle = self.recovery.max_disconnection();
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let next = this.sweep(Instant::now());
                this.recovery.prune();
                drop(this);
                let wait = next.map_or(idle, |n| n.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
            }
        });
    }

    /// Ends the parked sockets whose time is up; returns the next deadline.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let (due, next) = self.queue.lock().due(now);
        for socket in due {
            if self.claim(&socket) {
                self.recovery.stats.expired.fetch_add(1, Ordering::Relaxed);
                self.end(&socket, DisconnectReason::Transport(socket.parked_for()));
            }
        }
        next
    }

    /// Ends a claimed socket: out of its rooms, the application told.
    pub fn end(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if let Some(pid) = socket.pid() {
            self.forget(&pid, socket);
        }
        socket.end_unparked(reason);
    }
}
