//! Roomcast data plane: an Engine.IO v4 / Socket.IO v5 hub built to scale out.
//!
//! The layers, bottom up (as in Node `socket.io`: engine -> parser -> adapter -> server).
//! A module may use the modules of its own layer and those below it, never those above;
//! `tests/layers.rs` derives the import graph from the sources and fails on an upward
//! import or a cycle between modules.
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | 0 | [`config`] | the hub configuration (the `roomcast-config` crate, shared with the operator) |
//! | 1 | [`engine`] | Engine.IO: sessions, polling and WebSocket transports, heartbeats, outboxes, forwarding of other nodes' sessions |
//! | 2 | [`auth`] | client authentication at the handshake (JWT, JWKS) |
//! | 3 | [`socketio`] | Socket.IO: packets, namespaces, sockets, rooms, broadcasts, acks |
//! | 4 | [`ops`] | hub-wide operations (emit, socketsJoin, fetchSockets...) and their single-node implementation |
//! | 5 | [`cluster`] | membership, discovery, peer links, the rooms view, cluster-wide operations |
//! | 6 | [`app`] | what the hub does with clients: the handler, policies, relay, webhooks |
//! | 7 | [`applink`] | or: the clients served by the application's own socket.io Server, over app links (Node SDK) |
//! | 8 | [`api`] | the management REST API |
//! | 9 | [`metrics`] | Prometheus metrics, read from every layer's counters, and the metrics listener (`/metrics`, probes) |
//! | 10 | [`server`] | the HTTP front: client endpoint, health |
//! | 11 | [`node`] | assembles a node from its configuration and runs it |
//! | 12 | [`cli`] | command-line flags and the binary's entry |

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub use roomcast_config as config;

pub mod engine;

pub mod auth;

pub mod socketio;

pub mod ops;

pub mod cluster;

pub mod app;

pub mod applink;

pub mod api;

pub mod metrics;

pub mod server;

pub mod node;

pub mod cli;
