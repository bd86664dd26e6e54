//! The application upstream: client connects, events and disconnects delivered to the app's
//! webhook as CloudEvents, in order per socket, without blocking any other socket.

pub mod cloudevent;
pub mod queue;
pub mod webhook;

pub use webhook::{UpstreamError, UpstreamStats, Webhook};
