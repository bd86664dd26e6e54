//! What a hub does with its clients: the application layer above Socket.IO.
//!
//! - [`handler`]: the [`HubApp`] handler, driven by configuration: per namespace, client
//!   room policies (`roomcast:*` events), an event allow-list, the upstream webhook and the
//!   development relay;
//! - [`policy`]: client room policies (which rooms a client may join or emit to);
//! - [`relay`]: the development relay (any event to everyone else in the sender's rooms);
//! - [`upstream`]: webhooks to the application (CloudEvents, ordered per socket).
//!
//! The hub-wide operations the application calls (emit, socketsJoin, fetchSockets...) are
//! [`crate::ops`], one layer down, because the cluster implements them too.

pub mod handler;
pub mod policy;
pub mod relay;
pub mod upstream;

pub use handler::HubApp;
