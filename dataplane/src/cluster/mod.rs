//! The cluster layer: membership, the peer links, and which peers have members in which
//! rooms: what makes many nodes behave as one Socket.IO server.

pub mod broadcast;
pub mod discovery;
pub mod handover;
pub mod inbound;
pub mod interest;
pub mod kube_discovery;
pub mod listen;
pub mod membership;
pub mod mesh;
pub mod node;
pub mod ops;
pub mod owned;
pub mod ownership;
pub mod peer_certs;
pub mod proto;
pub mod queries;
pub mod ring;
pub mod rooms;
pub mod route;
pub mod sockets;

pub use discovery::DnsDiscovery;
pub use membership::{
    Discovery, FileDiscovery, Members, MembersDiff, MembersError, Membership, StaticDiscovery,
};
pub use mesh::{LinkSettings, Material, Mesh, MeshStats, PeerTls, TlsFiles, TlsSettings};
pub use node::Cluster;
pub use ops::ClusterOps;
pub use ring::Ring;
pub use route::MeshRouter;
