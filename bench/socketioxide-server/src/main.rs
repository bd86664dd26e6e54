//! Benchmark peer: socketioxide serving the benchmark protocol.
//!
//! Same behaviour as `bench/node/server.mjs` and as the relay app built into
//! `roomcast-dataplane`:
//! - `join(room, ack?)`: the socket joins `room`; the ack (if requested) gets `{"ok":true}`;
//! - any other event is relayed, with its arguments, to every other socket in the sender's
//!   rooms (to the whole namespace when the sender joined none); the ack gets `{"ok":true}`.
//!
//! Usage: `bench-socketioxide-server [PORT]` (default 3002). Listens on 127.0.0.1 only and
//! prints `listening on http://127.0.0.1:PORT` once ready. Heartbeats are socketioxide's
//! defaults (ping interval 25 s, timeout 20 s) unless `BENCH_PING_INTERVAL_MS` is set.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Data, Event, SocketRef};
use socketioxide::SocketIo;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().context("PORT must be a number")?,
        None => 3002,
    };

    // BENCH_PING_INTERVAL_MS only shortens heartbeats for smoke runs; benchmarks use the
    // default (25 s, as Node socket.io).
    let mut builder = SocketIo::builder();
    if let Ok(ms) = std::env::var("BENCH_PING_INTERVAL_MS") {
        let ms: u64 = ms
            .parse()
            .context("BENCH_PING_INTERVAL_MS must be a number")?;
        builder = builder.ping_interval(Duration::from_millis(ms));
    }
    let (layer, io) = builder.build_layer();
    io.ns("/", async |s: SocketRef| {
        s.on(
            "join",
            async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
                s.join(room);
                ack.send(&json!({ "ok": true })).ok();
            },
        );
        s.on_fallback(
            async |s: SocketRef, Event(event): Event, Data(data): Data<Value>, ack: AckSender| {
                let rooms = s.rooms();
                let op = if rooms.is_empty() {
                    s.broadcast()
                } else {
                    s.to(rooms)
                };
                op.emit(event, &data).await.ok();
                ack.send(&json!({ "ok": true })).ok();
            },
        );
    });

    let app = axum::Router::new()
        .route("/", axum::routing::get(async || "ok"))
        .layer(layer);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await.context("serve")?;
    Ok(())
}
