//! One application instance's link to this node: its outbox, the client sessions handed to
//! it and the requests it has in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::outbox::Outbox;
use super::proto::{hub_message::Kind, HubMessage, Reply};
use super::session::{AppSession, Uplink};

pub struct Link {
    /// Unique per link on this node (an instance that reconnects gets a new one).
    pub id: u64,
    /// The instance's id (`roomcast-app-instance`).
    pub instance: String,
    /// The IP the instance reached this node at (from the link's TCP connection).
    pub local_ip: Option<std::net::IpAddr>,
    pub outbox: Outbox,
    sessions: Mutex<HashMap<u64, Arc<AppSession>>>,
    next_session: AtomicU64,
    /// Sent `Drain`: takes no new sessions.
    draining: AtomicBool,
    /// Ended: takes nothing any more.
    closed: AtomicBool,
    pending: AtomicUsize,
    max_pending: usize,
}

impl Link {
    pub fn new(
        id: u64,
        instance: String,
        local_ip: Option<std::net::IpAddr>,
        outbox: Outbox,
        max_pending: usize,
    ) -> Self {
        Self {
            id,
            instance,
            local_ip,
            outbox,
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            max_pending,
        }
    }

    pub fn send(&self, kind: Kind) -> bool {
        self.outbox.push(HubMessage::of(kind))
    }

    /// This link as its sessions see it.
    pub fn uplink(self: &Arc<Self>) -> std::sync::Weak<dyn Uplink> {
        let link: Arc<dyn Uplink> = self.clone();
        Arc::downgrade(&link)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether new sessions may be handed to this link.
    pub fn takes_sessions(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Registers a session under a fresh handle; `None` once the link is closed.
    pub fn add_session(
        &self,
        make: impl FnOnce(u64) -> Arc<AppSession>,
    ) -> Option<Arc<AppSession>> {
        let mut sessions = self.sessions.lock();
        if self.is_closed() {
            return None;
        }
        let handle = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = make(handle);
        sessions.insert(handle, session.clone());
        Some(session)
    }

    pub fn session(&self, handle: u64) -> Option<Arc<AppSession>> {
        self.sessions.lock().get(&handle).cloned()
    }

    pub fn remove_session(&self, handle: u64) {
        self.sessions.lock().remove(&handle);
    }

    /// Ends the link: no new sessions; returns those it held, for their clients to be
    /// disconnected.
    pub fn close(&self) -> Vec<Arc<AppSession>> {
        let mut sessions = self.sessions.lock();
        self.closed.store(true, Ordering::Release);
        self.outbox.end();
        sessions.drain().map(|(_, s)| s).collect()
    }

    /// Counts a request in flight; false at `appLink.maxPendingRequests` (answered with an
    /// error at once).
    pub fn begin_request(&self) -> bool {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Answers a request counted by [`Link::begin_request`].
    pub fn answer(&self, reply: Reply) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.send(Kind::Reply(reply));
    }

    /// Answers a request that was not counted (answered at once).
    pub fn reply(&self, reply: Reply) {
        self.send(Kind::Reply(reply));
    }

    /// Answers a request that was refused before it began.
    pub fn refuse(&self, request: u64, error: String) {
        self.reply(Reply {
            request,
            error,
            ..Reply::default()
        });
    }
}

impl Uplink for Link {
    fn send(&self, kind: Kind) -> bool {
        Link::send(self, kind)
    }

    fn send_for(&self, kind: Kind, queued: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> bool {
        self.outbox.push_for(HubMessage::of(kind), Some(queued))
    }

    fn remove_session(&self, handle: u64) {
        Link::remove_session(self, handle);
    }
}
