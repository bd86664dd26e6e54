//! The TCP accept loop, HTTP/1 connections, health endpoints and graceful shutdown of the
//! client endpoint. Metrics are served on their own port (`metrics::listener`), not here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::auth::{Authenticator, NoAuth};
use crate::cluster::listen::AcceptBackoff;
use crate::config::{Config, ShutdownConfig};
use crate::engine::direct::{self, Accepted};
use crate::engine::response::Body;
use crate::engine::rewind::Rewind;
use crate::engine::{ConnectionFactory, Engine};
use crate::metrics::probes;
use crate::socketio::{Handler, Hub};

/// A hub node's client-facing server.
pub struct Server {
    engine: Arc<Engine>,
    hub: Option<Hub>,
    drain: Drain,
}

/// Timing of the graceful drain (see [`ShutdownConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Not ready, but serving as usual, for this long after the signal.
    pub delay: Duration,
    /// Exit at the latest this long after the signal.
    pub grace: Duration,
}

impl Drain {
    pub fn from_config(c: &ShutdownConfig) -> Self {
        Self {
            delay: Duration::from_millis(c.drain_delay),
            grace: Duration::from_millis(c.grace_period),
        }
    }
}

/// How long after closing the sessions the listener stays open for clients to collect
/// their close packet (a polling client's next GET), when sessions remain.
const FLUSH_MOMENT: Duration = Duration::from_millis(200);

/// How long a drain waits, once every session is closed, for polling clients to collect their
/// close packet (a live one polls again within milliseconds; a gone one would hold the drain
/// for the ping timeout).
const LINGER_MOMENT: Duration = Duration::from_secs(1);

impl Server {
    /// A Socket.IO server whose application logic is `handler`.
    pub fn new(config: Config, handler: Arc<dyn Handler>) -> Self {
        Self::with_auth(config, handler, Arc::new(NoAuth))
    }

    /// A Socket.IO server that authenticates clients with `authenticator` first.
    pub fn with_auth(
        config: Config,
        handler: Arc<dyn Handler>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Self {
        let config = Arc::new(config);
        let hub = Hub::new(config.clone(), handler, authenticator);
        let engine = Engine::new(&config, hub.connection_factory());
        Self {
            engine,
            hub: Some(hub),
            drain: Drain::from_config(&config.shutdown),
        }
    }

    /// A bare Engine.IO server (no Socket.IO layer), e.g. for engine conformance tests.
    /// A server whose engine hands sessions to `factory` (app links) while `hub` keeps the
    /// rooms and broadcasts.
    pub fn with_hub(config: &Config, hub: Hub, factory: Arc<dyn ConnectionFactory>) -> Self {
        Self {
            engine: Engine::new(config, factory),
            hub: Some(hub),
            drain: Drain::from_config(&config.shutdown),
        }
    }

    pub fn engine_only(config: &Config, factory: Arc<dyn ConnectionFactory>) -> Self {
        Self {
            engine: Engine::new(config, factory),
            hub: None,
            drain: Drain::from_config(&config.shutdown),
        }
    }

    pub fn hub(&self) -> Option<&Hub> {
        self.hub.as_ref()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves until `shutdown` resolves, then drains (see [`ShutdownConfig`]): leaves
    /// readiness, keeps serving for the drain delay, closes every session, and returns once
    /// they are gone or the grace period is over. The listener stays open throughout, so
    /// clients can still collect their close packet.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.accept_until(&listener, shutdown).await;
        let deadline = Instant::now() + self.drain.grace;
        let engine = &self.engine;
        engine.leave_readiness();
        tracing::info!(
            sessions = engine.session_count(),
            delay_ms = self.drain.delay.as_millis() as u64,
            grace_ms = self.drain.grace.as_millis() as u64,
            "draining: not ready any more"
        );
        self.accept_until(&listener, tokio::time::sleep(self.drain.delay))
            .await;
        tracing::info!(
            sessions = engine.session_count(),
            "draining: closing client sessions"
        );
        engine.close_for_shutdown();
        let gone = async {
            while engine.open_session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Closed polling sessions wait for their client's next poll to collect the close
            // packet; a live client polls again at once, a gone one never does.
            let lingering = Instant::now() + LINGER_MOMENT;
            while engine.session_count() > 0 && Instant::now() < lingering {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let until = tokio::time::sleep_until(deadline.into());
        self.accept_until(&listener, async {
            tokio::select! {
                _ = gone => {}
                _ = until => {}
            }
        })
        .await;
        let left = engine.open_session_count();
        if left > 0 {
            tracing::warn!(
                sessions = left,
                "grace period over with sessions still open"
            );
        }
        // Transports flush their last frames (the close) on their own tasks.
        let flush = FLUSH_MOMENT.min(deadline.saturating_duration_since(Instant::now()));
        self.accept_until(&listener, tokio::time::sleep(flush))
            .await;
        tracing::info!("drained");
        Ok(())
    }

    /// Accepts connections until `until` resolves.
    async fn accept_until(&self, listener: &TcpListener, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        let mut backoff = AcceptBackoff::new("client");
        while let Some((stream, peer)) = backoff.accept(listener, until.as_mut()).await {
            tokio::spawn(serve_connection(self.engine.clone(), stream, peer));
        }
    }
}

/// Serves one client connection: a fresh WebSocket handshake on the engine's direct path,
/// anything else over HTTP/1 with hyper.
async fn serve_connection(engine: Arc<Engine>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    match direct::accept(engine.clone(), stream, peer, probes::is_probe).await {
        // The session's loop gets a task of its own, allocated now that the handshake's
        // transient allocations are freed: kept in this task, an idle connection measured
        // 0.25 KiB more RSS (bench/PROFILE.md).
        Accepted::WebSocket(socket) => {
            tokio::spawn(socket.serve());
        }
        Accepted::Http {
            io,
            header_read_timeout,
        } => serve_http(engine, io, peer, header_read_timeout).await,
        Accepted::Done => {}
    }
}

async fn serve_http(
    engine: Arc<Engine>,
    io: Rewind,
    peer: SocketAddr,
    header_read_timeout: Duration,
) {
    // The first request's headers get what is left of `headerReadTimeout`; hyper uses the
    // same figure for each later request of the connection.
    let service = service_fn(move |req: Request<Incoming>| {
        let engine = engine.clone();
        async move { Ok::<_, Infallible>(route(engine, req, peer).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "http connection ended with an error");
    }
}

/// `/healthz` and `/readyz` (for load balancers that probe the port they send traffic to),
/// else the engine. `/metrics` is not served here: clients must not read the hub's metrics.
async fn route(engine: Arc<Engine>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    match probes::answer(&engine, req.uri().path()) {
        Some(res) => res,
        None => engine.handle(req, peer).await,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
