//! Compiles `proto/peer.proto` (the peer links) and `proto/app.proto` (the app links) with
//! `protox` (a pure-Rust protobuf compiler), so building Roomcast never needs a system
//! `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/peer.proto", "proto/app.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes` fields become `bytes::Bytes`, so an encoded broadcast frame received from a
        // peer is shared with every local recipient without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
