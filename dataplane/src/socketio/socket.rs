//! A Socket.IO socket: one client in one namespace.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::packet;
use super::payload::Payload;
use super::pending_acks::PendingAcks;
use super::recovery::SessionRecovery;
use super::rooms::Selector;
use crate::engine::{CloseReason, Frame, HandshakeInfo, PushOutcome, Session};

/// Why a socket left its namespace. The strings are the Socket.IO reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server called `disconnect()` on the socket.
    ServerNamespaceDisconnect,
    /// The client called `socket.disconnect()`.
    ClientNamespaceDisconnect,
    /// The whole engine session ended.
    Transport(CloseReason),
}

impl DisconnectReason {
    /// Whether the client may come back to the same session (socket.io's recoverable
    /// reasons): the connection was lost or closed by the server, not left on purpose.
    pub fn recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::Transport(
                CloseReason::TransportClose
                    | CloseReason::TransportError
                    | CloseReason::PingTimeout
                    | CloseReason::ForcedClose
                    | CloseReason::ServerShutdown
            )
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::Transport(reason) => reason.as_str(),
        }
    }
}

/// What a socket needs of the namespace it lives in. The namespace creates its sockets and
/// they point back to it; this trait (implemented by `Namespace`) keeps that back-reference
/// from making this module depend on the namespace module.
pub(super) trait Home: Any + Send + Sync {
    fn join(&self, socket: &Arc<Socket>, room: &str) -> Result<(), SocketError>;
    fn leave(&self, socket: &Arc<Socket>, room: &str);
    /// Takes the socket out of the namespace and its rooms.
    fn remove(&self, socket: &Arc<Socket>);
    /// Keeps a socket whose connection was lost for recovery (its rooms stay joined and
    /// what they receive is logged); false when recovery is off or full.
    fn park(&self, socket: &Arc<Socket>, reason: DisconnectReason) -> bool;
    /// Ends a parked socket its caller unparked: out of its rooms, the application told.
    fn end_parked(&self, socket: &Arc<Socket>, reason: DisconnectReason);
    /// Ack ids are unique per namespace, so one id can serve every recipient of a broadcast.
    fn next_ack_id(&self) -> u64;
    fn max_pending_acks(&self) -> usize;
    /// Tells the application the socket is gone.
    fn disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason);
    fn broadcast(
        &self,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        volatile: bool,
    ) -> usize;
    fn when_rooms_propagated(&self, then: Box<dyn FnOnce() + Send>);
}

/// What a socket needs of the engine session's Socket.IO side (`Connection`, or an app
/// link's session for a socket an application serves), which holds one socket per joined
/// namespace.
pub trait Transport: Send + Sync {
    /// The socket left its namespace: the connection forgets it.
    fn forget(&self, socket: &Arc<Socket>);
    /// `disconnect(true)`: every namespace of the connection gets a DISCONNECT, then the
    /// connection closes.
    fn disconnect_all_and_close(&self);
    /// The hub was asked to disconnect the socket (management API, a peer): true when the
    /// transport takes it from here (an application decides what its sockets do).
    fn disconnect_requested(&self, _socket: &Arc<Socket>, _close: bool) -> bool {
        false
    }
    /// The hub changed the socket's rooms (socketsJoin/socketsLeave), so whoever serves
    /// the socket can follow.
    fn rooms_changed(&self, _socket: &Arc<Socket>, _joined: &[String], _left: &[String]) {}
}

/// The transport of a socket that has none (parked, or taken over from another node).
struct NoTransport;

impl Transport for NoTransport {
    fn forget(&self, _socket: &Arc<Socket>) {}
    fn disconnect_all_and_close(&self) {}
}

/// A connection link that leads nowhere.
pub(super) fn no_transport() -> Weak<dyn Transport> {
    Weak::<NoTransport>::new()
}

/// Errors of operations on a socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    #[error("the socket is disconnected")]
    Disconnected,
    #[error("the outbound queue is full")]
    QueueFull,
    #[error("too many acknowledgements pending (limit {0})")]
    TooManyPendingAcks(usize),
    #[error("no acknowledgement within the timeout")]
    AckTimeout,
    #[error("the socket is in too many rooms (limit {0})")]
    TooManyRooms(usize),
    #[error("the room name is too long (limit {0} bytes)")]
    RoomNameTooLong(usize),
}

/// One client's answer to a broadcast with acks.
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    pub socket_id: Arc<str>,
    pub payload: Payload,
}

#[derive(Debug)]
pub(super) enum AckWaiter {
    One(oneshot::Sender<Payload>),
    Many(mpsc::UnboundedSender<AckReply>),
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.is_empty())
}

/// Builds the frames of one packet: the text frame then its attachments.
pub(super) fn packet_frames(text: String, payload: &Payload) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + payload.attachments.len());
    frames.push(Frame::from(text));
    frames.extend(payload.attachments.iter().cloned().map(Frame::Binary));
    frames
}

/// What a socket is made of when it joins a namespace: its engine session, its connection,
/// and what the client and the application said at CONNECT.
pub(super) struct Joining {
    pub session: Arc<Session>,
    pub conn: Weak<dyn Transport>,
    pub handshake: Arc<HandshakeInfo>,
    pub auth: Value,
    pub claims: Option<Value>,
    pub data: Value,
    /// The id of a socket recovered under its old id (the same shared string, so that room
    /// membership checks by pointer keep working); `None` for a new socket.
    pub id: Option<Arc<str>>,
}

/// Offsets a recovery sent again (boxed behind an `Option`: most sockets never have any, and
/// every socket would pay for an inline set).
struct ReplayedOffsets(std::collections::HashSet<Arc<str>>);

pub struct Socket {
    id: Arc<str>,
    nsp: Arc<str>,
    pub(super) home: Arc<dyn Home>,
    pub(super) session: Arc<Session>,
    conn: Weak<dyn Transport>,
    handshake: Arc<HandshakeInfo>,
    /// The `auth` object and verified claims; `None` for an empty `auth` object and no
    /// claims (most sockets, which then pay 8 bytes instead of 64).
    credentials: Option<Box<(Value, Option<Value>)>>,
    /// Rooms joined, not counting the implicit room named by the socket id.
    pub(super) rooms: Mutex<Vec<Arc<str>>>,
    acks: Mutex<PendingAcks<AckWaiter>>,
    data: Mutex<Value>,
    connected: AtomicBool,
    /// Disconnected, kept for recovery: still in its rooms, delivered nothing. Whoever
    /// turns it off (recovery, hand-over, expiry) ends the parked socket.
    parked: AtomicBool,
    /// Recovery state (pid, where its packets start in the log); `None` with recovery off.
    recovery: Mutex<Option<Box<SessionRecovery>>>,
    /// Just recovered with packets from another node: those may still arrive here live (sent
    /// before their sender knew of this node), and are skipped until a barrier shows they
    /// all arrived. Checked on every delivery, so a flag in front of the set.
    deduping: AtomicBool,
    replayed: Mutex<Option<Box<ReplayedOffsets>>>,
    /// One slot of per-socket state for the application layer (e.g. its event queue).
    extension: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.nsp)
            .finish()
    }
}

impl Socket {
    pub(super) fn new(nsp: Arc<str>, home: Arc<dyn Home>, joining: Joining) -> Arc<Self> {
        let Joining {
            session,
            conn,
            handshake,
            auth,
            claims,
            data,
            id,
        } = joining;
        let id = id.unwrap_or_else(|| Arc::from(crate::engine::sid::socket_id(&session.sid)));
        Arc::new(Self {
            id,
            nsp,
            home,
            session,
            conn,
            handshake,
            credentials: (!is_empty_object(&auth) || claims.is_some())
                .then(|| Box::new((auth, claims))),
            rooms: Mutex::new(Vec::new()),
            acks: Mutex::new(PendingAcks::default()),
            data: Mutex::new(data),
            connected: AtomicBool::new(true),
            parked: AtomicBool::new(false),
            recovery: Mutex::new(None),
            deduping: AtomicBool::new(false),
            replayed: Mutex::new(None),
            extension: OnceLock::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The name of the socket's namespace.
    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    pub fn handshake(&self) -> &HandshakeInfo {
        &self.handshake
    }

    /// The `auth` object the client sent when connecting to this namespace.
    pub fn auth(&self) -> &Value {
        static EMPTY: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| Value::Object(Default::default()));
        self.credentials.as_ref().map_or(&EMPTY, |c| &c.0)
    }

    /// Verified claims of the client's credentials (e.g. its JWT), if any.
    pub fn claims(&self) -> Option<&Value> {
        self.credentials.as_ref().and_then(|c| c.1.as_ref())
    }

    pub fn data(&self) -> Value {
        self.data.lock().clone()
    }

    pub fn set_data(&self, data: Value) {
        *self.data.lock() = data;
    }

    /// The application's per-socket state of type `T`, created on first use. `None` if the
    /// slot already holds another type.
    pub fn extension<T: Any + Send + Sync + Default>(&self) -> Option<Arc<T>> {
        let slot = self.extension.get_or_init(|| Arc::new(T::default()));
        slot.clone().downcast::<T>().ok()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The private session id a client presents to recover this socket, with recovery on.
    pub fn pid(&self) -> Option<Arc<str>> {
        self.recovery.lock().as_ref().map(|r| r.pid.clone())
    }

    pub(super) fn recovery_state(&self) -> Option<SessionRecovery> {
        self.recovery.lock().as_deref().cloned()
    }

    /// Changes the recovery state in place (a no-op with recovery off).
    pub(super) fn update_recovery(&self, f: impl FnOnce(&mut SessionRecovery)) {
        if let Some(rec) = self.recovery.lock().as_deref_mut() {
            f(rec);
        }
    }

    pub(super) fn set_recovery(&self, state: SessionRecovery) {
        *self.recovery.lock() = Some(Box::new(state));
    }

    /// Skips live packets with these offsets until [`Socket::stop_deduping`].
    pub(super) fn start_deduping(&self, offsets: std::collections::HashSet<Arc<str>>) {
        *self.replayed.lock() = Some(Box::new(ReplayedOffsets(offsets)));
        self.deduping.store(true, Ordering::Release);
    }

    pub(super) fn stop_deduping(&self) {
        self.deduping.store(false, Ordering::Release);
        *self.replayed.lock() = None;
    }

    /// Whether a live packet with `offset` was already sent to this socket by its recovery.
    pub(super) fn already_replayed(&self, offset: Option<&str>) -> bool {
        if !self.deduping.load(Ordering::Acquire) {
            return false;
        }
        match (offset, self.replayed.lock().as_deref()) {
            (Some(offset), Some(set)) => set.0.contains(offset),
            _ => false,
        }
    }

    /// Why a parked socket's connection ended.
    pub(super) fn parked_for(&self) -> CloseReason {
        self.recovery
            .lock()
            .as_ref()
            .and_then(|r| r.parked_for)
            .unwrap_or(CloseReason::TransportClose)
    }

    pub(super) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    pub(super) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Release);
    }

    /// Ends the parked state; true for the one caller that gets to end or move the socket.
    pub(super) fn unpark(&self) -> bool {
        self.parked.swap(false, Ordering::AcqRel)
    }

    /// Makes a socket built for recovery (not yet live) a parked one, or a parked one live.
    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// The rooms this socket is in, its own id first (as in Node).
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms = vec![self.id.to_string()];
        rooms.extend(self.rooms.lock().iter().map(|r| r.to_string()));
        rooms
    }

    pub fn join(self: &Arc<Self>, room: &str) -> Result<(), SocketError> {
        if !self.connected() {
            return Err(SocketError::Disconnected);
        }
        self.home.join(self, room)
    }

    pub fn leave(self: &Arc<Self>, room: &str) {
        self.home.leave(self, room);
    }

    fn push(&self, frames: &[Frame], volatile: bool) -> Result<(), SocketError> {
        if !self.connected() {
            return Err(SocketError::Disconnected);
        }
        match self.session.send(frames, volatile) {
            PushOutcome::Queued | PushOutcome::DroppedVolatile => Ok(()),
            PushOutcome::Overflow => Err(SocketError::QueueFull),
            PushOutcome::Closed => Err(SocketError::Disconnected),
        }
    }

    /// Emits an event to this client.
    pub fn emit(&self, event: &str, payload: &Payload) -> Result<(), SocketError> {
        self.send_event(event, payload, None, false)
    }

    /// Emits an event that may be dropped if the client cannot take it now.
    pub fn emit_volatile(&self, event: &str, payload: &Payload) -> Result<(), SocketError> {
        self.send_event(event, payload, None, true)
    }

    fn send_event(
        &self,
        event: &str,
        payload: &Payload,
        ack: Option<u64>,
        volatile: bool,
    ) -> Result<(), SocketError> {
        let text = packet::encode_event(
            &self.nsp,
            event,
            &payload.args,
            payload.attachments.len(),
            ack,
        );
        self.push(&packet_frames(text, payload), volatile)
    }

    /// Emits an event to the sockets of this socket's namespace that `selector` picks, on
    /// every node (Node's `socket.to(room).emit(...)`; add `except([socket.id()])` for
    /// `socket.broadcast`). Returns how many sockets of this node it was queued for.
    pub fn broadcast(
        &self,
        selector: &Selector,
        event: &str,
        payload: &Payload,
        volatile: bool,
    ) -> usize {
        self.home.broadcast(selector, event, payload, volatile)
    }

    /// Runs `then` once every node has heard of the room changes made so far (see
    /// `Namespace::when_rooms_propagated`): what acknowledges a join.
    pub fn when_rooms_propagated(&self, then: impl FnOnce() + Send + 'static) {
        self.home.when_rooms_propagated(Box::new(then));
    }

    /// Emits an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<Payload, SocketError> {
        let id = self.home.next_ack_id();
        let (tx, rx) = oneshot::channel();
        self.register_ack(id, AckWaiter::One(tx))?;
        if let Err(error) = self.send_event(event, payload, Some(id), false) {
            self.acks.lock().remove(&id);
            return Err(error);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(SocketError::Disconnected),
            Err(_) => {
                self.acks.lock().remove(&id);
                Err(SocketError::AckTimeout)
            }
        }
    }

    pub(super) fn register_ack(&self, id: u64, waiter: AckWaiter) -> Result<(), SocketError> {
        let max = self.home.max_pending_acks();
        let mut acks = self.acks.lock();
        if acks.len() >= max {
            return Err(SocketError::TooManyPendingAcks(max));
        }
        acks.insert(id, waiter);
        Ok(())
    }

    pub(super) fn forget_ack(&self, id: u64) {
        self.acks.lock().remove(&id);
    }

    /// A client ACK arrived for a server emit.
    pub(super) fn resolve_ack(&self, id: u64, payload: Payload) {
        let waiter = self.acks.lock().remove(&id);
        match waiter {
            Some(AckWaiter::One(tx)) => {
                let _ = tx.send(payload);
            }
            Some(AckWaiter::Many(tx)) => {
                let _ = tx.send(AckReply {
                    socket_id: self.id.clone(),
                    payload,
                });
            }
            None => tracing::debug!(socket = %self.id, id, "ack for unknown id ignored"),
        }
    }

    /// Answers a client's ack request.
    pub(super) fn send_ack(&self, id: u64, payload: &Payload) {
        let text = packet::encode_ack(&self.nsp, id, &payload.args, payload.attachments.len());
        let _ = self.push(&packet_frames(text, payload), false);
    }

    /// Removes the socket from its namespace. Node semantics: with `close` the whole
    /// connection is closed too (the client will not reconnect on its own).
    pub fn disconnect(self: &Arc<Self>, close: bool) {
        if !self.connected() {
            return;
        }
        if let Some(conn) = self.conn.upgrade() {
            if conn.disconnect_requested(self, close) {
                return;
            }
        }
        let _ = self.push(&[Frame::from(packet::encode_disconnect(&self.nsp))], false);
        if close {
            if let Some(conn) = self.conn.upgrade() {
                conn.disconnect_all_and_close();
            }
        } else {
            self.finish(DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Closes the underlying connection without namespace DISCONNECT packets, so the client
    /// reconnects by itself (used for draining a node).
    pub fn close_transport(&self) {
        self.session.close(CloseReason::ForcedClose);
    }

    /// Tells whoever serves the socket that the hub changed its rooms.
    pub(super) fn rooms_changed(self: &Arc<Self>, joined: &[String], left: &[String]) {
        if let Some(conn) = self.conn.upgrade() {
            conn.rooms_changed(self, joined, left);
        }
    }

    /// Leaves the namespace and tells the application; runs once.
    pub(super) fn finish(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(conn) = self.conn.upgrade() {
            conn.forget(self);
        }
        self.acks.lock().clear();
        if reason.recoverable() && self.home.park(self, reason) {
            return;
        }
        self.home.remove(self);
        self.home.disconnected(self, reason);
    }

    /// Ends a parked socket that was not recovered in time (or could not be), once its
    /// caller has unparked it: it leaves its rooms and the application hears of the
    /// disconnection it was parked with.
    pub(super) fn end_unparked(self: &Arc<Self>, reason: DisconnectReason) {
        self.home.end_parked(self, reason);
    }
}
