//! The Socket.IO side of one engine session: namespace connects, binary reassembly and
//! dispatch of packets to sockets and the application.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use super::handler::{AckResponder, ConnectDecision, ConnectRequest, Event};
use super::packet::{self, Packet, PacketKind};
use super::payload::Payload;
use super::registry::Namespaces;
use super::socket::{DisconnectReason, Joining, Socket, Transport};
use crate::engine::{
    CloseReason, ConnectionFactory, ConnectionHandler, Frame, HandshakeInfo, Session,
};

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
}

#[derive(Default)]
struct State {
    /// One socket per connected namespace.
    sockets: Vec<Arc<Socket>>,
    /// Namespaces whose connect is being decided by the application.
    connecting: Vec<String>,
    /// Boxed: rare, and every idle connection would pay for its size.
    partial: Option<Box<Partial>>,
    closed: bool,
}

pub(crate) struct Connection {
    hub: Arc<Namespaces>,
    session: Weak<Session>,
    handshake: Arc<HandshakeInfo>,
    state: Mutex<State>,
}

impl Connection {
    pub(super) fn new(
        hub: Arc<Namespaces>,
        session: &Arc<Session>,
        handshake: HandshakeInfo,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            session: Arc::downgrade(session),
            handshake: Arc::new(handshake),
            state: Mutex::new(State::default()),
        })
    }

    pub(super) fn has_namespaces(&self) -> bool {
        !self.state.lock().sockets.is_empty()
    }

    fn send_text(&self, text: String) {
        if let Some(session) = self.session.upgrade() {
            session.send(&[Frame::from(text)], false);
        }
    }

    fn fail(&self, error: &dyn std::fmt::Display) {
        if let Some(session) = self.session.upgrade() {
            tracing::debug!(sid = %session.sid, %error, "closing session on invalid Socket.IO packet");
            session.close(CloseReason::ParseError);
        }
    }

    fn socket_for(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.state
            .lock()
            .sockets
            .iter()
            .find(|s| s.nsp() == nsp)
            .cloned()
    }

    fn on_connect(self: &Arc<Self>, packet: Packet, packet_bytes: usize) {
        let nsp = packet.nsp;
        let limits = &self.hub.config.limits;
        if nsp.len() > limits.max_namespace_name_bytes || !self.hub.namespace_allowed(&nsp) {
            self.send_text(packet::encode_connect_error(
                &nsp,
                "Invalid namespace",
                None,
            ));
            return;
        }
        // The auth object is what follows the namespace in the packet.
        if packet_bytes.saturating_sub(nsp.len()) > limits.max_auth_bytes {
            let data = serde_json::json!({ "limit": limits.max_auth_bytes });
            self.send_text(packet::encode_connect_error(
                &nsp,
                "Auth payload too large",
                Some(&data),
            ));
            return;
        }
        // Created now (or refused) so that a client of one namespace too many waits for no
        // webhook; an empty one left behind by a refused connect is removed under pressure.
        if self.hub.namespace(&nsp).is_none() {
            let data = serde_json::json!({ "limit": limits.max_dynamic_namespaces });
            self.send_text(packet::encode_connect_error(
                &nsp,
                "Namespace limit reached",
                Some(&data),
            ));
            return;
        }
        {
            let mut state = self.state.lock();
            let busy =
                state.sockets.iter().any(|s| s.nsp() == nsp) || state.connecting.contains(&nsp);
            if busy {
                // As the reference server: a CONNECT for a namespace already joined (or being
                // joined) is an invalid state, and the connection is closed.
                drop(state);
                return self.fail(&"CONNECT for a namespace already connected");
            }
            let max = self.hub.config.limits.max_namespaces_per_session;
            if state.sockets.len() + state.connecting.len() >= max {
                drop(state);
                let data = serde_json::json!({ "limit": max });
                self.send_text(packet::encode_connect_error(
                    &nsp,
                    "Too many namespaces",
                    Some(&data),
                ));
                return;
            }
            state.connecting.push(nsp.clone());
        }
        let mut request = ConnectRequest {
            namespace: nsp,
            auth: packet
                .data
                .unwrap_or_else(|| Value::Object(Default::default())),
            claims: None,
            handshake: self.handshake.clone(),
        };
        let conn = self.clone();
        tokio::spawn(async move {
            let verdict = conn
                .hub
                .authenticator
                .authenticate(&request.namespace, &request.auth, &request.handshake)
                .await;
            let decision = match verdict {
                Ok(claims) => {
                    request.claims = claims;
                    conn.hub.handler.connect(request.clone()).await
                }
                Err(failure) => {
                    tracing::debug!(nsp = %request.namespace, reason = %failure.reason, "handshake refused");
                    let data = serde_json::json!({ "reason": failure.reason });
                    ConnectDecision::reject(failure.message, Some(data))
                }
            };
            conn.finish_connect(request, decision);
        });
    }

    fn finish_connect(self: &Arc<Self>, request: ConnectRequest, decision: ConnectDecision) {
        let nsp = request.namespace;
        let Some(session) = self.session.upgrade() else {
            return;
        };
        {
            let mut state = self.state.lock();
            state.connecting.retain(|n| n != &nsp);
            if state.closed {
                return;
            }
        }
        let (data, rooms) = match decision {
            ConnectDecision::Accept { data, rooms } => (data, rooms),
            ConnectDecision::Reject { message, data } => {
                self.send_text(packet::encode_connect_error(&nsp, &message, data.as_ref()));
                return;
            }
        };
        {
            let state = self.state.lock();
            if state.closed {
                return;
            }
        }
        let conn: Weak<dyn Transport> = Arc::downgrade(self) as Weak<Connection>;
        let joining = Joining {
            session,
            conn,
            handshake: self.handshake.clone(),
            auth: request.auth,
            claims: request.claims,
            data,
        };
        let added = self
            .hub
            .with_namespace(&nsp, move |ns| ns.add_socket(joining));
        let Some(socket) = added else {
            let data =
                serde_json::json!({ "limit": self.hub.config.limits.max_dynamic_namespaces });
            self.send_text(packet::encode_connect_error(
                &nsp,
                "Namespace limit reached",
                Some(&data),
            ));
            return;
        };
        {
            let mut state = self.state.lock();
            if state.closed {
                drop(state);
                socket.finish(DisconnectReason::Transport(CloseReason::TransportClose));
                return;
            }
            state.sockets.push(socket.clone());
        }
        for room in &rooms {
            if let Err(error) = socket.join(room) {
                tracing::warn!(socket = socket.id(), room = %room, %error, "initial room not joined");
            }
        }
        // CONNECT goes out in a write of its own before anything the handler emits: some
        // clients read the first packet, then start listening for the next.
        if let Some(session) = self.session.upgrade() {
            session.send(
                &[Frame::from(packet::encode_connect(&nsp, socket.id()))],
                false,
            );
            session.outbox.flush_boundary();
        }
        self.watch_expiry(&socket);
        self.hub.handler.connected(&socket);
    }

    /// With `auth.jwt.disconnectOnExpiry`, disconnects `socket` when its token expires.
    fn watch_expiry(&self, socket: &Arc<Socket>) {
        let auth = &self.hub.config.auth;
        if auth.mode != crate::config::AuthMode::Jwt || !auth.jwt.disconnect_on_expiry {
            return;
        }
        let now = tokio::time::Instant::now();
        if let Some(at) = socket
            .claims()
            .and_then(|claims| super::expiry::expiry_of(claims, auth.jwt.leeway, now))
        {
            self.hub.expiries.push(at, socket);
        }
    }

    fn dispatch(self: &Arc<Self>, packet: Packet, attachments: Vec<Bytes>) {
        let Some(socket) = self.socket_for(&packet.nsp) else {
            // As the reference server: a packet for a namespace not joined is an invalid
            // state (this includes anything but CONNECT as the first packet).
            return self.fail(&"packet for a namespace not connected");
        };
        let args = match packet.data {
            Some(Value::Array(args)) => args,
            _ => Vec::new(),
        };
        match packet.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                let mut args = args.into_iter();
                let name = match args.next() {
                    Some(Value::String(name)) => name,
                    Some(other) => other.to_string(),
                    None => return,
                };
                let event = Event {
                    name,
                    payload: Payload {
                        args: args.collect(),
                        attachments,
                    },
                    ack: packet.id.map(|id| AckResponder {
                        socket: socket.clone(),
                        id,
                    }),
                };
                self.hub.handler.event(&socket, event);
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                if let Some(id) = packet.id {
                    socket.resolve_ack(id, Payload { args, attachments });
                }
            }
            _ => {}
        }
    }
}

impl Transport for Connection {
    fn forget(&self, socket: &Arc<Socket>) {
        self.state
            .lock()
            .sockets
            .retain(|s| !Arc::ptr_eq(s, socket));
    }

    fn disconnect_all_and_close(&self) {
        let sockets = self.state.lock().sockets.clone();
        for socket in &sockets {
            socket.finish(DisconnectReason::ServerNamespaceDisconnect);
        }
        if let Some(session) = self.session.upgrade() {
            session.close(CloseReason::ForcedClose);
        }
    }
}

impl ConnectionHandler for Arc<Connection> {
    fn on_message(&self, text: Bytes) {
        let Ok(text) = std::str::from_utf8(&text) else {
            return self.fail(&"message is not UTF-8");
        };
        if self.state.lock().partial.is_some() {
            return self.fail(&"text packet while binary attachments were expected");
        }
        let packet = match Packet::decode(text, self.hub.config.limits.max_attachments) {
            Ok(packet) => packet,
            Err(error) => return self.fail(&error),
        };
        match packet.kind {
            PacketKind::Connect => self.on_connect(packet, text.len()),
            PacketKind::Disconnect => match self.socket_for(&packet.nsp) {
                Some(socket) => socket.finish(DisconnectReason::ClientNamespaceDisconnect),
                None => self.fail(&"DISCONNECT for a namespace not connected"),
            },
            PacketKind::ConnectError => self.fail(&"clients may not send CONNECT_ERROR"),
            PacketKind::BinaryEvent | PacketKind::BinaryAck if packet.attachments > 0 => {
                self.state.lock().partial = Some(Box::new(Partial {
                    packet,
                    attachments: Vec::new(),
                }));
            }
            _ => self.dispatch(packet, Vec::new()),
        }
    }

    fn on_binary(&self, data: Bytes) {
        let complete = {
            let mut state = self.state.lock();
            let Some(partial) = state.partial.as_mut() else {
                drop(state);
                return self.fail(&"unexpected binary message");
            };
            partial.attachments.push(data);
            if partial.attachments.len() == partial.packet.attachments {
                state.partial.take().map(|p| *p)
            } else {
                None
            }
        };
        if let Some(Partial {
            packet,
            attachments,
        }) = complete
        {
            self.dispatch(packet, attachments);
        }
    }

    fn on_close(&self, reason: CloseReason) {
        let sockets = {
            let mut state = self.state.lock();
            state.closed = true;
            state.partial = None;
            state.sockets.clone()
        };
        for socket in sockets {
            socket.finish(DisconnectReason::Transport(reason));
        }
    }
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

/// What the engine calls to create the Socket.IO side of each new session.
pub(crate) struct Factory {
    hub: Arc<Namespaces>,
    deadlines: Arc<ConnectDeadlines>,
}

impl Factory {
    pub fn new(hub: Arc<Namespaces>) -> Self {
        Self {
            hub,
            deadlines: Arc::default(),
        }
    }
}

impl ConnectionFactory for Factory {
    fn open(&self, session: &Arc<Session>, handshake: HandshakeInfo) -> Arc<dyn ConnectionHandler> {
        let conn = Connection::new(self.hub.clone(), session, handshake);
        // A session that joins no namespace within `connectTimeout` is closed.
        let timeout = Duration::from_millis(self.hub.config.socketio.connect_timeout);
        self.deadlines.push(timeout, &conn, session);
        Arc::new(conn)
    }
}
