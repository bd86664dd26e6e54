//! Socket.IO v5 on top of the engine: packets, namespaces, sockets, rooms and broadcasts.

//!
//! Modules, bottom up: [`packet`] and [`payload`] (the wire format), [`rooms`] (the rooms
//! index as plain data, like socket.io's in-memory adapter), [`socket`] (one client in one
//! namespace), [`handler`] (the application interface), [`namespace`] (sockets, rooms and
//! broadcasts of one namespace), `registry` (the live namespaces), `connection` (the
//! Socket.IO side of one engine session) and [`hub`] (the server handle).

mod connection;
mod deadlines;
mod expiry;
pub mod external;
pub mod handler;
pub mod hub;
pub mod namespace;
pub mod packet;
mod parking;
pub mod payload;
mod pending_acks;
pub mod recovery;
mod registry;
pub mod rooms;
pub mod socket;

pub use handler::{AckResponder, ConnectDecision, ConnectRequest, Event, Handler};
pub use hub::Hub;
pub use namespace::{BroadcastAcks, Fanout, Namespace};
pub use payload::Payload;
pub use registry::{namespace_matches, segments_match};
pub use rooms::Selector;
pub use socket::{AckReply, DisconnectReason, Socket, SocketError, Transport};
