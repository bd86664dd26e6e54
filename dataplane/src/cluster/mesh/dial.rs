//! Dialing: of each pair of members the one whose id sorts first opens the link, and keeps
//! re-opening it, with exponential backoff and jitter, for as long as the peer is a member.
//!
//! The backoff schedule ([`Backoff`]) and the error text are pure and tested here; the rest
//! is the I/O of one dial (connect, send the Hello, wait for the answer) and the loop around
//! it. The link itself runs in [`super::link`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Status, Streaming};

use super::hello;
use super::link::{self, Host, STREAM_DEPTH};
use super::peer::Peer;
use super::transport::{
    Connector, DIALER_CONNECTION_WINDOW_BYTES, DIALER_STREAM_WINDOW_BYTES, MAX_HEADER_LIST_BYTES,
};
use crate::cluster::proto::{self as pb, peer_client::PeerClient};

/// Dial backoff: doubles from the minimum up to the maximum, with jitter, and starts over
/// after a link that stayed up for `BACKOFF_RESET`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Largest backoff after a peer refused this node as not (yet) a member.
const BACKOFF_STRANGER: Duration = Duration::from_secs(1);
/// TCP connect; the TLS handshake gets `cluster.tls.handshakeTimeout` on top.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether member `me` dials member `peer` (the member whose id sorts first does; the
/// other accepts).
pub(super) fn dials(me: &str, peer: &str) -> bool {
    me < peer
}

/// Why a dial did not produce a link (logged; the dialer retries).
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("link refused: {}", .0.message())]
    Refused(#[from] Status),
    #[error("no answer to the link request within the heartbeat timeout")]
    NoAnswer,
    #[error("the peer answered as {0:?}")]
    WrongPeer(String),
}

impl DialError {
    /// The peer refused this node as not (yet) one of its members.
    fn refused_as_stranger(&self) -> bool {
        matches!(self, DialError::Refused(status) if status.code() == tonic::Code::PermissionDenied)
    }
}

/// How long the dialer waits before its next dial.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    /// Failed dials since the last link.
    failures: u32,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: BACKOFF_MIN,
            failures: 0,
        }
    }

    /// A link that was up for `lasted` ended; a long-lived one starts the schedule over.
    fn link_ended(&mut self, lasted: Duration) {
        self.failures = 0;
        if lasted >= BACKOFF_RESET {
            self.next = BACKOFF_MIN;
        }
    }

    /// A dial failed; returns how many failed in a row (the first is news, retries are not).
    fn dial_failed(&mut self) -> u32 {
        self.failures = self.failures.saturating_add(1);
        self.failures
    }

    /// The wait before the next dial: the current backoff scaled by `jitter` (in 0.5..1),
    /// after which the backoff doubles up to its maximum, or up to `BACKOFF_STRANGER` after
    /// a refusal as a stranger (a new member is refused until the peer's discovery lists it
    /// too: retrying soon links it within about one discovery interval). A `jitter` that
    /// does not scale to a duration leaves the wait unscaled.
    fn wait(&mut self, jitter: f64, refused_as_stranger: bool) -> Duration {
        let wait =
            Duration::try_from_secs_f64(self.next.as_secs_f64() * jitter).unwrap_or(self.next);
        self.next = self.next.saturating_mul(2).min(BACKOFF_MAX);
        if refused_as_stranger {
            self.next = self.next.min(BACKOFF_STRANGER);
        }
        wait
    }
}

/// Starts (or restarts) the dial loop of `peer`.
pub(super) fn spawn_dialer<H: Host>(host: &Arc<H>, peer: &Arc<Peer>) {
    let dialer = tokio::spawn(dial_loop(host.clone(), peer.clone()));
    if let Some(old) = peer.dialer.lock().replace(dialer.abort_handle()) {
        old.abort();
    }
}

/// Re-dials `peer` until the task is aborted (the peer left or the mesh closed), or, once
/// this node is leaving, until its link ends.
async fn dial_loop<H: Host>(host: Arc<H>, peer: Arc<Peer>) {
    let mut backoff = Backoff::new();
    let closing = host.closing();
    loop {
        if *closing.borrow() {
            return; // leaving: no new link
        }
        let mut refused_as_stranger = false;
        match dial(host.as_ref(), &peer).await {
            Ok((inbound, out, advertised)) => {
                let started = Instant::now();
                let link = link::attach(&host, &peer, inbound, out, advertised);
                // The link task ends when the link breaks (or is replaced or aborted).
                let _ = link.await;
                backoff.link_ended(started.elapsed());
            }
            Err(error) => {
                refused_as_stranger = error.refused_as_stranger();
                let failures = backoff.dial_failed();
                let error = chain(&error);
                if failures == 1 {
                    tracing::info!(peer = %peer.id, addr = %peer.addr, %error, "cannot reach peer; retrying with backoff");
                } else {
                    tracing::debug!(peer = %peer.id, addr = %peer.addr, %error, failures, "peer dial failed");
                }
            }
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        tokio::time::sleep(backoff.wait(jitter, refused_as_stranger)).await;
    }
}

/// A dialed link: the peer's stream, this side's sender, and the addresses the peer advertises.
type Dialed = (
    Streaming<pb::Batch>,
    mpsc::Sender<pb::Batch>,
    super::hello::Advertised,
);

/// Opens the link stream to `peer` (over TLS naming the peer's member id, unless the mesh
/// is plaintext). The Hellos travel in the request and response headers.
async fn dial<H: Host>(host: &H, peer: &Peer) -> Result<Dialed, DialError> {
    let tls = host.tls();
    let timeout = CONNECT_TIMEOUT + tls.as_ref().map_or(Duration::ZERO, |t| t.handshake_timeout);
    let connector = Connector {
        addr: peer.addr,
        peer: peer.id.clone(),
        tls,
    };
    // The scheme is "http" even over TLS: the connector does the TLS, not tonic.
    let channel = Endpoint::from_shared(format!("http://{}", peer.addr))?
        .connect_timeout(timeout)
        .initial_stream_window_size(DIALER_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(DIALER_CONNECTION_WINDOW_BYTES)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .connect_with_connector(connector)
        .await?;
    let max = host.settings().max_message_bytes;
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let (out, rx) = mpsc::channel(STREAM_DEPTH);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    hello::write(request.metadata_mut(), &host.hello());
    let response = tokio::time::timeout(host.settings().heartbeat_timeout, client.link(request))
        .await
        .map_err(|_| DialError::NoAnswer)??;
    let answer = hello::read(response.metadata())?;
    if answer.member != peer.id {
        return Err(DialError::WrongPeer(answer.member));
    }
    let advertised = hello::advertised(&answer, peer.addr);
    Ok((response.into_inner(), out, advertised))
}

/// An error with its sources, `a: b: c` (tonic's transport errors say little on their own).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        // Wrappers often repeat their source's text; say each part once.
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{fast, free_port, node, Recorder};
    use super::super::Mesh;
    use super::*;
    use crate::cluster::membership::Members;

    #[test]
    fn the_first_id_dials() {
        assert!(dials("a", "b"));
        assert!(!dials("b", "a"));
        assert!(!dials("a", "a"));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<_> = (0..8).map(|_| b.wait(1.0, false)).collect();
        let ms: Vec<_> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.wait(0.5, false), Duration::from_millis(2500));
        // A jitter that does not scale leaves the wait as it is.
        assert_eq!(b.wait(f64::NAN, false), BACKOFF_MAX);
    }

    #[test]
    fn backoff_starts_over_after_a_lasting_link_only() {
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.wait(1.0, false);
        }
        b.link_ended(Duration::from_secs(1));
        assert_eq!(b.wait(1.0, false), Duration::from_millis(3200));
        b.link_ended(BACKOFF_RESET);
        assert_eq!(b.wait(1.0, false), BACKOFF_MIN);
    }

    #[test]
    fn backoff_stays_short_for_a_refused_stranger() {
        let mut b = Backoff::new();
        let ms: Vec<_> = (0..6).map(|_| b.wait(1.0, true).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn failures_are_counted_until_a_link() {
        let mut b = Backoff::new();
        assert_eq!((b.dial_failed(), b.dial_failed()), (1, 2));
        b.link_ended(Duration::ZERO);
        assert_eq!(b.dial_failed(), 1);
    }

    #[test]
    fn only_a_permission_refusal_is_a_stranger() {
        assert!(DialError::Refused(Status::permission_denied("x")).refused_as_stranger());
        assert!(!DialError::Refused(Status::failed_precondition("x")).refused_as_stranger());
        assert!(!DialError::NoAnswer.refused_as_stranger());
    }

    #[test]
    fn error_chains_say_each_part_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect error")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect: {0}")]
        struct Top(#[source] Outer);
        assert_eq!(
            chain(&Top(Outer(io))),
            "cannot connect: connect error: refused"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_answers_never_enters_routing() {
        // A "peer" that accepts TCP but never speaks gRPC: the dial times out, so no link.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", silent.local_addr().unwrap());
        let got = Arc::new(Recorder::default());
        let mesh = Mesh::new("a", &members, fast(), got).unwrap();
        super::super::testkit::start(&mesh, members.addr("a").unwrap()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(mesh.connected().is_empty());
        mesh.close();
    }

    /// A new member that dials is refused until the peer knows it, then links within about a
    /// second (its backoff stays short while it is refused as a stranger).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_newcomer_links_soon_after_it_is_known() {
        let mut members = Members::new();
        members.insert("b", free_port([127, 0, 0, 1]));
        let b = node("b", &members, fast()).await;
        members.insert("a", free_port([127, 0, 0, 1]));
        let a = node("a", &members, fast()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            a.mesh.connected().is_empty(),
            "refused while b does not know a"
        );
        let t = Instant::now();
        b.mesh.set_members(&members);
        super::super::testkit::wait_for("link", || a.mesh.connected() == ["b"]).await;
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            t.elapsed()
        );
        a.mesh.close();
        b.mesh.close();
    }
}
