//! A namespace: its sockets, its rooms, and broadcasts over them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::handler::Handler;
use super::packet;
use super::payload::Payload;
use super::socket::{packet_frames, AckReply, AckWaiter, Socket, SocketError};
use crate::engine::{CloseReason, Frame, OutboxLimits, PushOutcome, Session};

/// Where a broadcast goes beyond this node: the cluster's peer links. A node that is not
/// part of a cluster has none, and its broadcasts stay local.
pub trait Fanout: Send + Sync {
    /// Sends an already encoded broadcast (`frames`: the packet text, then its binary
    /// attachments) to every other node, which delivers it to its own sockets in `nsp`
    /// that `selector` picks. Never blocks: a link that cannot take it drops it (and logs).
    fn forward(&self, nsp: &str, selector: &Selector, frames: &[Frame], volatile: bool);

    /// This node now has (`present`) or no longer has sockets in `room` of `nsp`: its first
    /// member joined or its last one left (a socket's own id room never counts). Called
    /// under the namespace's lock, in the order the changes happen, so it must only queue.
    fn room_changed(&self, _nsp: &str, _room: &str, _present: bool) {}

    /// Resolves once every other node has heard of the room changes this node made so far
    /// (so a broadcast sent from any node next reaches the sockets that just joined).
    fn rooms_propagated(&self) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// The hub's fan-out, shared by all its namespaces. Set once, after the hub exists (the
/// cluster is started with a handle on the hub), so it sits in a cell every namespace reads.
pub(super) type FanoutCell = Arc<OnceLock<Arc<dyn Fanout>>>;

/// Which sockets an operation applies to: those in any of `rooms` (all sockets when
/// empty) and in none of `except`. A socket id is also a room holding just that socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Selector {
    pub rooms: Vec<String>,
    pub except: Vec<String>,
}

impl Selector {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Self {
        Self {
            rooms: rooms.into_iter().map(Into::into).collect(),
            except: Vec::new(),
        }
    }

    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.except.extend(rooms.into_iter().map(Into::into));
        self
    }
}

/// Per-namespace limits, from `LimitsConfig`.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceLimits {
    pub outbox: OutboxLimits,
    pub max_pending_acks: usize,
    pub max_rooms_per_socket: usize,
}

/// The outcome of a broadcast that asked every recipient for an ack.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastAcks {
    /// How many sockets were sent the event (and so how many acks were expected).
    pub expected: usize,
    pub replies: Vec<AckReply>,
    /// True when the timeout passed before every expected ack arrived.
    pub timed_out: bool,
}

#[derive(Default)]
struct State {
    sockets: HashMap<Arc<str>, Arc<Socket>>,
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Socket>>>,
}

impl State {
    /// Calls `f` once for each socket the selector picks.
    fn for_each(&self, selector: &Selector, mut f: impl FnMut(&Arc<Socket>)) {
        let excluded: HashSet<*const Socket> = selector
            .except
            .iter()
            .flat_map(|room| self.members(room))
            .map(Arc::as_ptr)
            .collect();
        let mut visit = |socket: &Arc<Socket>| {
            if excluded.is_empty() || !excluded.contains(&Arc::as_ptr(socket)) {
                f(socket);
            }
        };
        match selector.rooms.as_slice() {
            [] => self.sockets.values().for_each(&mut visit),
            [room] => self.members(room).for_each(&mut visit),
            rooms => {
                // A socket in several target rooms still gets one copy.
                let mut seen = HashSet::new();
                for socket in rooms.iter().flat_map(|room| self.members(room)) {
                    if seen.insert(Arc::as_ptr(socket)) {
                        visit(socket);
                    }
                }
            }
        }
    }

    /// Members of a room, including the socket whose id is the room name.
    fn members<'a>(&'a self, room: &str) -> impl Iterator<Item = &'a Arc<Socket>> + 'a {
        let own = self.sockets.get(room);
        let joined = self.rooms.get(room).into_iter().flat_map(|m| m.values());
        own.into_iter().chain(joined)
    }
}

pub struct Namespace {
    name: Arc<str>,
    state: RwLock<State>,
    next_ack: AtomicU64,
    limits: NamespaceLimits,
    handler: Arc<dyn Handler>,
    fanout: FanoutCell,
}

impl Namespace {
    pub(super) fn new(
        name: &str,
        limits: NamespaceLimits,
        handler: Arc<dyn Handler>,
        fanout: FanoutCell,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            state: RwLock::new(State::default()),
            next_ack: AtomicU64::new(0),
            limits,
            handler,
            fanout,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn limits(&self) -> NamespaceLimits {
        self.limits
    }

    pub(super) fn handler(&self) -> &Arc<dyn Handler> {
        &self.handler
    }

    /// Ack ids are unique per namespace, so one id can serve every recipient of a broadcast.
    pub(super) fn next_ack_id(&self) -> u64 {
        self.next_ack.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn add(&self, socket: &Arc<Socket>) {
        self.state
            .write()
            .sockets
            .insert(socket.id_arc().clone(), socket.clone());
    }

    /// Removes a socket and its room memberships (leave-all on disconnect).
    pub(super) fn remove(&self, socket: &Arc<Socket>) {
        // The socket keeps its room list so the disconnect handler can still see where it was.
        let rooms = socket.rooms.lock().clone();
        let mut state = self.state.write();
        state.sockets.remove(socket.id());
        for room in rooms {
            if let Some(members) = state.rooms.get_mut(&room) {
                members.remove(socket.id());
                if members.is_empty() {
                    state.rooms.remove(&room);
                    self.room_changed(&room, false);
                }
            }
        }
    }

    fn room_changed(&self, room: &str, present: bool) {
        if let Some(fanout) = self.fanout.get() {
            fanout.room_changed(&self.name, room, present);
        }
    }

    pub(super) fn join(&self, socket: &Arc<Socket>, room: &str) -> Result<(), SocketError> {
        if room == socket.id() {
            return Ok(());
        }
        let mut state = self.state.write();
        if !state.sockets.contains_key(socket.id()) {
            return Err(SocketError::Disconnected);
        }
        let mut rooms = socket.rooms.lock();
        if rooms.iter().any(|r| &**r == room) {
            return Ok(());
        }
        if rooms.len() >= self.limits.max_rooms_per_socket {
            return Err(SocketError::TooManyRooms(self.limits.max_rooms_per_socket));
        }
        let room: Arc<str> = match state.rooms.get_key_value(room) {
            Some((existing, _)) => existing.clone(),
            None => Arc::from(room),
        };
        rooms.push(room.clone());
        let members = state.rooms.entry(room.clone()).or_default();
        let first = members.is_empty();
        members.insert(socket.id_arc().clone(), socket.clone());
        if first {
            self.room_changed(&room, true);
        }
        Ok(())
    }

    pub(super) fn leave(&self, socket: &Arc<Socket>, room: &str) {
        let mut state = self.state.write();
        socket.rooms.lock().retain(|r| &**r != room);
        if let Some(members) = state.rooms.get_mut(room) {
            members.remove(socket.id());
            if members.is_empty() {
                state.rooms.remove(room);
                self.room_changed(room, false);
            }
        }
    }

    /// A connected socket by id.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.state.read().sockets.get(id).cloned()
    }

    pub fn socket_count(&self) -> usize {
        self.state.read().sockets.len()
    }

    /// The sockets a selector picks (local `fetchSockets`).
    pub fn sockets(&self, selector: &Selector) -> Vec<Arc<Socket>> {
        let mut out = Vec::new();
        self.state
            .read()
            .for_each(selector, |s| out.push(s.clone()));
        out
    }

    /// Runs `then` once every other node of the cluster has heard of this node's room changes
    /// so far (see [`Fanout::rooms_propagated`]): at once, on the caller's task, for a single
    /// node. What acks a join, so "joined" means joined everywhere.
    pub fn when_rooms_propagated(&self, then: impl FnOnce() + Send + 'static) {
        match self.fanout.get() {
            Some(fanout) => {
                let propagated = fanout.rooms_propagated();
                tokio::spawn(async move {
                    propagated.await;
                    then();
                });
            }
            None => then(),
        }
    }

    /// Names of the rooms with members here (the implicit per-socket rooms are not listed).
    pub fn room_names(&self) -> Vec<String> {
        self.state
            .read()
            .rooms
            .keys()
            .map(|r| r.to_string())
            .collect()
    }

    /// Rooms with their member counts (the implicit per-socket rooms are not listed).
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let state = self.state.read();
        let mut rooms: Vec<_> = state
            .rooms
            .iter()
            .map(|(r, m)| (r.to_string(), m.len()))
            .collect();
        rooms.sort();
        rooms
    }

    /// Emits an event to every selected socket, on this node and, when the hub is part of a
    /// cluster, on every other node. The packet is encoded once: every local recipient queues
    /// the same frames and peers receive those frames, not the event to re-encode. Returns
    /// how many sockets of this node it was queued for.
    pub fn broadcast(
        &self,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        volatile: bool,
    ) -> usize {
        let frames = event_frames(&self.name, event, payload);
        if let Some(fanout) = self.fanout.get() {
            fanout.forward(&self.name, selector, &frames, volatile);
        }
        self.deliver(selector, &frames, volatile)
    }

    /// Queues already encoded frames for every selected socket of this node only (a
    /// broadcast that arrived from a peer, or the local part of [`Namespace::broadcast`]).
    /// Returns how many sockets it was queued for.
    pub fn deliver(&self, selector: &Selector, frames: &[Frame], volatile: bool) -> usize {
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        self.state.read().for_each(selector, |socket| {
            match socket.session.push(frames, volatile, self.limits.outbox) {
                PushOutcome::Queued => delivered += 1,
                PushOutcome::Overflow => overflowed.push(socket.session.clone()),
                PushOutcome::DroppedVolatile | PushOutcome::Closed => {}
            }
        });
        close_slow_consumers(overflowed);
        delivered
    }

    /// Emits to every selected socket and collects their acks until all arrived or the
    /// timeout passed.
    pub async fn broadcast_with_ack(
        &self,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        timeout: Duration,
    ) -> BroadcastAcks {
        let id = self.next_ack_id();
        let text = packet::encode_event(
            &self.name,
            event,
            &payload.args,
            payload.attachments.len(),
            Some(id),
        );
        let frames = packet_frames(text, payload);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut overflowed = Vec::new();
        let mut expected = 0;
        let mut registered = Vec::new();
        self.state.read().for_each(selector, |socket| {
            if socket
                .register_ack(id, AckWaiter::Many(tx.clone()))
                .is_err()
            {
                return;
            }
            match socket.session.push(&frames, false, self.limits.outbox) {
                PushOutcome::Queued => {
                    expected += 1;
                    registered.push(socket.clone());
                }
                outcome => {
                    socket.forget_ack(id);
                    if outcome == PushOutcome::Overflow {
                        overflowed.push(socket.session.clone());
                    }
                }
            }
        });
        drop(tx);
        close_slow_consumers(overflowed);

        let mut replies = Vec::with_capacity(expected);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        while replies.len() < expected {
            tokio::select! {
                reply = rx.recv() => match reply {
                    Some(reply) => replies.push(reply),
                    // Every waiter is gone: the remaining sockets disconnected.
                    None => { timed_out = true; break; }
                },
                _ = &mut deadline => { timed_out = true; break; }
            }
        }
        for socket in registered {
            socket.forget_ack(id);
        }
        BroadcastAcks {
            expected,
            replies,
            timed_out,
        }
    }

    /// Makes the selected sockets join rooms.
    pub fn sockets_join(&self, selector: &Selector, rooms: &[String]) -> usize {
        let sockets = self.sockets(selector);
        for socket in &sockets {
            for room in rooms {
                let _ = self.join(socket, room);
            }
        }
        sockets.len()
    }

    /// Makes the selected sockets leave rooms.
    pub fn sockets_leave(&self, selector: &Selector, rooms: &[String]) -> usize {
        let sockets = self.sockets(selector);
        for socket in &sockets {
            for room in rooms {
                self.leave(socket, room);
            }
        }
        sockets.len()
    }

    /// Disconnects the selected sockets; with `close` their connections are closed too.
    pub fn disconnect_sockets(&self, selector: &Selector, close: bool) -> usize {
        let sockets = self.sockets(selector);
        for socket in &sockets {
            socket.disconnect(close);
        }
        sockets.len()
    }
}

/// The frames of an EVENT packet without ack id: its text, then its binary attachments.
pub(super) fn event_frames(nsp: &str, event: &str, payload: &Payload) -> Vec<Frame> {
    let text = packet::encode_event(nsp, event, &payload.args, payload.attachments.len(), None);
    packet_frames(text, payload)
}

fn close_slow_consumers(sessions: Vec<Arc<Session>>) {
    for session in sessions {
        tracing::warn!(sid = %session.sid, "closing slow consumer: outbound queue full");
        session.close(CloseReason::SlowConsumer);
    }
}
