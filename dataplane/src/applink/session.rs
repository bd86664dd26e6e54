//! A client session handed to an application: the engine side (what the client sends goes
//! to the app, untouched) and the hub's view of the sockets the app made on it.
//!
//! One exception to "untouched": a client's ACK whose id is at least
//! [`HUB_ACK_BASE`] answers a broadcast with acks the hub sent (the app's own ack ids stay
//! below it), so the hub takes it to collect the replies hub-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use super::proto::{self as pb, hub_message::Kind, packet::Body};
use crate::engine::{CloseReason, ConnectionHandler, Frame, HandshakeInfo, PushOutcome, Session};
use crate::socketio::external::HUB_ACK_BASE;
use crate::socketio::packet::{Packet, PacketKind};
use crate::socketio::{DisconnectReason, Payload, Socket, Transport};

/// What a session needs of its link (`link::Link`), which holds it.
pub trait Uplink: Send + Sync {
    /// Queues a message for the app; false when the link is over its budget or gone.
    fn send(&self, kind: Kind) -> bool;
    /// Queues a client's packet for the app, counted in `queued` until it is written.
    fn send_for(&self, kind: Kind, queued: Arc<AtomicUsize>) -> bool;
    /// The session ended: the link forgets it.
    fn remove_session(&self, handle: u64);
}

/// A binary ACK for the hub, waiting for its attachments.
struct PartialAck {
    socket: Arc<Socket>,
    id: u64,
    args: Vec<serde_json::Value>,
    expected: usize,
    attachments: Vec<Bytes>,
}

#[derive(Default)]
struct State {
    /// The hub's view of the sockets the app made on this session (one per namespace).
    sockets: Vec<Arc<Socket>>,
    partial_ack: Option<Box<PartialAck>>,
    /// The app's last volatile text frame was dropped: so are its attachments.
    dropping_volatile: bool,
    closed: bool,
}

pub struct AppSession {
    pub handle: u64,
    link: Weak<dyn Uplink>,
    session: Weak<Session>,
    pub handshake: Arc<HandshakeInfo>,
    max_attachments: usize,
    /// Bytes of this client's packets queued on the link, not yet written to the app.
    queued: Arc<AtomicUsize>,
    /// `appLink.maxQueuedBytesPerSession`.
    max_queued: usize,
    state: Mutex<State>,
}

impl AppSession {
    pub fn new(
        handle: u64,
        link: Weak<dyn Uplink>,
        session: &Arc<Session>,
        handshake: Arc<HandshakeInfo>,
        max_attachments: usize,
        max_queued: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            handle,
            link,
            session: Arc::downgrade(session),
            handshake,
            max_attachments,
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
            state: Mutex::new(State::default()),
        })
    }

    pub fn engine_session(&self) -> Option<Arc<Session>> {
        self.session.upgrade()
    }

    fn send(&self, kind: Kind) {
        if let Some(link) = self.link.upgrade() {
            link.send(kind);
        }
    }

    /// Passes one of the client's messages to the app. A client whose earlier packets still
    /// wait on the link past `appLink.maxQueuedBytesPerSession` is cut off alone, so that one
    /// client cannot fill its app's link and get every other client of that app cut off.
    fn forward(&self, body: Body, size: usize) {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(size) > self.max_queued {
            if let Some(session) = self.session.upgrade() {
                tracing::warn!(sid = %session.sid, queued, limit = self.max_queued,
                    "closing a client whose packets wait for its app: appLink.maxQueuedBytesPerSession reached");
                session.close(CloseReason::ForcedClose);
            }
            return;
        }
        if let Some(link) = self.link.upgrade() {
            let packet = Kind::Packet(pb::Packet {
                session: self.handle,
                body: Some(body),
                volatile: false,
            });
            link.send_for(packet, self.queued.clone());
        }
    }

    /// The hub's socket of namespace `nsp` with id `id`, if the app made it.
    pub fn socket(&self, nsp: &str, id: &str) -> Option<Arc<Socket>> {
        self.state
            .lock()
            .sockets
            .iter()
            .find(|s| s.nsp() == nsp && s.id() == id)
            .cloned()
    }

    /// Records a socket the app made; false once the session is closed.
    pub fn add_socket(&self, socket: Arc<Socket>) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.sockets.push(socket);
        true
    }

    /// One frame from the app for the client. Volatile frames are dropped while the
    /// client's queue is not empty; the attachments of a dropped packet go with it.
    pub fn deliver(&self, body: Body, volatile: bool) {
        let Some(session) = self.session.upgrade() else {
            return;
        };
        let frame = match body {
            Body::Text(text) => {
                // An Engine.IO message: its type digit, then the Socket.IO packet.
                let mut message = String::with_capacity(text.len().saturating_add(1));
                message.push('4');
                message.push_str(&text);
                Frame::from(message)
            }
            Body::Binary(data) => {
                if volatile && self.state.lock().dropping_volatile {
                    return;
                }
                Frame::Binary(data)
            }
        };
        let is_text = matches!(frame, Frame::Text(_));
        // Sent without the state lock: an overflow closes the session (a slow consumer, as
        // for any other push), which runs `on_close`. Frames of one link arrive in order on
        // one task, so the flag cannot race.
        let outcome = session.send(&[frame], volatile && is_text);
        if is_text {
            self.state.lock().dropping_volatile = outcome == PushOutcome::DroppedVolatile;
        }
    }

    /// Closes the client's session (the app's `conn.close()`, or its link ended).
    pub fn close_client(&self) {
        if let Some(session) = self.session.upgrade() {
            session.close(CloseReason::ForcedClose);
        }
    }

    /// A client ACK for the hub, if `text` is one: taken (true) or left for the app.
    fn take_hub_ack(&self, text: &str) -> bool {
        if !matches!(text.as_bytes().first(), Some(b'3' | b'6')) {
            return false;
        }
        let Ok(packet) = Packet::decode(text, self.max_attachments) else {
            return false; // the app's parser will say what is wrong with it
        };
        let Some(id) = packet.id.filter(|id| *id >= HUB_ACK_BASE) else {
            return false;
        };
        let args = match packet.data {
            Some(serde_json::Value::Array(args)) => args,
            _ => Vec::new(),
        };
        let mut state = self.state.lock();
        let Some(socket) = state
            .sockets
            .iter()
            .find(|s| s.nsp() == packet.nsp)
            .cloned()
        else {
            return true; // for the hub, but its socket is gone
        };
        if packet.kind == PacketKind::BinaryAck && packet.attachments > 0 {
            state.partial_ack = Some(Box::new(PartialAck {
                socket,
                id,
                args,
                expected: packet.attachments,
                attachments: Vec::new(),
            }));
            return true;
        }
        drop(state);
        socket.receive_ack(id, Payload::new(args));
        true
    }

    /// An attachment of a binary ACK for the hub, if one is being reassembled.
    fn take_hub_attachment(&self, data: &Bytes) -> bool {
        let mut state = self.state.lock();
        let Some(partial) = state.partial_ack.as_mut() else {
            return false;
        };
        partial.attachments.push(data.clone());
        if partial.attachments.len() < partial.expected {
            return true;
        }
        if let Some(done) = state.partial_ack.take() {
            drop(state);
            let PartialAck {
                socket,
                id,
                args,
                attachments,
                ..
            } = *done;
            socket.receive_ack(id, Payload { args, attachments });
        }
        true
    }
}

impl ConnectionHandler for AppSession {
    fn on_message(&self, text: Bytes) {
        {
            let mut state = self.state.lock();
            // Text while attachments were expected: the reassembly is abandoned.
            state.partial_ack = None;
        }
        let Ok(text) = std::str::from_utf8(&text) else {
            return; // the engine hands over valid UTF-8 only
        };
        if self.take_hub_ack(text) {
            return;
        }
        self.forward(Body::Text(text.to_string()), text.len());
    }

    fn on_binary(&self, data: Bytes) {
        if self.take_hub_attachment(&data) {
            return;
        }
        let size = data.len();
        self.forward(Body::Binary(data), size);
    }

    fn on_upgrade(&self) {
        self.send(Kind::Upgraded(pb::Upgraded {
            session: self.handle,
            transport: "websocket".to_string(),
        }));
    }

    fn on_close(&self, reason: CloseReason) {
        let sockets = {
            let mut state = self.state.lock();
            state.closed = true;
            state.partial_ack = None;
            std::mem::take(&mut state.sockets)
        };
        for socket in sockets {
            socket.detach(DisconnectReason::Transport(reason));
        }
        if let Some(link) = self.link.upgrade() {
            link.remove_session(self.handle);
            link.send(Kind::Closed(pb::Closed {
                session: self.handle,
                reason: reason.as_str().to_string(),
            }));
        }
    }
}

impl Transport for AppSession {
    fn forget(&self, socket: &Arc<Socket>) {
        self.state
            .lock()
            .sockets
            .retain(|s| !Arc::ptr_eq(s, socket));
    }

    fn disconnect_all_and_close(&self) {
        self.close_client();
    }

    fn disconnect_requested(&self, socket: &Arc<Socket>, close: bool) -> bool {
        self.send(Kind::Disconnect(pb::Disconnect {
            session: self.handle,
            namespace: socket.nsp().to_string(),
            socket_id: socket.id().to_string(),
            close,
        }));
        true
    }

    fn rooms_changed(&self, socket: &Arc<Socket>, joined: &[String], left: &[String]) {
        self.send(Kind::RoomsChanged(pb::RoomsChanged {
            session: self.handle,
            namespace: socket.nsp().to_string(),
            socket_id: socket.id().to_string(),
            joined: joined.to_vec(),
            left: left.to_vec(),
        }));
    }
}
