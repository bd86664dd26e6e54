//! Accept loops that survive running out of file descriptors.
//!
//! `accept` fails with EMFILE/ENFILE (or ENOBUFS/ENOMEM) while the process or the system is
//! out of descriptors, and the pending connection stays in the backlog, so a loop that
//! retries at once spins on one core and floods the log. [`AcceptBackoff`] waits instead,
//! 10 ms doubling to 1 s while the failures go on, and logs once when such an episode starts
//! and once when it ends. Errors that concern only the connection being accepted (it was
//! reset or aborted before we took it) are retried at once. Used by the peer listener
//! ([`incoming`]) and the client listener (`server.rs`).

use std::io;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};

/// First and longest wait after a failed accept.
pub const MIN_DELAY: Duration = Duration::from_millis(10);
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// The state of one accept loop. Pure: the caller sleeps for what [`AcceptBackoff::failed`]
/// returns.
#[derive(Debug)]
pub struct AcceptBackoff {
    /// Which listener, for the logs.
    what: &'static str,
    /// The wait after the last failure of the current episode; zero outside one.
    delay: Duration,
    /// Failures in the current episode.
    failures: u64,
    /// Whether accepted streams inherit TCP_NODELAY from the listener; found at the first
    /// accept.
    inherits_nodelay: Option<bool>,
}

/// Binds a listener for [`AcceptBackoff::accept`] or [`incoming`], with TCP_NODELAY set
/// before any connection arrives: Linux copies it into every socket the listener accepts,
/// which saves a `setsockopt` per connection (one of a dozen system calls in a Socket.IO
/// handshake).
pub async fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    set_nodelay(&listener);
    Ok(listener)
}

/// Binds the client endpoint's listener: [`bind`], with TCP_DEFER_ACCEPT for `defer`
/// (Linux; zero leaves it off). The kernel then hands a connection over once its first bytes
/// are in, not at the end of the TCP handshake, so the first read finds the request: without
/// it, three handshakes in four read nothing first (EAGAIN) and wait for another wake-up
/// (bench/PROFILE.md). A client that connects and says nothing is handed over anyway after
/// `defer` (and a SYN-ACK retransmission); `headerReadTimeout` starts then.
pub async fn bind_client(addr: std::net::SocketAddr, defer: Duration) -> io::Result<TcpListener> {
    let listener = bind(addr).await?;
    if !defer.is_zero() {
        if let Err(error) = set_defer_accept(&listener, defer) {
            tracing::warn!(%error, "cannot set TCP_DEFER_ACCEPT on the client listener");
        }
    }
    Ok(listener)
}

/// TCP_DEFER_ACCEPT in whole seconds, rounded up (what the kernel takes).
#[cfg(target_os = "linux")]
fn set_defer_accept(listener: &TcpListener, defer: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = libc::c_int::try_from(defer.as_millis().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor is the listener's, open while it is borrowed; the option value
    // points at a live c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_defer_accept(_: &TcpListener, _: Duration) -> io::Result<()> {
    Ok(())
}

/// The TCP_DEFER_ACCEPT of `listener` in seconds, as the kernel reports it back.
#[cfg(all(test, target_os = "linux"))]
fn defer_accept_secs(listener: &TcpListener) -> io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut secs: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: as in `set_defer_accept`; `len` is the size of `secs`.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_mut(&mut secs).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(secs)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_nodelay(listener: &TcpListener) {
    if let Err(error) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a listener");
    }
}

/// Whether the streams `listener` accepts already have TCP_NODELAY ([`bind`] on Linux).
/// Otherwise each accepted stream gets it: a listener set only after connections were queued
/// would hand those out without it.
fn inherits_nodelay(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .tcp_nodelay()
            .unwrap_or(false)
}

/// Gives an accepted stream TCP_NODELAY unless it came with it.
fn nodelay(stream: &TcpStream, inherited: bool) {
    if !inherited {
        let _ = stream.set_nodelay(true);
    }
}

/// Whether a failed accept concerns only the connection being accepted (retry at once).
fn connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            delay: Duration::ZERO,
            failures: 0,
            inherits_nodelay: None,
        }
    }

    /// An accept failed: how long to wait before the next one. The first failure of an
    /// episode is logged (a warning), the others are not.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        if connection_error(error) {
            tracing::debug!(listener = self.what, %error, "a connection failed before it was accepted");
            return Duration::ZERO;
        }
        self.failures = self.failures.saturating_add(1);
        if self.delay.is_zero() {
            self.delay = MIN_DELAY;
            tracing::warn!(
                listener = self.what,
                %error,
                "accept failed (out of file descriptors?): backing off, from 10 ms up to 1 s, until it works again"
            );
        } else {
            self.delay = (self.delay * 2).min(MAX_DELAY);
        }
        self.delay
    }

    /// An accept succeeded: an episode of failures, if any, is over (logged once).
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.what,
                failures = self.failures,
                "accepting connections again"
            );
        }
        self.failures = 0;
        self.delay = Duration::ZERO;
    }

    /// The next connection `listener` accepts (with TCP_NODELAY), backing off on failures;
    /// `None` once `stop` resolves. What the client and management listeners loop on.
    pub async fn accept<F: std::future::Future<Output = ()>>(
        &mut self,
        listener: &TcpListener,
        mut stop: std::pin::Pin<&mut F>,
    ) -> Option<(TcpStream, std::net::SocketAddr)> {
        let inherits = *self
            .inherits_nodelay
            .get_or_insert_with(|| inherits_nodelay(listener));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        self.succeeded();
                        nodelay(&stream, inherits);
                        return Some((stream, peer));
                    }
                    Err(error) => {
                        // Usually EMFILE: back off (logged once per episode) instead of
                        // spinning; existing connections go on.
                        let delay = self.failed(&error);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = stop.as_mut() => return None,
                        }
                    }
                },
                () = stop.as_mut() => return None,
            }
        }
    }

    /// Whether an episode of failures is going on.
    pub fn in_episode(&self) -> bool {
        self.failures > 0
    }
}

/// The connections `listener` accepts (with TCP_NODELAY), backing off on failures: the
/// stream never yields an error, so a server consuming it never spins.
pub fn incoming(
    listener: TcpListener,
    what: &'static str,
) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    let inherits = inherits_nodelay(&listener);
    futures_util::stream::unfold(
        (listener, AcceptBackoff::new(what)),
        move |(listener, mut backoff)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        backoff.succeeded();
                        nodelay(&stream, inherits);
                        return Some((Ok(stream), (listener, backoff)));
                    }
                    Err(error) => {
                        let delay = backoff.failed(&error);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    /// With `deferAccept`, a connection is handed over once its first bytes are in (and read
    /// at once); a silent one after the deferral; with zero, at the end of the handshake.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_client_listener_hands_connections_over_with_their_first_bytes() {
        use tokio::io::AsyncWriteExt;
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let deferred = bind_client(addr, Duration::from_millis(1)).await.unwrap();
        assert!(defer_accept_secs(&deferred).unwrap() > 0);
        let mut client = TcpStream::connect(deferred.local_addr().unwrap())
            .await
            .unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), deferred.accept()).await;
        assert!(early.is_err(), "handed over before its first bytes");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (stream, _) = tokio::time::timeout(Duration::from_secs(5), deferred.accept())
            .await
            .expect("handed over once its bytes were in")
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            stream.try_read(&mut buf).unwrap(),
            16,
            "the bytes are there at once"
        );
        // A client that says nothing is handed over after the deferral all the same.
        let silent = TcpStream::connect(deferred.local_addr().unwrap())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let (late, _) = tokio::time::timeout(Duration::from_secs(10), deferred.accept())
            .await
            .expect("a silent client is handed over after the deferral")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(late.peer_addr().unwrap(), silent.local_addr().unwrap());

        let plain = bind_client(addr, Duration::ZERO).await.unwrap();
        assert_eq!(defer_accept_secs(&plain).unwrap(), 0);
        let _client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), plain.accept())
            .await
            .expect("without deferral: handed over at the end of the handshake")
            .unwrap();
    }

    #[test]
    fn failures_back_off_doubling_to_a_bound_and_reset_on_success() {
        let mut b = AcceptBackoff::new("test");
        assert!(!b.in_episode());
        let delays: Vec<u64> = (0..10)
            .map(|_| b.failed(&emfile()).as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert!(b.in_episode());
        // A failure of the connection alone is retried at once and ends nothing.
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&reset), Duration::ZERO);
        assert!(b.in_episode());
        b.succeeded();
        assert!(!b.in_episode());
        // The next episode starts again at the shortest wait.
        assert_eq!(b.failed(&emfile()), MIN_DELAY);
    }

    #[test]
    fn a_spinning_loop_would_fail_more_than_a_few_dozen_times_a_minute() {
        // Over one minute of EMFILE, the loop tries about 60 times, not millions.
        let mut b = AcceptBackoff::new("test");
        let (mut waited, mut tries) = (Duration::ZERO, 0);
        while waited < Duration::from_secs(60) {
            waited += b.failed(&emfile());
            tries += 1;
        }
        assert!(tries < 70, "{tries} tries in a minute");
    }

    #[tokio::test]
    async fn incoming_yields_accepted_connections() {
        use futures_util::StreamExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = Box::pin(incoming(listener, "test"));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = stream.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn accepted_client_connections_have_nodelay_whether_the_listener_has_it_or_not() {
        for on_listener in [true, false] {
            let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
            let listener = if on_listener {
                bind(any).await.unwrap()
            } else {
                TcpListener::bind(any).await.unwrap()
            };
            if on_listener {
                assert_eq!(inherits_nodelay(&listener), cfg!(target_os = "linux"));
            } else {
                assert!(!inherits_nodelay(&listener));
            }
            let addr = listener.local_addr().unwrap();
            let mut backoff = AcceptBackoff::new("test");
            let stop = std::future::pending::<()>();
            tokio::pin!(stop);
            for _ in 0..2 {
                let _client = TcpStream::connect(addr).await.unwrap();
                let (accepted, _) = backoff.accept(&listener, stop.as_mut()).await.unwrap();
                assert!(accepted.nodelay().unwrap(), "on_listener={on_listener}");
            }
        }
    }
}
