//! The generated types of `proto/peer.proto` (built by `build.rs` with protox, no `protoc`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("roomcast.peer.v1");

impl Message {
    pub fn of(kind: message::Kind) -> Self {
        Self { kind: Some(kind) }
    }

    pub fn hello(member: &str, client_address: Option<std::net::SocketAddr>) -> Self {
        Self::of(message::Kind::Hello(Hello {
            member: member.to_string(),
            client_address: client_address.map(|a| a.to_string()).unwrap_or_default(),
            app_address: String::new(),
        }))
    }
}
