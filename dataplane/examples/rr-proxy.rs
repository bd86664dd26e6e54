//! A round-robin TCP load balancer for local clusters and tests: each new connection goes
//! to the next backend (no affinity at all), and the bytes are copied both ways. A backend
//! that refuses the connection is skipped for the next one.
//!
//!     rr-proxy --listen 127.0.0.10:3000 --backend 127.0.0.11:3001 --backend 127.0.0.12:3001
//!
//! Prints `listening on IP:PORT` on stdout once bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(about = "Round-robin TCP proxy (no sticky sessions)")]
struct Args {
    /// Address to accept connections on.
    #[arg(long)]
    listen: SocketAddr,
    /// A backend; repeat for each one. Connections go to them in turn.
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
}

/// Connects to the first backend that accepts, starting at the next one in turn.
async fn pick(backends: &[SocketAddr], next: &AtomicUsize) -> Option<(SocketAddr, TcpStream)> {
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..backends.len() {
        let backend = backends[(start + i) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => return Some((backend, stream)),
            Ok(Err(error)) => tracing::warn!(%backend, %error, "backend refused; trying the next"),
            Err(_) => tracing::warn!(%backend, "backend connect timed out; trying the next"),
        }
    }
    None
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let backends: Arc<[SocketAddr]> = args.backends.into();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Some((backend, upstream)) = pick(&backends, &next).await else {
                tracing::warn!(%peer, "no backend accepts; closing the connection");
                return;
            };
            let _ = upstream.set_nodelay(true);
            tracing::debug!(%peer, %backend, "proxying");
            let (up, down) = roomcast_dataplane::engine::forward::splice(client, upstream).await;
            tracing::debug!(%peer, %backend, up, down, "connection closed");
        });
    }
}
