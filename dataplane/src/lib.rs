//! Roomcast data plane: an Engine.IO v4 / Socket.IO v5 hub built to scale out.
//!
//! Layers, bottom up (as in Node `socket.io`): [`engine`] (sessions, transports),
//! [`socketio`] (packets, namespaces, sockets, rooms, broadcasts) and the application
//! [`socketio::Handler`] that receives connects, events and disconnects. [`server`] runs
//! the HTTP front; [`relay`] is the binary's built-in application.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod hubapp;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod relay;
pub mod server;
pub mod socketio;
pub mod upstream;
