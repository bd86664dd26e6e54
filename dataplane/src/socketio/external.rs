//! Sockets whose Socket.IO side lives elsewhere: in an application's own socket.io Server,
//! served over an app link (`crate::applink`).
//!
//! The hub keeps what it needs to fan broadcasts out: each such socket is a [`Socket`] of
//! its namespace, with its id and rooms, writing to the client's engine session like any
//! other. Everything else is the application's: what the client sends goes to the app, and
//! the hub never answers, disconnects or changes the socket on its own; it asks the app
//! through the socket's [`Transport`].

use std::sync::{Arc, Weak};

use serde_json::Value;

use super::hub::Hub;
use super::namespace::Namespace;
use super::payload::Payload;
use super::socket::{DisconnectReason, Joining, Socket, Transport};
use crate::engine::{HandshakeInfo, Session};

pub use super::namespace::HUB_ACK_BASE;

/// What the hub knows of a socket an application created.
pub struct Attach {
    pub session: Arc<Session>,
    pub handshake: Arc<HandshakeInfo>,
    /// The id the application gave the socket (it names this node: see `engine::sid`).
    pub id: Arc<str>,
    /// Where hub requests about the socket go (the app link's session).
    pub conn: Weak<dyn Transport>,
}

/// Why a socket could not be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("namespace {0:?} refused: limits.maxDynamicNamespaces reached")]
    NamespaceLimit(String),
    #[error("socket id {0:?} does not name this node")]
    ForeignId(String),
    #[error("socket id {0:?} is already in use")]
    IdInUse(String),
}

impl Hub {
    /// The namespace an application's socket lives in, created on first use (bounded by
    /// `limits.maxDynamicNamespaces`, like namespaces clients create).
    pub fn namespace_for_app(&self, name: &str) -> Result<Arc<Namespace>, AttachError> {
        self.inner
            .namespace(name)
            .ok_or_else(|| AttachError::NamespaceLimit(name.to_string()))
    }
}

impl Namespace {
    /// Adds an application's socket (no CONNECT handshake: the app already ran it).
    pub fn attach(
        self: &Arc<Self>,
        attach: Attach,
        suffix: &str,
    ) -> Result<Arc<Socket>, AttachError> {
        let Attach {
            session,
            handshake,
            id,
            conn,
        } = attach;
        if !crate::engine::sid::is_socket_id(&id) || !id.ends_with(suffix) {
            return Err(AttachError::ForeignId(id.to_string()));
        }
        if self.socket(&id).is_some() {
            return Err(AttachError::IdInUse(id.to_string()));
        }
        Ok(self.add_socket(Joining {
            session,
            conn,
            handshake,
            auth: Value::Null,
            claims: None,
            data: Value::Null,
            id: Some(id),
        }))
    }
}

impl Socket {
    /// A client's ACK for an emit the hub sent with an ack id (a broadcast with acks).
    pub fn receive_ack(&self, id: u64, payload: Payload) {
        self.resolve_ack(id, payload);
    }

    /// Takes the socket out of its namespace and rooms, without a DISCONNECT packet (the
    /// application sent it, or the client left).
    pub fn detach(self: &Arc<Self>, reason: DisconnectReason) {
        self.finish(reason);
    }
}
