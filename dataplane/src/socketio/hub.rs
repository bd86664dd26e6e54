//! The Socket.IO server of one node: configured namespaces, the application handler and
//! the registry of live namespaces.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::connection::Connection;
use super::handler::Handler;
use super::namespace::{event_frames, Fanout, FanoutCell, Namespace, NamespaceLimits};
use super::{Payload, Selector};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::{
    CloseReason, ConnectionFactory, ConnectionHandler, HandshakeInfo, OutboxLimits, Session,
};

/// Whether `name` matches a namespace pattern, where `*` matches any run of characters.
pub fn namespace_matches(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(head) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let tail = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= tail.len() && remaining.ends_with(tail)
}

pub(crate) struct HubInner {
    pub config: Arc<Config>,
    pub handler: Arc<dyn Handler>,
    pub authenticator: Arc<dyn Authenticator>,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    limits: NamespaceLimits,
    connect_deadlines: Arc<ConnectDeadlines>,
    fanout: FanoutCell,
}

/// Sessions that must join a namespace before a deadline. Every session gets the same
/// timeout, so deadlines arrive in order and one queue swept by one task serves them all
/// (a few bytes per pending session instead of a timer task each).
type Deadline = (Instant, Weak<Connection>, Weak<Session>);

#[derive(Default)]
struct ConnectDeadlines {
    queue: Mutex<VecDeque<Deadline>>,
    sweeper_started: AtomicBool,
}

impl ConnectDeadlines {
    fn push(self: &Arc<Self>, timeout: Duration, conn: &Arc<Connection>, session: &Arc<Session>) {
        let deadline = Instant::now() + timeout;
        self.queue
            .lock()
            .push_back((deadline, Arc::downgrade(conn), Arc::downgrade(session)));
        if !self.sweeper_started.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let Some(this) = weak.upgrade() else { return };
                    let next = this.sweep(Instant::now());
                    drop(this);
                    tokio::time::sleep_until(
                        next.unwrap_or_else(|| Instant::now() + timeout).into(),
                    )
                    .await;
                }
            });
        }
    }

    /// Closes the due sessions that joined no namespace; returns the next deadline.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        loop {
            let due = {
                let mut queue = self.queue.lock();
                match queue.front() {
                    Some((deadline, _, _)) if *deadline <= now => queue.pop_front(),
                    Some((deadline, _, _)) => return Some(*deadline),
                    None => return None,
                }
            };
            if let Some((_, conn, session)) = due {
                if let (Some(conn), Some(session)) = (conn.upgrade(), session.upgrade()) {
                    if !conn.has_namespaces() {
                        session.close(CloseReason::ConnectTimeout);
                    }
                }
            }
        }
    }
}

impl HubInner {
    pub fn namespace_allowed(&self, name: &str) -> bool {
        self.config
            .socketio
            .namespaces
            .iter()
            .any(|ns| namespace_matches(&ns.name, name))
    }

    /// The namespace of that name, created on first use.
    pub fn namespace(&self, name: &str) -> Arc<Namespace> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return ns.clone();
        }
        self.namespaces
            .write()
            .entry(name.to_string())
            .or_insert_with(|| {
                Namespace::new(name, self.limits, self.handler.clone(), self.fanout.clone())
            })
            .clone()
    }
}

/// Handle on the Socket.IO server, for application code and the management API.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl Hub {
    pub fn new(
        config: Arc<Config>,
        handler: Arc<dyn Handler>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Self {
        let limits = NamespaceLimits {
            outbox: OutboxLimits {
                max_frames: config.limits.max_outbound_frames,
                max_bytes: config.limits.max_outbound_bytes,
            },
            max_pending_acks: config.limits.max_pending_acks,
            max_rooms_per_socket: config.limits.max_rooms_per_socket,
        };
        let inner = Arc::new(HubInner {
            config,
            handler,
            authenticator,
            namespaces: RwLock::new(HashMap::new()),
            limits,
            connect_deadlines: Arc::new(ConnectDeadlines::default()),
            fanout: FanoutCell::default(),
        });
        for ns in &inner.config.socketio.namespaces {
            if !ns.name.contains('*') {
                inner.namespace(&ns.name);
            }
        }
        Self { inner }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A namespace that exists (configured, or created by a client connecting to it).
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner.namespaces.read().get(name).cloned()
    }

    /// Every live namespace, sorted by name.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        let mut all: Vec<_> = self.inner.namespaces.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Makes every broadcast of this hub reach other nodes through `fanout` (the cluster's
    /// peer links). Set once; returns false when a fan-out was already set.
    pub fn set_fanout(&self, fanout: Arc<dyn Fanout>) -> bool {
        self.inner.fanout.set(fanout).is_ok()
    }

    /// Emits an event to the sockets `selector` picks in namespace `nsp`, on every node of
    /// the cluster. A namespace no client opened on this node yet has no local sockets, but
    /// other nodes may have some, so the event is still forwarded. Returns how many sockets
    /// of this node it was queued for.
    pub fn broadcast(
        &self,
        nsp: &str,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        volatile: bool,
    ) -> usize {
        if let Some(ns) = self.of(nsp) {
            return ns.broadcast(selector, event, payload, volatile);
        }
        if let Some(fanout) = self.inner.fanout.get() {
            fanout.forward(nsp, selector, &event_frames(nsp, event, payload), volatile);
        }
        0
    }

    /// What the engine calls to create the Socket.IO side of each new session.
    pub fn connection_factory(&self) -> Arc<dyn ConnectionFactory> {
        Arc::new(Factory(self.inner.clone()))
    }
}

struct Factory(Arc<HubInner>);

impl ConnectionFactory for Factory {
    fn open(&self, session: &Arc<Session>, handshake: HandshakeInfo) -> Arc<dyn ConnectionHandler> {
        let conn = Connection::new(self.0.clone(), session, handshake);
        // A session that joins no namespace within `connectTimeout` is closed.
        let timeout = Duration::from_millis(self.0.config.socketio.connect_timeout);
        self.0.connect_deadlines.push(timeout, &conn, session);
        Arc::new(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_matches as m;

    #[test]
    fn namespace_patterns() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/dyn-*", "/dyn-1"));
        assert!(m("/dyn-*", "/dyn-"));
        assert!(!m("/dyn-*", "/dy"));
        assert!(m("*", "/anything"));
        assert!(m("/t/*/chat", "/t/acme/chat"));
        assert!(!m("/t/*/chat", "/t/acme/chatx"));
        assert!(m("/a*b*c", "/aXbYc"));
        assert!(!m("/a*bc", "/abc/x"));
        assert!(m("/a*a", "/aa"));
    }
}
