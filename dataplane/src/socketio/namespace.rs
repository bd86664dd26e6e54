//! A namespace: its sockets, its rooms, and broadcasts over them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::handler::Handler;
use super::packet;
use super::parking::Parking;
use super::payload::Payload;
use super::recovery::plan::{self, Member};
use super::recovery::{SessionRecovery, SessionState, Tail, Unrecoverable};
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
    /// `offset` tags a packet clients may get again after a disconnection (see
    /// `socketio::recovery`).
    fn forward(
        &self,
        nsp: &str,
        selector: &Selector,
        frames: &[Frame],
        volatile: bool,
        offset: Option<&str>,
    );

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

/// The first ack id of the hub's own emits when applications serve the sockets (app links,
/// `socketio::external`): an app's socket.io counts its ack ids up from 0 and never gets
/// near it, so a client's ACK says by its id alone whether it answers the hub (a broadcast
/// with acks) or the app.
pub const HUB_ACK_BASE: u64 = 1 << 40;

/// Per-namespace limits, from `LimitsConfig`.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceLimits {
    pub outbox: OutboxLimits,
    pub max_pending_acks: usize,
    pub max_rooms_per_socket: usize,
    pub max_room_name_bytes: usize,
    /// The first ack id of the namespace's emits (an application's own acks use the ids
    /// below it when an app link serves the sockets).
    pub first_ack_id: u64,
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
    /// With connection state recovery on: the hub's parked sockets and delivery log.
    parking: Option<Arc<Parking>>,
    /// Members of `state` that are parked (or being recovered), not connected.
    parked: AtomicUsize,
}

impl Namespace {
    pub(super) fn new(
        name: &str,
        limits: NamespaceLimits,
        handler: Arc<dyn Handler>,
        fanout: FanoutCell,
        parking: Option<Arc<Parking>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: Arc::from(name),
            state: RwLock::new(RoomIndex::default()),
            next_ack: AtomicU64::new(limits.first_ack_id),
            limits,
            handler,
            fanout,
            parking,
            parked: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a socket of this namespace for an engine session and adds it.
    pub(super) fn add_socket(self: &Arc<Self>, joining: Joining) -> Arc<Socket> {
        let home: Arc<dyn Home> = self.clone();
        let socket = Socket::new(self.name.clone(), home, joining);
        let mut state = self.state.write();
        state.insert(socket.id_arc().clone(), socket.clone());
        if let Some(parking) = &self.parking {
            // Under the namespace lock: every delivery to it from now on is logged after
            // `start`.
            let pid = parking.recovery.new_pid();
            let start = parking.recovery.log().head();
            socket.set_recovery(SessionRecovery {
                pid: pid.clone(),
                start,
                tail: Tail::default(),
                received_before: None,
                parked_for: None,
            });
            parking.register(&pid, &socket);
        }
        socket
    }

    /// A socket of another node's session, added *parked* (in its rooms, receiving
    /// nothing, its packets logged) so that this node can take the session over:
    /// `remaining` is how long it stays recoverable. `None` when the id is taken or
    /// recovery is off.
    pub(super) fn add_parked(
        self: &Arc<Self>,
        state: &SessionState,
        remaining: Duration,
    ) -> Option<Arc<Socket>> {
        let parking = self.parking.as_ref()?;
        let joining =
            parking.parked_joining(Arc::from(state.id.as_str()), None, state.data.clone());
        let home: Arc<dyn Home> = self.clone();
        let socket = Socket::new(self.name.clone(), home, joining);
        socket.set_connected(false);
        let pid: Arc<str> = Arc::from(state.pid.as_str());
        {
            let mut index = self.state.write();
            if index.contains(socket.id()) {
                return None;
            }
            index.insert(socket.id_arc().clone(), socket.clone());
            socket.set_recovery(SessionRecovery {
                pid: pid.clone(),
                start: parking.recovery.log().head(),
                tail: Tail::default(),
                received_before: None,
                parked_for: None,
            });
            self.announce_foreign_id(&socket, true);
        }
        if !parking.park(&socket, remaining) {
            self.remove_quietly(&socket);
            return None;
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        parking.register(&pid, &socket);
        for room in &state.rooms {
            if let Err(error) = self.join_parked(&socket, room) {
                tracing::warn!(socket = socket.id(), room = %room, %error, "room of a session taken over not joined");
            }
        }
        Some(socket)
    }

    /// Every socket id is a room, and peers send an emit to a socket only to the node its
    /// id names: a socket living on another node (recovered here) announces its id as a
    /// room of this node, so emits to it find it.
    fn announce_foreign_id(&self, socket: &Socket, present: bool) {
        let me = self
            .parking
            .as_ref()
            .map(|p| p.recovery.member())
            .unwrap_or("");
        if me.is_empty() {
            return;
        }
        if crate::engine::sid::owner_of(socket.id()).as_deref() != Some(me) {
            self.room_changed(socket.id(), present);
        }
    }

    /// A parked socket's rooms are joined like a live one's.
    fn join_parked(&self, socket: &Arc<Socket>, room: &str) -> Result<(), SocketError> {
        Home::join(self, socket, room)
    }

    /// Takes a socket out without telling the application (it lives on elsewhere).
    fn remove_quietly(&self, socket: &Arc<Socket>) {
        Home::remove(self, socket);
    }

    /// Recovers the parked `old` socket (claimed by the caller) for a client that last got
    /// `offset`: a new socket on `joining`'s session takes its place under the same id, in
    /// the same rooms, with its data, and gets CONNECT then every packet it missed, before
    /// any live packet (all under the namespace lock). On error the old socket is ended.
    pub(super) fn recover(
        self: &Arc<Self>,
        old: &Arc<Socket>,
        mut joining: Joining,
        offset: Option<&str>,
    ) -> Result<(Arc<Socket>, usize), Unrecoverable> {
        let Some(parking) = &self.parking else {
            return Err(Unrecoverable::UnknownSession);
        };
        let Some(rec) = old.recovery_state() else {
            return Err(Unrecoverable::UnknownSession);
        };
        let rooms = old.rooms.lock().clone();
        joining.id = Some(old.id_arc().clone());
        joining.data = old.data();
        let session = joining.session.clone();
        let home: Arc<dyn Home> = self.clone();
        let socket = Socket::new(self.name.clone(), home, joining);
        let mut state = self.state.write();
        let replay = {
            let log = parking.recovery.log();
            let member = Member {
                nsp: &self.name,
                id: old.id(),
                rooms: &rooms,
            };
            match plan::plan(&rec, offset, &log, &member, parking.recovery.bounds()) {
                Ok(replay) => {
                    socket.set_recovery(SessionRecovery {
                        pid: rec.pid.clone(),
                        start: log.head(),
                        tail: Tail {
                            anchor: offset.map(Arc::from),
                            entries: replay.clone(),
                        },
                        received_before: None,
                        parked_for: None,
                    });
                    replay
                }
                Err(why) => {
                    drop(log);
                    drop(state);
                    parking.end(
                        old,
                        DisconnectReason::Transport(crate::engine::CloseReason::TransportClose),
                    );
                    return Err(why);
                }
            }
        };
        if !state.replace(old.id_arc(), socket.clone(), &rooms) {
            return Err(Unrecoverable::UnknownSession);
        }
        *socket.rooms.lock() = rooms;
        self.parked.fetch_sub(1, Ordering::Relaxed);
        parking.register(&rec.pid, &socket);
        session.send(
            &[Frame::from(packet::encode_connect_pid(
                &self.name,
                socket.id(),
                Some(&rec.pid),
            ))],
            false,
        );
        session.outbox.flush_boundary();
        for r in &replay {
            session.send(&r.frames, false);
        }
        if !replay.is_empty() {
            if let Some(fanout) = self.fanout.get() {
                // Packets of the replay that came from another node may still be on their way
                // here from their senders; every one has arrived once every node has answered
                // a barrier started now.
                socket.start_deduping(replay.iter().map(|r| r.offset.clone()).collect());
                let barrier = fanout.rooms_propagated();
                let weak = Arc::downgrade(&socket);
                tokio::spawn(async move {
                    barrier.await;
                    if let Some(socket) = weak.upgrade() {
                        socket.stop_deduping();
                    }
                });
            }
        }
        drop(state);
        if !replay.is_empty() {
            forget_tail_once_received(&socket, parking.recovery.ping_window());
        }
        Ok((socket, replay.len()))
    }

    /// Hands the parked `socket` (claimed by the caller) to another node that has joined
    /// its rooms: what its client (last at `offset`) missed, then it leaves this node
    /// without the application hearing of it. `offset` of `None` with `whole` hands over
    /// everything kept (a draining node, which cannot know the client's offset).
    pub(super) fn hand_over(
        &self,
        socket: &Arc<Socket>,
        offset: Option<&str>,
        whole: bool,
    ) -> Result<Tail, Unrecoverable> {
        let parking = self.parking.as_ref().ok_or(Unrecoverable::UnknownSession)?;
        let rec = socket
            .recovery_state()
            .ok_or(Unrecoverable::UnknownSession)?;
        let rooms = socket.rooms.lock().clone();
        let tail = {
            let _state = self.state.read();
            let log = parking.recovery.log();
            let member = Member {
                nsp: &self.name,
                id: socket.id(),
                rooms: &rooms,
            };
            let bounds = parking.recovery.bounds();
            if whole {
                plan::handover_tail(&rec, &log, &member, bounds)
            } else {
                plan::plan(&rec, offset, &log, &member, bounds).map(|entries| Tail {
                    anchor: offset.map(Arc::from),
                    entries,
                })
            }
        };
        parking.forget(&rec.pid, socket);
        match tail {
            Ok(tail) => {
                self.parked.fetch_sub(1, Ordering::Relaxed);
                self.remove_quietly(socket);
                Ok(tail)
            }
            Err(why) => {
                socket.end_unparked(DisconnectReason::Transport(
                    crate::engine::CloseReason::TransportClose,
                ));
                Err(why)
            }
        }
    }

    /// Drops a claimed parked socket without telling the application (a copy of a session
    /// that lives on elsewhere).
    pub(super) fn drop_parked(&self, socket: &Arc<Socket>) {
        self.parked.fetch_sub(1, Ordering::Relaxed);
        self.remove_quietly(socket);
    }

    /// Gives the parked `socket` (taken over from a draining node) what that node handed
    /// over with it.
    pub(super) fn set_tail(&self, socket: &Socket, tail: Tail) {
        socket.update_recovery(|rec| rec.tail = tail);
    }

    /// The state another node needs to take the parked `socket` over.
    pub(super) fn session_state(&self, socket: &Socket) -> Option<SessionState> {
        let pid = socket.pid()?;
        Some(SessionState {
            nsp: self.name.to_string(),
            id: socket.id().to_string(),
            pid: pid.to_string(),
            rooms: socket.rooms.lock().iter().map(|r| r.to_string()).collect(),
            data: socket.data(),
        })
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

    /// Connected sockets (parked ones are not counted).
    pub fn socket_count(&self) -> usize {
        self.state
            .read()
            .len()
            .saturating_sub(self.parked.load(Ordering::Relaxed))
    }

    /// Sockets connected or parked: a namespace with any is in use.
    pub(super) fn member_count(&self) -> usize {
        self.state.read().len()
    }

    /// Sockets parked for recovery.
    pub fn parked_count(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// The sockets a selector picks (local `fetchSockets`).
    pub fn sockets(&self, selector: &Selector) -> Vec<Arc<Socket>> {
        let mut out = Vec::new();
        self.state.read().for_each(selector, |s| {
            if s.connected() {
                out.push(s.clone())
            }
        });
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
        let offset = if volatile {
            None
        } else {
            self.parking.as_ref().map(|p| p.recovery.next_offset())
        };
        let frames = event_frames(&self.name, event, payload, offset.as_deref());
        if let Some(fanout) = self.fanout.get() {
            fanout.forward(&self.name, selector, &frames, volatile, offset.as_deref());
        }
        self.deliver(selector, &frames, volatile, offset.as_deref())
    }

    /// Queues already encoded frames for every selected socket of this node only (a
    /// broadcast that arrived from a peer, or the local part of [`Namespace::broadcast`]).
    /// Returns how many sockets it was queued for.
    /// A packet with an `offset` is logged for recovery when it picked any socket here
    /// (parked ones included: they get it on recovery).
    pub fn deliver(
        &self,
        selector: &Selector,
        frames: &[Frame],
        volatile: bool,
        offset: Option<&str>,
    ) -> usize {
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        let mut picked = false;
        let state = self.state.read();
        state.for_each(selector, |socket| {
            picked = true;
            if !socket.connected() || socket.already_replayed(offset) {
                return;
            }
            match socket.session.push(frames, volatile, self.limits.outbox) {
                PushOutcome::Queued => delivered += 1,
                PushOutcome::Overflow => overflowed.push(socket.session.clone()),
                PushOutcome::DroppedVolatile | PushOutcome::Closed => {}
            }
        });
        if let (true, Some(parking), Some(offset)) = (picked, &self.parking, offset) {
            // Under the namespace lock, so a recovery sees it either in the log or live.
            parking.recovery.log().append(
                std::time::Instant::now(),
                Arc::from(offset),
                self.name.clone(),
                selector,
                frames,
            );
        }
        drop(state);
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
            if !socket.connected() {
                return;
            }
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
            socket.rooms_changed(rooms, &[]);
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
            socket.rooms_changed(&[], rooms);
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
        if rooms.capacity() == 0 {
            rooms.reserve_exact(1); // most sockets join one room (their user's), not four
        }
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
        // A recovered socket took this one's place: its rooms are its own now.
        if !state
            .get(socket.id())
            .is_some_and(|s| Arc::ptr_eq(s, socket))
        {
            return;
        }
        for room in state.remove(socket.id(), &rooms) {
            self.room_changed(&room, false);
        }
        self.announce_foreign_id(socket, false);
        if let Some(pid) = socket.pid() {
            if let Some(parking) = &self.parking {
                parking.forget(&pid, socket);
            }
        }
    }

    fn end_parked(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.parked.fetch_sub(1, Ordering::Relaxed);
        Home::remove(self, socket);
        self.handler.disconnected(socket, reason);
    }

    fn park(&self, socket: &Arc<Socket>, reason: DisconnectReason) -> bool {
        let Some(parking) = &self.parking else {
            return false;
        };
        let Some(mut rec) = socket.recovery_state() else {
            return false;
        };
        // What was delivered well before the connection was lost reached the client: a
        // server-side close flushes first; a lost connection is noticed within the ping
        // window.
        let margin = match reason {
            DisconnectReason::Transport(crate::engine::CloseReason::ServerShutdown) => {
                SERVER_CLOSE_MARGIN
            }
            _ => parking.recovery.ping_window(),
        };
        rec.received_before = std::time::Instant::now().checked_sub(margin);
        if let DisconnectReason::Transport(why) = reason {
            rec.parked_for = Some(why);
        }
        let pid = rec.pid.clone();
        // The parked socket takes the place of the closed one with only what recovery and
        // the application's disconnect need: the closed engine session, its outbox and the
        // handshake go with the old one.
        let rooms = socket.rooms.lock().clone();
        let parked = Socket::new(
            self.name.clone(),
            socket.home.clone(),
            parking.parked_joining(
                socket.id_arc().clone(),
                socket.claims().cloned(),
                socket.data(),
            ),
        );
        parked.set_connected(false);
        parked.set_recovery(rec);
        *parked.rooms.lock() = rooms.clone();
        if !parking.park(&parked, parking.recovery.max_disconnection()) {
            return false;
        }
        {
            let mut state = self.state.write();
            if !state.replace(socket.id_arc(), parked.clone(), &rooms) {
                drop(state);
                parking.claim(&parked);
                return false;
            }
        }
        parking.register(&pid, &parked);
        self.parked.fetch_add(1, Ordering::Relaxed);
        true
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
/// An `offset` (recovery) is appended as the last argument.
pub(super) fn event_frames(
    nsp: &str,
    event: &str,
    payload: &Payload,
    offset: Option<&str>,
) -> Vec<Frame> {
    let text =
        packet::encode_event_tagged(nsp, event, &payload.args, payload.attachments.len(), offset);
    packet_frames(text, payload)
}

/// How long before a server-side close (a drain) its client may not have had the packets
/// delivered yet.
const SERVER_CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// A recovered socket keeps what it was sent again (its tail) in case it is cut off before
/// getting it all. Once a ping window has passed with the socket still connected, a pong
/// answered a ping sent after the tail, so the client has it: only its last offset is kept.
fn forget_tail_once_received(socket: &Arc<Socket>, window: Duration) {
    let weak = Arc::downgrade(socket);
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        let Some(socket) = weak.upgrade() else { return };
        if !socket.connected() {
            return;
        }
        socket.update_recovery(|rec| {
            if let Some(last) = rec.tail.entries.last() {
                rec.tail = Tail {
                    anchor: Some(last.offset.clone()),
                    entries: Vec::new(),
                };
            }
        });
    });
}

fn close_slow_consumers(sessions: Vec<Arc<Session>>) {
    for session in sessions {
        tracing::warn!(sid = %session.sid, "closing slow consumer: outbound queue full");
        session.close(CloseReason::SlowConsumer);
    }
}
