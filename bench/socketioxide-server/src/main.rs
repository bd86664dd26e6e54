//! Benchmark peer: socketioxide serving the benchmark protocol.
//!
//! Same behaviour as `bench/node/server.mjs` and as the relay app built into
//! `roomcast-dataplane`:
//! - `join(room, ack?)`: the socket joins `room`; the ack (if requested) gets `{"ok":true}`;
//! - any other event is relayed, with its arguments, to every other socket in the sender's
//!   rooms (to the whole namespace when the sender joined none); the ack gets `{"ok":true}`.
//!
//! Usage: `bench-socketioxide-server [PORT] [HOST]` (default 3002 on 127.0.0.1; HOST must be a
//! loopback address, or the one `BENCH_NETNS_HOST` names). Prints `listening on
//! http://HOST:PORT` once ready. Heartbeats are socketioxide's defaults (ping interval 25 s,
//! timeout 20 s) unless `BENCH_PING_INTERVAL_MS` is set.
//!
//! With `BENCH_REDIS_URL` (e.g. `redis://127.0.0.70:6391`) several of these processes form one
//! server through socketioxide's Redis adapter (`socketioxide-redis`, the `redis` crate driver,
//! RESP3), as `bench/node/server.mjs` does with `@socket.io/redis-adapter`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use socketioxide::adapter::{Emitter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, Event, SocketRef};
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

/// The benchmark protocol on the main namespace of `$io`, whose adapter is `$A` (a macro: the
/// bound socketioxide puts on `ns` is not public).
macro_rules! register {
    ($io:expr, $A:ty) => {
        $io.ns("/", async |s: SocketRef<$A>| {
            s.on(
                "join",
                async |s: SocketRef<$A>, Data(room): Data<String>, ack: AckSender<$A>| {
                    s.join(room);
                    ack.send(&json!({ "ok": true })).ok();
                },
            );
            s.on_fallback(
                async |s: SocketRef<$A>,
                       Event(event): Event,
                       Data(data): Data<Value>,
                       ack: AckSender<$A>| {
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
        })
    };
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().context("PORT must be a number")?,
        None => 3002,
    };
    let host: IpAddr = match std::env::args().nth(2) {
        Some(h) => h.parse().context("HOST must be an IP address")?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    // bench/run.sh's netns scenario names the address it gave this process's namespace.
    let netns_host = std::env::var("BENCH_NETNS_HOST").ok();
    anyhow::ensure!(
        host.is_loopback() || netns_host.is_some_and(|h| h == host.to_string()),
        "HOST must be a loopback address"
    );

    // BENCH_PING_INTERVAL_MS only shortens heartbeats for smoke runs; benchmarks use the
    // default (25 s, as Node socket.io).
    let mut builder: SocketIoBuilder = SocketIo::builder();
    if let Ok(ms) = std::env::var("BENCH_PING_INTERVAL_MS") {
        let ms: u64 = ms
            .parse()
            .context("BENCH_PING_INTERVAL_MS must be a number")?;
        builder = builder.ping_interval(Duration::from_millis(ms));
    }
    let app = match std::env::var("BENCH_REDIS_URL") {
        Ok(url) => {
            // RESP3 is what the adapter's redis driver speaks (Redis 7+).
            let url = if url.contains("protocol=") {
                url
            } else {
                format!("{url}?protocol=resp3")
            };
            let client = redis::Client::open(url.as_str()).context("BENCH_REDIS_URL")?;
            let adapter = RedisAdapterCtr::new_with_redis(&client)
                .await
                .context("cannot reach Redis")?;
            let (layer, io) = builder
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            // With a remote adapter, `ns` subscribes to Redis: wait for it.
            register!(io, RedisAdapter<Emitter>)
                .await
                .context("cannot subscribe to Redis")?;
            Router::new().route("/", get(async || "ok")).layer(layer)
        }
        Err(_) => {
            let (layer, io) = builder.build_layer();
            register!(io, LocalAdapter);
            Router::new().route("/", get(async || "ok")).layer(layer)
        }
    };

    let addr = SocketAddr::new(host, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await.context("serve")?;
    Ok(())
}
