//! App links: the clients of this node served by applications' own socket.io Servers.
//!
//! An application runs the real `socket.io` Server with the Node SDK (`sdk/node`), which
//! opens one gRPC link (`proto/app.proto`) from each app instance to every hub node. This
//! node keeps terminating Engine.IO (transports, heartbeats, upgrades) and hands each new
//! client session to one linked instance ([`AppLinks`]: the one with the fewest sessions);
//! the session's Socket.IO packets then travel unchanged on that link ([`session`]). Rooms
//! and broadcasts stay the hub's: the app reports joins and leaves, each broadcast arrives
//! once and the hub fans it out on every node like any other ([`inbound`]).
//!
//! Modules: [`proto`] (generated), [`outbox`] (a link's queue, bounded in bytes),
//! [`link`] (one instance's link: its sessions and requests), [`session`] (a client
//! session handed to an app: the engine side and the hub's view of its sockets),
//! [`inbound`] (what an app sends), [`links`] (the registry, session assignment and the
//! members an app is told of) and [`service`] (the gRPC service and its listener).

pub mod inbound;
pub mod link;
pub mod links;
pub mod outbox;
pub mod proto;
pub mod service;
pub mod session;

pub use links::AppLinks;
