//! The cluster layer: membership, room ownership and (to come) the room directory and peer
//! links that make many nodes behave as one Socket.IO server.

pub mod ring;

pub use ring::Ring;
