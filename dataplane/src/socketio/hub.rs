//! The Socket.IO server of one node: configured namespaces, the application handler and
//! the registry of live namespaces.

use std::sync::Arc;

use super::connection::Factory;
use super::handler::Handler;
use super::namespace::{event_frames, Fanout, Namespace, NamespaceLimits};
use super::payload::Payload;
use super::recovery::{Recovery, SessionState, Tail, Unrecoverable};
use super::registry::Namespaces;
use super::rooms::Selector;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::{ConnectionFactory, OutboxLimits};

/// Handle on the Socket.IO server, for application code and the management API.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Namespaces>,
    factory: Arc<Factory>,
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
            max_room_name_bytes: config.limits.max_room_name_bytes,
            first_ack_id: if config.app_link.enabled() {
                super::namespace::HUB_ACK_BASE
            } else {
                0
            },
        };
        let inner = Arc::new(Namespaces::new(config, handler, authenticator, limits));
        for ns in &inner.config.socketio.namespaces {
            if !ns.name.contains('*') {
                let _ = inner.namespace(&ns.name);
            }
        }
        let factory = Arc::new(Factory::new(inner.clone()));
        Self { inner, factory }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A namespace that exists (configured, or created by a client connecting to it).
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner.get(name)
    }

    /// Every live namespace, sorted by name.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner.all()
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
            let offset = match (&self.inner.parking, volatile) {
                (Some(p), false) => Some(p.recovery.next_offset()),
                _ => None,
            };
            let frames = event_frames(nsp, event, payload, offset.as_deref());
            fanout.forward(nsp, selector, &frames, volatile, offset.as_deref());
        }
        0
    }

    /// Connection state recovery, when on.
    pub fn recovery(&self) -> Option<&Arc<Recovery>> {
        self.inner.parking.as_ref().map(|p| &p.recovery)
    }

    /// Sockets parked for recovery on this node.
    pub fn parked_count(&self) -> usize {
        self.inner.parking.as_ref().map_or(0, |p| p.parked())
    }

    /// For a node that wants to take session `pid` over: its state, if this node holds
    /// it. A live one is disconnected first (its client is reconnecting elsewhere).
    pub async fn describe_session(&self, pid: &str) -> Option<SessionState> {
        let parking = self.inner.parking.as_ref()?;
        let socket = parking.parked_session(pid).await?;
        let ns = socket.namespace()?;
        if !socket.is_parked() {
            return None;
        }
        ns.session_state(&socket)
    }

    /// Hands session `pid` to the node asking, which has joined its rooms: once every node
    /// delivers to that node (a barrier), what the client missed after `offset`; the
    /// session then leaves this node.
    pub async fn take_session(
        &self,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<Tail, Unrecoverable> {
        let parking = self
            .inner
            .parking
            .as_ref()
            .ok_or(Unrecoverable::UnknownSession)?;
        // A draining node waits for the hand-overs it began (and refuses new ones).
        if !parking.recovery.begin_hand_over() {
            return Err(Unrecoverable::Busy);
        }
        self.rooms_propagated().await;
        let tail = Self::hand_over(parking, pid, offset, false);
        parking.recovery.end_hand_over();
        if tail.is_ok() {
            parking
                .recovery
                .stats
                .handed_over
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tail
    }

    /// Claims the parked session `pid` and hands it over (see `Namespace::hand_over`).
    fn hand_over(
        parking: &super::parking::Parking,
        pid: &str,
        offset: Option<&str>,
        whole: bool,
    ) -> Result<Tail, Unrecoverable> {
        let socket = parking.lookup(pid).ok_or(Unrecoverable::UnknownSession)?;
        let ns = socket.namespace().ok_or(Unrecoverable::UnknownSession)?;
        if !parking.claim(&socket) {
            return Err(Unrecoverable::Busy);
        }
        ns.hand_over(&socket, offset, whole)
    }

    /// A draining node's parked sessions, to hand over.
    pub fn parked_sessions(&self) -> Vec<SessionState> {
        let Some(parking) = &self.inner.parking else {
            return Vec::new();
        };
        parking
            .parked_sockets()
            .iter()
            .filter_map(|s| s.namespace().and_then(|ns| ns.session_state(s)))
            .collect()
    }

    /// Takes over sessions of a draining node: each is added parked (joining its rooms),
    /// waiting for its tail. Returns the pids added.
    pub fn adopt_sessions(&self, states: &[SessionState]) -> Vec<String> {
        let Some(parking) = &self.inner.parking else {
            return Vec::new();
        };
        let remaining = parking.recovery.max_disconnection();
        let mut adopted = Vec::new();
        for state in states {
            if !super::recovery::ids::is_pid(&state.pid) || parking.lookup(&state.pid).is_some() {
                continue;
            }
            let Some(ns) = self.inner.namespace(&state.nsp) else {
                continue;
            };
            let pid: Arc<str> = Arc::from(state.pid.as_str());
            parking.set_pending(&pid, true);
            match ns.add_parked(state, remaining) {
                Some(_) => adopted.push(state.pid.clone()),
                None => parking.set_pending(&pid, false),
            }
        }
        parking
            .recovery
            .stats
            .adopted
            .fetch_add(adopted.len() as u64, std::sync::atomic::Ordering::Relaxed);
        adopted
    }

    /// The draining side, after the adopting node's joins propagated: every node delivers
    /// to the adopter, so this node's view of session `pid` is final. Returns its tail and
    /// lets it go.
    pub fn release_session(&self, pid: &str) -> Result<Tail, Unrecoverable> {
        let parking = self
            .inner
            .parking
            .as_ref()
            .ok_or(Unrecoverable::UnknownSession)?;
        Self::hand_over(parking, pid, None, true)
    }

    /// The adopting side: the tail of an adopted session arrived (or `None`: the draining
    /// node could not hand it over, and the adopted copy is dropped).
    pub fn commit_session(&self, pid: &str, tail: Option<Tail>) {
        let Some(parking) = &self.inner.parking else {
            return;
        };
        let Some(socket) = parking.lookup(pid) else {
            return;
        };
        if let Some(ns) = socket.namespace() {
            match tail {
                Some(tail) => ns.set_tail(&socket, tail),
                None => {
                    if parking.claim(&socket) {
                        ns.drop_parked(&socket);
                    }
                }
            }
        }
        parking.set_pending(&Arc::from(pid), false);
    }

    /// Resolves once every other node has heard of this node's room changes so far.
    pub async fn rooms_propagated(&self) {
        if let Some(fanout) = self.inner.fanout.get() {
            fanout.rooms_propagated().await;
        }
    }

    /// What the engine calls to create the Socket.IO side of each new session.
    pub fn connection_factory(&self) -> Arc<dyn ConnectionFactory> {
        self.factory.clone()
    }
}
