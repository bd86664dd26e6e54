//! The connections under the peer protocol: TLS (or, with `cluster.plaintext`, bare TCP) on
//! both sides, and the HTTP/2 limits of the peer port.
//!
//! Accepting: each TCP connection completes its TLS handshake on its own future, at most
//! `maxHandshakes` at once, each within `handshakeTimeout`, so a connection that stalls
//! mid-handshake holds up no other; one that fails or times out is dropped and counted.
//! The server demands a client certificate chaining to the trust bundle; the certificate is
//! handed to the gRPC service ([`PeerConnInfo`]), which checks the member id against it.
//!
//! Dialing: [`Connector`] opens TCP, then TLS with the peer's member id as server name, so
//! the dialer only links to the holder of a certificate for the member it dialed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt as _};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tonic::transport::server::Connected;

use super::connlimit::{ConnLimit, Full, Slot};
use super::reload::PeerTls;
use super::tls::{server_name, Material};

/// Streams (links) open at once on one peer connection. A dialer opens one connection per
/// link, so one is all a member needs; it also bounds what one connection can make this
/// node buffer before the link's identity is checked to one stream window.
pub(super) const MAX_STREAMS_PER_CONNECTION: u32 = 1;
/// Request and response header lists (the Hello travels in them: a member id and an
/// address) are refused past this many bytes.
pub(super) const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// HTTP/2 flow-control windows the acceptor grants (its stream's and connection's): the
/// most one connection can make this node buffer before the acceptor has checked who is
/// calling (one stream per connection; over TLS only a holder of a certificate of the
/// hub's CA gets that far), and what the dialer has in flight per round trip. 1 MiB, a
/// batch, as hyper's server default. Smaller windows (64 KiB, fixed or growing with
/// hyper's adaptive window) stalled the resync of an overloaded link in the JS overload test.
pub(super) const WINDOW_BYTES: u32 = 1024 * 1024;
/// The windows a dialer grants the member it dialed (authenticated by the server name):
/// hyper's client defaults, 2 MiB per stream and 5 MiB per connection.
pub(super) const DIALER_STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
pub(super) const DIALER_CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;

/// What differs between the listeners [`accept`] serves: the peer port and the app link
/// port (`crate::applink`), which presents the same certificate but asks for none.
pub(crate) struct Port {
    /// For the logs.
    pub(crate) what: &'static str,
    /// The settings named when a connection is over a budget.
    pub(crate) total_budget: &'static str,
    pub(crate) per_ip_budget: &'static str,
    /// The TLS server configuration of this port, from the current material.
    pub(crate) server: fn(&Material) -> Arc<rustls::ServerConfig>,
}

/// The peer port: mutual TLS.
pub(super) const PEER_PORT: Port = Port {
    what: "peer",
    total_budget: "cluster.maxPeerConnections",
    per_ip_budget: "cluster.maxPeerConnectionsPerIp",
    server: |m| m.server.clone(),
};

/// A connection accepted on the peer port (bare TCP in plaintext mode, else TLS), with its
/// place in the connection budgets.
pub(crate) struct PeerStream {
    io: Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>,
    /// Held for its Drop: frees the connection's place when the connection closes.
    _slot: Slot,
}

/// What the gRPC service learns about a connection.
#[derive(Debug, Clone)]
pub(crate) struct PeerConnInfo {
    pub(super) remote: Option<SocketAddr>,
    /// The address the connection reached (which of the node's IPs, on a wildcard listener).
    pub(crate) local: Option<SocketAddr>,
    /// Whether the connection is TLS (then `leaf` is the verified client certificate).
    pub(super) tls: bool,
    pub(super) leaf: Option<CertificateDer<'static>>,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerConnInfo;

    fn connect_info(&self) -> PeerConnInfo {
        match &self.io {
            Either::Left(tcp) => PeerConnInfo {
                remote: tcp.peer_addr().ok(),
                local: tcp.local_addr().ok(),
                tls: false,
                leaf: None,
            },
            Either::Right(tls) => {
                let (tcp, session) = tls.get_ref();
                PeerConnInfo {
                    remote: tcp.peer_addr().ok(),
                    local: tcp.local_addr().ok(),
                    tls: true,
                    leaf: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned()),
                }
            }
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Where [`accept`] counts the connections it drops.
#[derive(Clone)]
pub(crate) struct Refusals {
    /// Failed or timed-out TLS handshakes.
    pub(crate) handshakes_failed: Arc<AtomicU64>,
    /// Connections over the port's connection budgets.
    pub(crate) over_limit: Arc<AtomicU64>,
}

/// The connections of `port`, TLS handshakes done (or plain TCP without `tls`).
/// A connection over the connection budgets (`limit`) is closed at once; failed handshakes
/// are logged and dropped; both are counted in `refused`.
pub(crate) fn accept(
    tcp: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    tls: Option<Arc<PeerTls>>,
    limit: Arc<ConnLimit>,
    refused: Refusals,
    port: &'static Port,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    let handshakes = tls.as_ref().map_or(1, |t| t.max_handshakes);
    tcp.map(move |conn| {
        let tls = tls.clone();
        let limit = limit.clone();
        let refused = refused.clone();
        async move {
            let tcp = conn.ok()?;
            let remote = tcp.peer_addr().ok();
            let slot = match remote.map(|r| limit.admit(r.ip())) {
                Some(Ok(slot)) => slot,
                full => {
                    refused.over_limit.fetch_add(1, Ordering::Relaxed);
                    let budget = match full {
                        Some(Err(Full::PerIp)) => port.per_ip_budget,
                        _ => port.total_budget,
                    };
                    tracing::warn!(listener = port.what, remote = ?remote, budget, "connection closed: over the connection budget");
                    return None;
                }
            };
            let Some(tls) = tls else {
                return Some(Ok(PeerStream {
                    io: Either::Left(tcp),
                    _slot: slot,
                }));
            };
            let failed = &refused.handshakes_failed;
            let acceptor = tokio_rustls::TlsAcceptor::from((port.server)(&tls.material()));
            // Kept in place until the failure is counted: dropping it closes the connection,
            // and whoever sees the close must see the count too.
            let mut handshake =
                std::pin::pin!(tokio::time::timeout(tls.handshake_timeout, acceptor.accept(tcp)));
            match handshake.as_mut().await {
                Ok(Ok(stream)) => Some(Ok(PeerStream {
                    io: Either::Right(Box::new(stream)),
                    _slot: slot,
                })),
                Ok(Err(error)) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(listener = port.what, remote = ?remote, %error, "connection refused at the TLS handshake");
                    None
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let timeout_ms = tls.handshake_timeout.as_millis();
                    tracing::warn!(listener = port.what, remote = ?remote, timeout_ms, "connection dropped: no TLS handshake in time");
                    None
                }
            }
        }
    })
    .buffer_unordered(handshakes)
    .filter_map(std::future::ready)
}

/// Dials peers: TCP, then TLS naming the peer's member id (or nothing more in plaintext).
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) addr: SocketAddr,
    pub(super) peer: String,
    pub(super) tls: Option<Arc<PeerTls>>,
}

/// A connection a dialer opened: bare TCP in plaintext mode, else TLS.
pub(super) type DialStream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<DialStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = this.tls else {
                return Ok(TokioIo::new(Either::Left(tcp)));
            };
            let name = server_name(&this.peer).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("member id {:?} is not a DNS name", this.peer),
                )
            })?;
            let connector = tokio_rustls::TlsConnector::from(tls.material().client.clone());
            let handshake = connector.connect(name, tcp);
            let stream = tokio::time::timeout(tls.handshake_timeout, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(Either::Right(Box::new(stream))))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt as _;

    use super::super::link::LinkSettings;
    use super::super::reload::{PeerTls, TlsSettings};
    use super::super::testkit::{fast, free_port, node, pki, wait_for, Pki, Recorder};
    use super::super::Mesh;
    use super::*;
    use crate::cluster::membership::Members;

    /// Connections that never complete their handshake take a slot each for
    /// `handshakeTimeout` at most, and do not hold up a member's handshake meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_handshakes_time_out_without_holding_up_others() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 1]));
        let b = Mesh::new("b", &members, fast(), Arc::new(Recorder::default())).unwrap();
        let settings = TlsSettings {
            reload_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_millis(1500),
            max_handshakes: 3,
        };
        let files = Pki::files(&pki().write_member("b"));
        b.secure(PeerTls::load("b", files, settings).unwrap());
        let addr = members.addr("b").unwrap();
        b.start(addr).await.unwrap();
        // Two connections that say nothing.
        let mut stalled = Vec::new();
        for _ in 0..2 {
            stalled.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let a = node("a", &members, fast()).await;
        wait_for("link", || b.connected() == ["a"]).await;
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "linked in {:?}, before the stalled handshakes timed out",
            t.elapsed()
        );
        // Both stalled connections are closed once their time is up, and counted.
        for mut s in stalled {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        }
        assert_eq!(b.stats().handshakes_failed, 2);
        a.mesh.close();
        b.close();
    }

    /// One host opening connections in a loop gets those over its budget closed at once
    /// (counted), and a member from another address still links.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_per_address_budget_are_closed_at_once() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 2]));
        let settings = LinkSettings {
            max_connections_per_ip: 2,
            ..fast()
        };
        let b = Mesh::new("b", &members, settings, Arc::new(Recorder::default())).unwrap();
        let files = Pki::files(&pki().write_member("b"));
        let tls = TlsSettings {
            reload_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 8,
        };
        b.secure(PeerTls::load("b", files, tls).unwrap());
        let addr = members.addr("b").unwrap();
        b.start(addr).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
            held.push(socket.connect(addr).await.unwrap());
        }
        // The three over the budget of two are closed without a handshake.
        let mut closed = 0;
        for s in &mut held {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                closed += 1;
            }
        }
        assert_eq!(closed, 3);
        assert_eq!(b.stats().connections_refused, 3);
        // A member on another address is not held up by that host.
        let a = node("a", &members, fast()).await;
        wait_for("link", || b.connected() == ["a"]).await;
        drop(held);
        a.mesh.close();
        b.close();
    }
}
