//! Compiles `proto/peer.proto` with `protox` (a pure-Rust protobuf compiler), so building
//! Roomcast never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/peer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes` fields become `bytes::Bytes`, so an encoded broadcast frame received from a
        // peer is shared with every local recipient without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
