//! Socket.IO v5 on top of the engine: packets, namespaces, sockets, rooms and broadcasts.

mod connection;
pub mod handler;
pub mod hub;
pub mod namespace;
pub mod packet;
pub mod payload;
pub mod socket;

pub use handler::{
    AckResponder, ConnectDecision, ConnectRequest, DisconnectReason, Event, Handler,
};
pub use hub::Hub;
pub use namespace::{BroadcastAcks, Fanout, Namespace, Selector};
pub use payload::Payload;
pub use socket::{AckReply, Socket, SocketError};
