//! The generated types of `proto/app.proto` (built by `build.rs` with protox, no `protoc`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("roomcast.app.v1");

impl HubMessage {
    pub fn of(kind: hub_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}
