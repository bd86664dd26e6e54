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
/// Longest member id (a DNS name is at most 253 bytes).
const MAX_MEMBER_BYTES: usize = 253;

/// Writes `hello` into `metadata`. Values that are not valid header text are left out (the
/// other side then refuses the link, saying why).
pub(super) fn write(metadata: &mut MetadataMap, hello: &pb::Hello) {
    if let Ok(v) = MetadataValue::try_from(hello.member.as_str()) {
        metadata.insert(MEMBER, v);
    }
    if !hello.client_address.is_empty() {
        if let Ok(v) = MetadataValue::try_from(hello.client_address.as_str()) {
            metadata.insert(CLIENT_ADDRESS, v);
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
    let client_address = metadata
        .get(CLIENT_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(pb::Hello {
        member: member.to_string(),
        client_address: client_address.to_string(),
    })
}

/// The client address of a peer's Hello that this node will forward requests to: only one
/// on the IP discovery gave for the member (`peer_addr`), so a member cannot have client
/// requests, cookies and Authorization headers included, sent anywhere else. An
/// unspecified IP (a node on 0.0.0.0 that was not told its address) is the peer's IP.
pub(super) fn client_address(hello: &pb::Hello, peer_addr: SocketAddr) -> Option<SocketAddr> {
    if hello.client_address.is_empty() {
        return None;
    }
    let Ok(mut addr) = hello.client_address.parse::<SocketAddr>() else {
        tracing::warn!(peer = %hello.member, address = %hello.client_address, "peer advertises an unusable client address");
        return None;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(peer_addr.ip());
    }
    if addr.ip() != peer_addr.ip() {
        tracing::warn!(peer = %hello.member, address = %addr, peer_ip = %peer_addr.ip(), "peer advertises a client address off its own IP; ignored (no requests are forwarded to it)");
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
