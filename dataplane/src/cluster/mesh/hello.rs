//! The Hello of a link travels in gRPC metadata (the dialer's in the request headers, the
//! acceptor's in the response headers), not as a stream message: the acceptor reads who is
//! calling, and checks it against the client certificate, before it reads a single byte of
//! the stream, and the headers are bounded by the HTTP/2 header list limit
//! (`transport::MAX_HEADER_LIST_BYTES`).
//!
//! Pure: writing and reading the two entries, and deciding which advertised client
//! address to believe.

use std::net::SocketAddr;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

use crate::cluster::proto as pb;

/// The member id of the side speaking.
const MEMBER: &str = "roomcast-member";
/// Where it serves Socket.IO clients (IP:PORT); absent: it takes no forwarded requests.
const CLIENT_ADDRESS: &str = "roomcast-client-address";
/// Where it takes app links (IP:PORT); absent: it takes none.
const APP_ADDRESS: &str = "roomcast-app-address";
/// Longest member id (a DNS name is at most 253 bytes).
const MAX_MEMBER_BYTES: usize = 253;

/// Writes `hello` into `metadata`. Values that are not valid header text are left out (the
/// other side then refuses the link, saying why).
pub(super) fn write(metadata: &mut MetadataMap, hello: &pb::Hello) {
    if let Ok(v) = MetadataValue::try_from(hello.member.as_str()) {
        metadata.insert(MEMBER, v);
    }
    for (key, value) in [
        (CLIENT_ADDRESS, &hello.client_address),
        (APP_ADDRESS, &hello.app_address),
    ] {
        if !value.is_empty() {
            if let Ok(v) = MetadataValue::try_from(value.as_str()) {
                metadata.insert(key, v);
            }
        }
    }
}

/// Reads the Hello in `metadata`.
pub(super) fn read(metadata: &MetadataMap) -> Result<pb::Hello, Status> {
    let member = metadata
        .get(MEMBER)
        .and_then(|v| v.to_str().ok())
        .filter(|m| !m.is_empty() && m.len() <= MAX_MEMBER_BYTES)
        .ok_or_else(|| Status::invalid_argument("no member id (roomcast-member header)"))?;
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Ok(pb::Hello {
        member: member.to_string(),
        client_address: text(CLIENT_ADDRESS),
        app_address: text(APP_ADDRESS),
    })
}

/// The addresses a peer's Hello advertises that this node believes (see [`client_address`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Advertised {
    pub client: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
}

pub(super) fn advertised(hello: &pb::Hello, peer_addr: SocketAddr) -> Advertised {
    Advertised {
        client: client_address(hello, peer_addr),
        app: on_peer_ip(&hello.member, "app", &hello.app_address, peer_addr),
    }
}

/// The client address of a peer's Hello that this node will forward requests to: only one
/// on the IP discovery gave for the member (`peer_addr`), so a member cannot have client
/// requests, cookies and Authorization headers included, sent anywhere else. An
/// unspecified IP (a node on 0.0.0.0 that was not told its address) is the peer's IP.
pub(super) fn client_address(hello: &pb::Hello, peer_addr: SocketAddr) -> Option<SocketAddr> {
    on_peer_ip(&hello.member, "client", &hello.client_address, peer_addr)
}

/// An advertised `kind` address, if it is on the peer's own IP (the app address, like the
/// client address, is where this node sends others: app instances are told to link there).
fn on_peer_ip(member: &str, kind: &str, text: &str, peer_addr: SocketAddr) -> Option<SocketAddr> {
    if text.is_empty() {
        return None;
    }
    let Ok(mut addr) = text.parse::<SocketAddr>() else {
        tracing::warn!(peer = %member, address = %text, kind, "peer advertises an unusable address");
        return None;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(peer_addr.ip());
    }
    if addr.ip() != peer_addr.ip() {
        tracing::warn!(peer = %member, address = %addr, peer_ip = %peer_addr.ip(), kind, "peer advertises an address off its own IP; ignored");
        return None;
    }
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(member: &str, address: &str) -> pb::Hello {
        pb::Hello {
            member: member.into(),
            client_address: address.into(),
            app_address: String::new(),
        }
    }

    #[test]
    fn hellos_round_trip_through_metadata() {
        let mut m = MetadataMap::new();
        write(&mut m, &hello("hub-0", "10.0.0.7:3000"));
        assert_eq!(read(&m).unwrap(), hello("hub-0", "10.0.0.7:3000"));
        let mut m = MetadataMap::new();
        write(&mut m, &hello("hub-0", ""));
        assert_eq!(read(&m).unwrap(), hello("hub-0", ""));
        assert_eq!(
            read(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut m = MetadataMap::new();
        write(&mut m, &hello(&"a".repeat(254), ""));
        assert!(read(&m).is_err());
    }

    #[test]
    fn only_addresses_on_the_discovered_ip_are_believed() {
        let peer: SocketAddr = "10.0.0.7:7000".parse().unwrap();
        assert_eq!(client_address(&hello("b", ""), peer), None);
        assert_eq!(client_address(&hello("b", "not an address"), peer), None);
        assert_eq!(
            client_address(&hello("b", "10.0.0.7:3000"), peer),
            Some("10.0.0.7:3000".parse().unwrap())
        );
        assert_eq!(
            client_address(&hello("b", "0.0.0.0:3000"), peer),
            Some("10.0.0.7:3000".parse().unwrap())
        );
        // Another IP (an attacker's, or a member's lie): never forwarded to.
        assert_eq!(client_address(&hello("b", "10.0.0.8:3000"), peer), None);
        assert_eq!(client_address(&hello("b", "[::1]:3000"), peer), None);
    }
}
