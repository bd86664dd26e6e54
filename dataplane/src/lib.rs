//! Roomcast data plane: an Engine.IO v4 / Socket.IO v5 hub built to scale out.
//!
//! Layers, bottom up (as in Node `socket.io`): [`engine`] (sessions, transports),
//! [`socketio`] (packets, namespaces, sockets, rooms, broadcasts) and the application
//! [`socketio::Handler`] that receives connects, events and disconnects.

pub mod config;
pub mod engine;
pub mod socketio;
