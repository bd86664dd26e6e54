//! The cluster layer: membership, room ownership and the room directory, and (to come) the peer
//! links that make many nodes behave as one Socket.IO server.

pub mod directory;
pub mod membership;
pub mod ring;

pub use directory::{Directory, Targets};
pub use membership::{Discovery, Members, StaticDiscovery};
pub use ring::Ring;
