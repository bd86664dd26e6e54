//! Idle HTTP/1 connections to owners, and opening new ones.
//!
//! A module of its own so that the proxy's logic does not mix with the lifetime rules of
//! pooled connections (how long one stays idle, how many are kept, when one is reused).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::{ForwardError, CONNECT_TIMEOUT};

/// How long an idle connection to an owner is kept for reuse at most: well under the time
/// after which the owner's server drops a connection that sends no request
/// (`engine.headerReadTimeout`, 10 s by default; see [`idle_for`]).
const IDLE_FOR: Duration = Duration::from_secs(5);
/// Idle connections kept per owner.
const IDLE_PER_OWNER: usize = 32;
/// How long a reused connection may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_millis(500);

/// The body of a forwarded polling request: the client's, capped at maxHttpBufferSize.
pub(super) type ForwardBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Idle HTTP/1 connections to owners, reused by later forwards: a polling client behind a
/// round-robin balancer sends a request a few times per ping interval, and a new connection
/// for each would leave the forwarding node with a socket in TIME_WAIT per request.
pub(super) struct OwnerConnections {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// How long an idle connection is kept (see [`idle_for`]).
    idle_for: Duration,
}

/// How long idle connections to owners are kept when owners drop connections that send no
/// request for `header_read_timeout` (the same setting on every member): half of it, at most
/// [`IDLE_FOR`], so that a reused connection is never one the owner is closing.
pub(super) fn idle_for(header_read_timeout: Duration) -> Duration {
    (header_read_timeout / 2).min(IDLE_FOR)
}

/// A connection to an owner and since when it is idle.
type Idle = (SendRequest<ForwardBody>, Instant);

impl OwnerConnections {
    pub(super) fn new(idle_for: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            idle_for,
        }
    }

    /// A connection to `target` ready for a request: an idle one if it still works, else
    /// a new one. Also says whether it was reused.
    pub(super) async fn connection(
        &self,
        target: SocketAddr,
    ) -> Result<(SendRequest<ForwardBody>, bool), ForwardError> {
        while let Some(mut sender) = self.take(target) {
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                return Ok((sender, true));
            }
        }
        Ok((open(target).await?, false))
    }

    /// The most recently used idle connection to `target` that may still be open.
    fn take(&self, target: SocketAddr) -> Option<SendRequest<ForwardBody>> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(&target)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < self.idle_for && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose last answer was read whole, for the next forward.
    pub(super) fn give_back(&self, target: SocketAddr, sender: SendRequest<ForwardBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.entry(target).or_default();
        list.retain(|(s, since)| since.elapsed() < self.idle_for && !s.is_closed());
        if list.len() < IDLE_PER_OWNER {
            list.push((sender, Instant::now()));
        }
    }

    /// Idle connections kept for `target`.
    #[cfg(test)]
    pub(super) fn idle(&self, target: SocketAddr) -> usize {
        self.idle.lock().get(&target).map_or(0, Vec::len)
    }
}

/// A new TCP connection to `target`, within [`CONNECT_TIMEOUT`].
pub(super) async fn connect(target: SocketAddr) -> Result<TcpStream, ForwardError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| ForwardError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(ForwardError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A new HTTP/1 connection to `target`, its driver running on its own task.
pub(super) async fn open(target: SocketAddr) -> Result<SendRequest<ForwardBody>, ForwardError> {
    let stream = connect(target).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%target, %error, "connection to a session's owner ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_expire_before_the_owner_drops_them() {
        assert_eq!(idle_for(Duration::from_secs(10)), IDLE_FOR);
        assert_eq!(idle_for(Duration::from_secs(60)), IDLE_FOR);
        assert_eq!(idle_for(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
