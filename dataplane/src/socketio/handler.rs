//! The application interface: how connects, events, acks and disconnects reach app logic.

use std::sync::Arc;

use serde_json::Value;

use super::payload::Payload;
use super::socket::{DisconnectReason, Socket};
use crate::engine::HandshakeInfo;

/// A client asks to join a namespace.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub namespace: String,
    /// The `auth` object of the CONNECT packet (`{}` when absent).
    pub auth: Value,
    /// Claims verified by the authenticator (e.g. of the client's JWT), if any.
    pub claims: Option<Value>,
    pub handshake: Arc<HandshakeInfo>,
}

/// The application's answer to a [`ConnectRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectDecision {
    /// Accept, optionally with initial socket data and rooms.
    Accept { data: Value, rooms: Vec<String> },
    /// Refuse with a CONNECT_ERROR carrying `message` and optional `data`.
    Reject {
        message: String,
        data: Option<Value>,
    },
}

impl ConnectDecision {
    pub fn accept() -> Self {
        ConnectDecision::Accept {
            data: Value::Null,
            rooms: Vec::new(),
        }
    }

    pub fn reject(message: impl Into<String>, data: Option<Value>) -> Self {
        ConnectDecision::Reject {
            message: message.into(),
            data,
        }
    }
}

/// A client event, with the means to acknowledge it when the client asked for an ack.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub payload: Payload,
    pub ack: Option<AckResponder>,
}

/// Answers one client ack. Dropping it without answering leaves the client's callback
/// unanswered, as in Node when the handler never calls it.
#[derive(Debug)]
pub struct AckResponder {
    pub(super) socket: Arc<Socket>,
    pub(super) id: u64,
}

impl AckResponder {
    pub fn send(self, payload: Payload) {
        self.socket.send_ack(self.id, &payload);
    }
}

/// Application logic. Event and disconnect callbacks run on the connection's I/O path:
/// they must not block; spawn a task for anything slow (the webhook layer does).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Decides whether a client may join a namespace.
    async fn connect(&self, _request: ConnectRequest) -> ConnectDecision {
        ConnectDecision::accept()
    }

    /// The socket is connected and the client was told; emits from here follow CONNECT.
    fn connected(&self, _socket: &Arc<Socket>) {}

    fn event(&self, socket: &Arc<Socket>, event: Event);

    fn disconnected(&self, _socket: &Arc<Socket>, _reason: DisconnectReason) {}

    /// A disconnected socket was recovered (connection state recovery): same id, rooms
    /// and data, and `missed` packets sent again. `connected` is not called for it, and
    /// `disconnected` was not called when it was cut off.
    fn recovered(&self, _socket: &Arc<Socket>, _missed: usize) {}
}
