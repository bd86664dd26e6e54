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
use super::recovery::{ids, Unrecoverable};
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

impl State {
    /// The connect of `nsp` is decided; an idle connection keeps no `connecting` storage.
    fn connected(&mut self, nsp: &str) {
        self.connecting.retain(|n| n != nsp);
        if self.connecting.is_empty() {
            self.connecting = Vec::new();
        }
    }
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
        let nsp = packet.nsp.into_owned();
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
        let mut auth = packet
            .data
            .unwrap_or_else(|| Value::Object(Default::default()));
        // The recovery fields are the client's, not the application's: taken out of `auth`
        // (the pid is a secret) before anyone sees it.
        let claim = self
            .hub
            .parking
            .as_ref()
            .and_then(|_| Claim::take(&mut auth));
        let mut request = ConnectRequest {
            namespace: nsp,
            auth,
            claims: None,
            handshake: self.handshake.clone(),
        };
        let conn = self.clone();
        run_or_spawn(async move {
            let verdict = conn
                .hub
                .authenticator
                .authenticate(&request.namespace, &request.auth, &request.handshake)
                .await;
            let decision = match verdict {
                Ok(claims) => {
                    request.claims = claims;
                    let skip = conn
                        .hub
                        .config
                        .socketio
                        .connection_state_recovery
                        .skip_middlewares;
                    let first = match (&claim, skip) {
                        (Some(_), true) => None,
                        _ => Some(conn.hub.handler.connect(request.clone()).await),
                    };
                    let refused = matches!(first, Some(ConnectDecision::Reject { .. }));
                    if let (Some(claim), false) = (&claim, refused) {
                        match conn.recover(&request, claim).await {
                            Ok(()) => return,
                            Err(why) => conn.recovery_failed(&request.namespace, why),
                        }
                    }
                    match first {
                        Some(decision) => decision,
                        None => conn.hub.handler.connect(request.clone()).await,
                    }
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
            state.connected(&nsp);
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
            id: None,
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
            if state.sockets.capacity() == 0 {
                state.sockets.reserve_exact(1); // most clients use one namespace
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
            let pid = socket.pid();
            session.send(
                &[Frame::from(packet::encode_connect_pid(
                    &nsp,
                    socket.id(),
                    pid.as_deref(),
                ))],
                false,
            );
            session.outbox.flush_boundary();
        }
        self.watch_expiry(&socket);
        self.hub.handler.connected(&socket);
    }

    /// Recovers the session `claim` names for this connection (see `socketio::recovery`):
    /// from this node's parked sockets, or taken over from the node holding it. On success
    /// the client has its CONNECT (with the same socket id) and what it missed.
    async fn recover(
        self: &Arc<Self>,
        request: &ConnectRequest,
        claim: &Claim,
    ) -> Result<(), Unrecoverable> {
        let parking = self
            .hub
            .parking
            .clone()
            .ok_or(Unrecoverable::UnknownSession)?;
        let nsp = &request.namespace;
        let ns = self
            .hub
            .namespace(nsp)
            .ok_or(Unrecoverable::UnknownSession)?;
        let session = self
            .session
            .upgrade()
            .ok_or(Unrecoverable::UnknownSession)?;
        let conn: Weak<dyn Transport> = Arc::downgrade(self) as Weak<Connection>;
        let joining = Joining {
            session,
            conn,
            handshake: self.handshake.clone(),
            auth: request.auth.clone(),
            claims: request.claims.clone(),
            data: Value::Null,
            id: None,
        };
        // Where the session is can change while this runs (a draining holder hands it to
        // a peer, possibly this node): each attempt looks again.
        let mut last = Unrecoverable::UnknownSession;
        let mut found = None;
        for _ in 0..3 {
            let attempt = match parking.lookup(&claim.pid) {
                Some(_) => self
                    .take_local(&parking, nsp, &claim.pid)
                    .await
                    .map(|s| (s, false)),
                None => self
                    .take_over(&parking, &ns, claim)
                    .await
                    .map(|s| (s, true)),
            };
            match attempt {
                Ok(taken) => {
                    found = Some(taken);
                    break;
                }
                Err(why @ (Unrecoverable::Busy | Unrecoverable::UnknownSession)) => {
                    last = why;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(why) => return Err(why),
            }
        }
        let (old, remote) = found.ok_or(last)?;
        let (socket, missed) = ns.recover(&old, joining, claim.offset.as_deref())?;
        {
            let mut state = self.state.lock();
            state.connected(nsp);
            if state.closed {
                drop(state);
                socket.finish(DisconnectReason::Transport(CloseReason::TransportClose));
                return Ok(());
            }
            state.sockets.push(socket.clone());
        }
        let stats = &parking.recovery.stats;
        let counter = if remote {
            &stats.recovered_remote
        } else {
            &stats.recovered_local
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats
            .replayed_packets
            .fetch_add(missed as u64, Ordering::Relaxed);
        tracing::debug!(socket = socket.id(), missed, remote, "session recovered");
        self.watch_expiry(&socket);
        self.hub.handler.recovered(&socket, missed);
        Ok(())
    }

    /// Takes session `claim` over from the node holding it: joins its rooms here with a
    /// parked copy, waits until every node delivers to this one, then has the holder hand
    /// over what the client missed and let go. Returns the copy, claimed.
    async fn take_over(
        &self,
        parking: &Arc<super::parking::Parking>,
        ns: &Arc<super::namespace::Namespace>,
        claim: &Claim,
    ) -> Result<Arc<Socket>, Unrecoverable> {
        let handover = parking
            .recovery
            .handover()
            .cloned()
            .ok_or(Unrecoverable::UnknownSession)?;
        let (holder, state) = handover.find(&claim.pid).await?;
        if state.nsp != ns.name() || state.pid != *claim.pid {
            return Err(Unrecoverable::UnknownSession);
        }
        let ghost = ns
            .add_parked(&state, parking.recovery.max_disconnection())
            .ok_or(Unrecoverable::Busy)?;
        handover.propagated().await;
        if !parking.claim(&ghost) {
            return Err(Unrecoverable::Busy);
        }
        match handover
            .take(&holder, &claim.pid, claim.offset.as_deref())
            .await
        {
            Ok(tail) => {
                ns.set_tail(&ghost, tail);
                Ok(ghost)
            }
            Err(why) => {
                ns.drop_parked(&ghost);
                Err(why)
            }
        }
    }

    /// Claims session `pid` held by this node (disconnecting it first if its transport
    /// still looks alive here: its client is the one reconnecting).
    async fn take_local(
        &self,
        parking: &Arc<super::parking::Parking>,
        nsp: &str,
        pid: &str,
    ) -> Result<Arc<Socket>, Unrecoverable> {
        let old = parking
            .parked_session(pid)
            .await
            .ok_or(Unrecoverable::UnknownSession)?;
        if old.nsp() != nsp {
            return Err(Unrecoverable::UnknownSession);
        }
        if !parking.claim(&old) {
            return Err(Unrecoverable::Busy);
        }
        Ok(old)
    }

    fn recovery_failed(&self, nsp: &str, why: Unrecoverable) {
        tracing::debug!(
            nsp,
            reason = why.label(),
            "session not recovered: a new one starts"
        );
        if let Some(parking) = &self.hub.parking {
            parking.recovery.stats.fail(why);
        }
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

/// What a client presents to recover its session: `pid` and `offset` in its CONNECT's auth
/// object (as socket.io clients send them).
pub(super) struct Claim {
    pid: Arc<str>,
    offset: Option<String>,
}

impl Claim {
    /// Takes the recovery fields out of `auth`; a claim when the pid is well formed.
    fn take(auth: &mut Value) -> Option<Self> {
        let fields = auth.as_object_mut()?;
        let pid = fields.remove("pid");
        let offset = fields.remove("offset");
        let pid = pid
            .as_ref()
            .and_then(Value::as_str)
            .filter(|p| ids::is_pid(p))?;
        // No offset (or null: the client had received nothing) replays from the session's
        // start; an offset that is not one of ours voids the claim rather than count as none.
        let offset = match offset {
            None | Some(Value::Null) => None,
            Some(Value::String(o)) if ids::is_offset(&o) => Some(o),
            Some(_) => return None,
        };
        Some(Self {
            pid: Arc::from(pid),
            offset,
        })
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_are_taken_out_of_auth_and_bad_ones_void() {
        let pid = ids::new_pid("hub-0");
        let mut auth = json!({"token": "t", "pid": &*pid, "offset": "abc-1"});
        let claim = Claim::take(&mut auth).unwrap();
        assert_eq!(
            (&*claim.pid, claim.offset.as_deref()),
            (&*pid, Some("abc-1"))
        );
        assert_eq!(
            auth,
            json!({"token": "t"}),
            "pid and offset never reach the app"
        );
        let mut no_offset = json!({"pid": &*pid, "offset": null});
        assert_eq!(Claim::take(&mut no_offset).unwrap().offset, None);
        for bad in [
            json!({"pid": &*pid, "offset": "x\"]}"}),
            json!({"pid": &*pid, "offset": 7}),
            json!({"pid": "short"}),
            json!({"pid": 42}),
            json!({"offset": "abc-1"}),
        ] {
            let mut auth = bad.clone();
            assert!(Claim::take(&mut auth).is_none(), "{bad}");
            assert!(auth.get("pid").is_none() && auth.get("offset").is_none());
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

/// Runs `future` at once, and gives it a task only if it has to wait. A CONNECT with nothing
/// to wait for (no token to verify remotely, no `connect` webhook) completes inside the
/// packet's own dispatch: one task fewer per handshake, with its allocation, scheduling
/// and teardown. A future left pending is polled again by its task, which registers that
/// task's waker in place of the no-op one, as every poll must.
fn run_or_spawn(future: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if future.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(future);
    }
}
