//! The cluster's answer to the engine's question "where are this member's sessions?":
//! at the client address the member advertised in the Hello of its current peer link.

use std::net::SocketAddr;
use std::sync::Arc;

use super::mesh::Mesh;
use crate::engine::{Route, SessionRouter};

/// Routes other members' sessions to the client addresses their links advertise.
pub struct MeshRouter(pub Arc<Mesh>);

impl SessionRouter for MeshRouter {
    fn route(&self, owner: &str) -> Route {
        if owner == self.0.me() {
            return Route::Local;
        }
        // No link (unknown member, or down): its sessions are unreachable from here.
        match self.0.client_address_of(owner) {
            Some(addr) => Route::Forward(addr),
            None => Route::Unknown,
        }
    }
}

/// The client address this node advertises: the configured one, else the bound client
/// address with an unspecified IP replaced by the peer listener's IP (when that one is
/// concrete; otherwise peers substitute the IP they reach this node's peer endpoint on).
pub fn advertise_address(
    configured: Option<SocketAddr>,
    client_bound: SocketAddr,
    peer_bound: SocketAddr,
) -> SocketAddr {
    if let Some(addr) = configured {
        return addr;
    }
    let mut addr = client_bound;
    if addr.ip().is_unspecified() && !peer_bound.ip().is_unspecified() {
        addr.set_ip(peer_bound.ip());
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn advertise_address_choice() {
        let peer = a("10.0.0.5:7000");
        assert_eq!(
            advertise_address(Some(a("192.0.2.1:80")), a("0.0.0.0:3000"), peer),
            a("192.0.2.1:80")
        );
        assert_eq!(
            advertise_address(None, a("127.0.0.11:41000"), peer),
            a("127.0.0.11:41000")
        );
        assert_eq!(
            advertise_address(None, a("0.0.0.0:3000"), peer),
            a("10.0.0.5:3000")
        );
        assert_eq!(
            advertise_address(None, a("[::]:3000"), a("[fd00::5]:7000")),
            a("[fd00::5]:3000")
        );
        // Nothing concrete to offer: left for the peers to fill in.
        assert_eq!(
            advertise_address(None, a("0.0.0.0:3000"), a("0.0.0.0:7000")),
            a("0.0.0.0:3000")
        );
    }
}
