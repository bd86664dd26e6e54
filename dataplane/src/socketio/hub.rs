//! The Socket.IO server of one node: configured namespaces, the application handler and
//! the registry of live namespaces.

use std::sync::Arc;

use super::connection::Factory;
use super::handler::Handler;
use super::namespace::{event_frames, Fanout, Namespace, NamespaceLimits};
use super::payload::Payload;
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
            fanout.forward(nsp, selector, &event_frames(nsp, event, payload), volatile);
        }
        0
    }

    /// What the engine calls to create the Socket.IO side of each new session.
    pub fn connection_factory(&self) -> Arc<dyn ConnectionFactory> {
        self.factory.clone()
    }
}
