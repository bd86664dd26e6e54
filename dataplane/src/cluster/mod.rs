//! The cluster layer: membership, room ownership and the room directory, and the peer
//! links that make many nodes behave as one Socket.IO server.

pub mod broadcast;
pub mod directory;
pub mod inbound;
pub mod membership;
pub mod node;
pub mod ops;
pub mod peer;
pub mod proto;
pub mod queries;
pub mod ring;
pub mod route;
pub mod sockets;

pub use directory::{Directory, Targets};
pub use membership::{Discovery, Members, MembersError, StaticDiscovery};
pub use node::Cluster;
pub use ops::ClusterOps;
pub use peer::{LinkSettings, Mesh, MeshStats};
pub use ring::Ring;
pub use route::MeshRouter;
