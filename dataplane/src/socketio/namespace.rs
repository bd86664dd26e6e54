//! A namespace: its sockets, its rooms, and broadcasts over them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::handler::Handler;
use super::packet;
use super::payload::Payload;
use super::rooms::{RoomIndex, Selector};
use super::socket::{
    packet_frames, AckReply, AckWaiter, DisconnectReason, Home, Joining, Socket, SocketError,
};
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

/// Per-namespace limits, from `LimitsConfig`.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceLimits {
    pub outbox: OutboxLimits,
    pub max_pending_acks: usize,
    pub max_rooms_per_socket: usize,
    pub max_room_name_bytes: usize,
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

pub struct Namespace {
    name: Arc<str>,
    state: RwLock<RoomIndex<Arc<Socket>>>,
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
            state: RwLock::new(RoomIndex::default()),
            next_ack: AtomicU64::new(0),
            limits,
            handler,
            fanout,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a socket of this namespace for an engine session and adds it.
    pub(super) fn add_socket(self: &Arc<Self>, joining: Joining) -> Arc<Socket> {
        let home: Arc<dyn Home> = self.clone();
        let socket = Socket::new(self.name.clone(), home, joining);
        self.state
            .write()
            .insert(socket.id_arc().clone(), socket.clone());
        socket
    }

    fn room_changed(&self, room: &str, present: bool) {
        if let Some(fanout) = self.fanout.get() {
            fanout.room_changed(&self.name, room, present);
        }
    }

    /// A connected socket by id.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.state.read().get(id).cloned()
    }

    pub fn socket_count(&self) -> usize {
        self.state.read().len()
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
        self.state.read().room_names()
    }

    /// Rooms with their member counts (the implicit per-socket rooms are not listed).
    pub fn rooms(&self) -> Vec<(String, usize)> {
        self.state.read().room_sizes()
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
        let id = Home::next_ack_id(self);
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
                let _ = Home::join(self, socket, room);
            }
        }
        sockets.len()
    }

    /// Makes the selected sockets leave rooms.
    pub fn sockets_leave(&self, selector: &Selector, rooms: &[String]) -> usize {
        let sockets = self.sockets(selector);
        for socket in &sockets {
            for room in rooms {
                Home::leave(self, socket, room);
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

impl Socket {
    /// The namespace this socket lives in: always there for a socket of a hub (a socket is
    /// only ever created by its namespace), an `Option` because the link is a trait object.
    pub fn namespace(&self) -> Option<Arc<Namespace>> {
        let home: Arc<dyn std::any::Any + Send + Sync> = self.home.clone();
        home.downcast::<Namespace>().ok()
    }
}

impl Home for Namespace {
    fn join(&self, socket: &Arc<Socket>, room: &str) -> Result<(), SocketError> {
        if room == socket.id() {
            return Ok(());
        }
        if room.len() > self.limits.max_room_name_bytes {
            return Err(SocketError::RoomNameTooLong(
                self.limits.max_room_name_bytes,
            ));
        }
        let mut state = self.state.write();
        if !state.contains(socket.id()) {
            return Err(SocketError::Disconnected);
        }
        let mut rooms = socket.rooms.lock();
        if rooms.iter().any(|r| &**r == room) {
            return Ok(());
        }
        if rooms.len() >= self.limits.max_rooms_per_socket {
            return Err(SocketError::TooManyRooms(self.limits.max_rooms_per_socket));
        }
        let Some((room, first)) = state.join(socket.id_arc(), room) else {
            return Err(SocketError::Disconnected);
        };
        rooms.push(room.clone());
        if first {
            self.room_changed(&room, true);
        }
        Ok(())
    }

    fn leave(&self, socket: &Arc<Socket>, room: &str) {
        let mut state = self.state.write();
        socket.rooms.lock().retain(|r| &**r != room);
        if state.leave(socket.id(), room) {
            self.room_changed(room, false);
        }
    }

    /// Removes a socket and its room memberships (leave-all on disconnect).
    fn remove(&self, socket: &Arc<Socket>) {
        // The socket keeps its room list so the disconnect handler can still see where it was.
        let rooms = socket.rooms.lock().clone();
        // Announced under the lock, so that a join racing with this leave is announced after.
        let mut state = self.state.write();
        for room in state.remove(socket.id(), &rooms) {
            self.room_changed(&room, false);
        }
    }

    fn next_ack_id(&self) -> u64 {
        self.next_ack.fetch_add(1, Ordering::Relaxed)
    }

    fn max_pending_acks(&self) -> usize {
        self.limits.max_pending_acks
    }

    fn disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.handler.disconnected(socket, reason);
    }

    fn broadcast(
        &self,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        volatile: bool,
    ) -> usize {
        Namespace::broadcast(self, selector, event, payload, volatile)
    }

    fn when_rooms_propagated(&self, then: Box<dyn FnOnce() + Send>) {
        Namespace::when_rooms_propagated(self, then);
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
