//! Engine.IO v4: sessions, the polling and WebSocket transports, upgrades and heartbeats.
//!
//! The engine knows nothing of Socket.IO: it hands each session's messages to a
//! [`ConnectionHandler`] created by a [`ConnectionFactory`] at handshake time.
//!
//! This file is the bottom of the folder: it holds the small definitions every part shares
//! (what the engine tells the layer above) and uses none of its children. The modules, bottom
//! up (each uses only those before it):
//! - pure codecs: [`packet`] (Engine.IO packets and polling payloads), [`wsframe`] (WebSocket
//!   frames), [`sid`] (session and socket ids);
//! - [`stats`] (the counters `/metrics` reads), [`outbox`] (a session's outbound queue),
//!   [`settings`] (settings resolved from the configuration), `coalesce` (write rounds that
//!   wait under load) and [`cork`] (write combining),
//!   `iplimit` (open sessions per client address);
//! - [`session`] (one session), `heartbeat` (pings for every session), `wsconn` (one
//!   WebSocket's socket), [`response`] (error answers and CORS), [`forward`] (requests for
//!   sessions another node owns);
//! - [`sessions`] (the [`Engine`]: the node's session table), `request` (the query and
//!   header sizes of a request) and [`rewind`] (a stream with its first bytes put back),
//!   then the transports `polling` and `websocket`, and on top the two entry points:
//!   `router`, for HTTP requests hyper parsed ([`Engine::handle`]), and [`direct`], which
//!   answers a new connection's WebSocket handshake without hyper and hands anything else
//!   to it.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod coalesce;
pub mod cork;
pub mod direct;
pub mod forward;
pub mod headers;
mod heartbeat;
pub(crate) mod iplimit;
pub mod outbox;
pub mod packet;
mod polling;
mod request;
pub mod response;
pub mod rewind;
mod router;
mod scratch;
pub mod session;
pub mod sessions;
pub mod settings;
pub mod sid;
mod stagger;
pub mod stats;
mod websocket;
mod wsconn;
pub mod wsframe;

use std::net::SocketAddr;

use bytes::Bytes;

pub use coalesce::coalesced_rounds;
pub use forward::{Route, SessionRouter};
pub use headers::Headers;
pub use outbox::{Frame, OutboxLimits, PushOutcome};
pub use response::{Body, EngineError};
pub use session::{ConnectionFactory, Session};
pub use sessions::{Engine, Refusal};
pub use settings::{Coalescing, EngineSettings};
pub use stats::EngineStats;

/// What the engine knows of the HTTP request that opened a session.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    pub headers: Headers,
    pub address: SocketAddr,
    /// The request target, query included ([`HandshakeInfo::query`] is its tail: one string
    /// per connection, not two).
    pub url: String,
    pub time: std::time::SystemTime,
    pub secure: bool,
}

impl HandshakeInfo {
    /// The handshake of a session whose client has not connected here (a session taken
    /// over from another node, until its client comes back).
    pub fn unknown() -> Self {
        Self {
            headers: Headers::default(),
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            url: String::new(),
            time: std::time::SystemTime::UNIX_EPOCH,
            secure: false,
        }
    }

    /// The query string of the request (after `?`; empty without one).
    pub fn query(&self) -> &str {
        self.url.split_once('?').map_or("", |(_, query)| query)
    }
}

/// Why a session ended. The strings are the Socket.IO disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a close packet.
    TransportClose,
    /// The connection failed (I/O error, protocol violation on the wire).
    TransportError,
    PingTimeout,
    /// The client sent a packet that could not be decoded.
    ParseError,
    /// The server closed the session (e.g. `disconnect(true)`).
    ForcedClose,
    /// The client could not keep up with its outbound queue.
    SlowConsumer,
    /// The session never joined a namespace within `connectTimeout`.
    ConnectTimeout,
    ServerShutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }
}

/// The layer above the engine (Socket.IO) for one session.
pub trait ConnectionHandler: Send + Sync {
    /// A text message (the data of an Engine.IO `4` packet), valid UTF-8.
    fn on_message(&self, text: Bytes);
    /// A binary message.
    fn on_binary(&self, data: Bytes);
    /// The session closed; called exactly once.
    fn on_close(&self, reason: CloseReason);
    /// The client upgraded the session to WebSocket.
    fn on_upgrade(&self) {}
}
