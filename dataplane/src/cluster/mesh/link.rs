//! A link's life once its stream is open: the writer that drains the peer's queue into
//! batches (and sends heartbeats when there is nothing to say), the reader that applies the
//! peer's batches and drops the link when the peer goes silent, the end of a link when this
//! node leaves (everything queued is sent, then both sides end in turn), and the bookkeeping
//! when it comes up and goes down.
//!
//! The link knows the mesh only through [`Host`], the few things it asks of it, so this
//! module depends on nothing above it. Batching and reading a Hello's client address are
//! pure and tested here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::Streaming;

use super::hello::Advertised;
use super::peer::{Peer, Queued};
use super::reload::PeerTls;
use crate::cluster::proto::{self as pb, message::Kind};
use crate::engine::cork;

/// A batch is closed once it holds this many messages or bytes (or the queue is empty), so
/// a batch is at most `BATCH_BYTES` plus its last message.
const BATCH_MESSAGES: usize = 512;
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Batches in flight between a link's writer and HTTP/2; HTTP/2 flow control pushes back
/// through this small channel to the peer's queue.
pub(super) const STREAM_DEPTH: usize = 4;

/// Timing and sizing of peer links.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Messages queued per peer before new ones are dropped.
    pub queue: usize,
    /// Bytes (encoded) queued per peer before new ones are dropped (`cluster.maxPeerQueueBytes`).
    pub queue_bytes: usize,
    /// Largest batch (gRPC message) sent or accepted on a link (`cluster.maxPeerMessageBytes`).
    pub max_message_bytes: usize,
    /// Connections the peer port holds at once (`cluster.maxPeerConnections`).
    pub max_connections: usize,
    /// ... from one source address (`cluster.maxPeerConnectionsPerIp`).
    pub max_connections_per_ip: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            queue: 16 * 1024,
            queue_bytes: 64 * 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 8,
        }
    }
}

/// What links (and the dialer and acceptor that open them) need from the mesh.
pub(super) trait Host: Send + Sync + 'static {
    /// This node's member id.
    fn me(&self) -> &str;
    fn settings(&self) -> LinkSettings;
    /// The Hello this node opens each link with (in the request or response headers).
    fn hello(&self) -> pb::Hello;
    /// The TLS material of the peer port; `None` in plaintext.
    fn tls(&self) -> Option<Arc<PeerTls>>;
    /// Becomes true when this node leaves: links end after their queue, none opens.
    fn closing(&self) -> watch::Receiver<bool>;
    /// Counts a link refused for its identity (logged by the caller).
    fn link_refused(&self);
    /// The current peer `id`, unless it left.
    fn peer(&self, id: &str) -> Option<Arc<Peer>>;
    /// One message from `peer`, other than link upkeep.
    fn handle(self: &Arc<Self>, peer: &Arc<Peer>, kind: Kind);
    /// The link to `peer` is up; called before any of its messages is handled.
    fn link_up(&self, peer: &Peer);
    /// The link to `peer` went down: it is out of routing (its queue not yet emptied).
    fn link_down(&self, peer: &Peer);
    /// The link to `peer` is gone for good: requests stop waiting for its replies.
    fn peer_gone(&self, peer: &Peer);
}

/// What a new link task starts with.
struct Link {
    generation: u64,
    /// The peer's client and app addresses, from its Hello (already checked against its IP).
    advertised: Advertised,
}

/// Runs a new link to `peer` on its own task, replacing any previous one. Both Hellos were
/// exchanged in the headers of the call; `advertised` is what the peer's said.
pub(super) fn attach<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    inbound: Streaming<pb::Batch>,
    out: mpsc::Sender<pb::Batch>,
    advertised: Advertised,
) -> tokio::task::JoinHandle<()> {
    let generation = peer
        .generation
        .fetch_add(1, Ordering::AcqRel)
        .wrapping_add(1);
    let link = Link {
        generation,
        advertised,
    };
    let task = tokio::spawn(run(host.clone(), peer.clone(), link, inbound, out));
    if let Some(old) = peer.link.lock().replace(task.abort_handle()) {
        old.abort();
    }
    // The peer may have left while this link was being set up.
    if peer.is_removed() {
        task.abort();
    }
    task
}

async fn run<H: Host>(
    host: Arc<H>,
    peer: Arc<Peer>,
    link: Link,
    mut inbound: Streaming<pb::Batch>,
    out: mpsc::Sender<pb::Batch>,
) {
    let Link {
        generation,
        advertised,
    } = link;
    // Waits for a link this one replaces to be aborted and let go of the queue.
    let mut queue = peer.rx.lock().await;
    if peer.generation.load(Ordering::Acquire) != generation || peer.is_removed() {
        return;
    }
    // Whatever was queued while no link was up is stale: peers out of routing get nothing.
    while let Ok(stale) = queue.try_recv() {
        let _ = peer.take(stale);
    }
    *peer.client_addr.lock() = None;
    peer.learn_client_addr(advertised.client);
    *peer.app_addr.lock() = advertised.app;
    peer.up.store(true, Ordering::Release);
    tracing::info!(peer = %peer.id, addr = %peer.addr, "peer link up");
    host.link_up(&peer);

    let settings = host.settings();
    // In a block: the writer and reader borrow the queue, emptied below once they are done.
    let reason = {
        let writer = write(
            &peer,
            &mut queue,
            out,
            host.closing(),
            settings.heartbeat_interval,
        );
        let reader = read(&host, &peer, &mut inbound, settings.heartbeat_timeout);
        tokio::pin!(writer, reader);
        tokio::select! {
            ended = &mut writer => match ended {
                // The peer ends its side once it has read ours to the end; until then its
                // messages are still applied.
                Ok(()) => match tokio::time::timeout(settings.heartbeat_timeout, &mut reader).await {
                    Ok(reason) => format!("leaving, everything sent; then {reason}"),
                    Err(_) => "leaving; the peer did not end its side in time".to_string(),
                },
                Err(reason) => reason.to_string(),
            },
            reason = &mut reader => reason,
        }
    };
    if peer.generation.load(Ordering::Acquire) == generation {
        peer.up.store(false, Ordering::Release);
        host.link_down(&peer);
        *peer.client_addr.lock() = None;
        *peer.app_addr.lock() = None;
        let mut discarded = 0usize;
        while let Ok(stale) = queue.try_recv() {
            let _ = peer.take(stale);
            discarded = discarded.saturating_add(1);
        }
        if *host.closing().borrow() {
            // This node is leaving: the expected end of every link, not a fault.
            tracing::info!(peer = %peer.id, addr = %peer.addr, %reason, discarded, "peer link closed; leaving");
        } else {
            tracing::warn!(peer = %peer.id, addr = %peer.addr, %reason, discarded, "peer link down; peer out of routing");
        }
        host.peer_gone(&peer);
    }
}

/// Sends the peer's queue in batches, and a heartbeat after `heartbeat` of silence, until the
/// stream or the queue closes (`Err`), or this node leaves (`Ok`): then what is queued goes out
/// and this side of the stream ends, as `out` is dropped on return.
async fn write(
    peer: &Peer,
    queue: &mut mpsc::Receiver<Queued>,
    out: mpsc::Sender<pb::Batch>,
    mut closing: watch::Receiver<bool>,
    heartbeat: Duration,
) -> Result<(), &'static str> {
    let mut seq = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = closing.wait_for(|leaving| *leaving) => None,
            next = tokio::time::timeout(heartbeat, queue.recv()) => Some(next),
        };
        let batch = match next {
            None => {
                while let Ok(first) = queue.try_recv() {
                    let batch = collect_batch(peer.take(first), queue, peer);
                    out.send(batch).await.map_err(|_| "stream closed")?;
                }
                return Ok(());
            }
            Some(Ok(Some(first))) => collect_batch(peer.take(first), queue, peer),
            Some(Ok(None)) => return Err("mesh closed"),
            Some(Err(_)) => {
                seq = seq.wrapping_add(1);
                pb::Batch {
                    messages: vec![pb::Message::of(Kind::Heartbeat(pb::Heartbeat { seq }))],
                }
            }
        };
        out.send(batch).await.map_err(|_| "stream closed")?;
    }
}

/// Applies the peer's batches until its side ends, fails, or stays silent for `timeout`;
/// returns why it stopped.
async fn read<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    inbound: &mut Streaming<pb::Batch>,
    timeout: Duration,
) -> String {
    loop {
        match tokio::time::timeout(timeout, inbound.message()).await {
            Err(_) => return "heartbeat timeout".to_string(),
            Ok(Ok(None)) => return "closed by peer".to_string(),
            Ok(Err(status)) => return format!("stream error: {}", status.message()),
            Ok(Ok(Some(batch))) => receive_batch(host, peer, batch),
        }
    }
}

/// Applies one batch from `peer`. One write-combining scope per batch: a local socket that
/// several of its broadcasts reach gets them in one write. A Hello is only ever sent in the
/// headers of the call (`hello`): one on the stream changes nothing.
fn receive_batch<H: Host>(host: &Arc<H>, peer: &Arc<Peer>, batch: pb::Batch) {
    cork::corked(|| {
        for message in batch.messages {
            match message.kind {
                Some(Kind::Hello(_) | Kind::Heartbeat(_)) | None => {}
                Some(kind) => host.handle(peer, kind),
            }
        }
    });
}

/// `first` plus whatever else is queued, up to the batch limits.
fn collect_batch(first: pb::Message, queue: &mut mpsc::Receiver<Queued>, peer: &Peer) -> pb::Batch {
    use prost::Message as _;
    let mut bytes = first.encoded_len();
    let mut messages = vec![first];
    while messages.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(queued) => {
                let message = peer.take(queued);
                bytes = bytes.saturating_add(message.encoded_len());
                messages.push(message);
            }
            Err(_) => break,
        }
    }
    pb::Batch { messages }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::testkit::{
        broadcast, cluster, fast, free_port, received, wait_for, Node, Recorder,
    };
    use super::super::Mesh;
    use super::*;
    use crate::cluster::membership::Members;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_peer_leaves_routing_and_a_restarted_one_comes_back() {
        let settings = fast();
        let (members, mut nodes) = cluster(2, settings).await;
        wait_for("link", || nodes[0].mesh.connected() == ["n1"]).await;
        // n1 dies: n0 drops it from routing within the heartbeat timeout.
        let dead = nodes.pop().unwrap();
        dead.mesh.close();
        let t = Instant::now();
        wait_for("peer down", || nodes[0].mesh.connected().is_empty()).await;
        assert!(t.elapsed() <= settings.heartbeat_timeout + Duration::from_millis(500));
        // Nothing is queued for a peer out of routing.
        nodes[0].mesh.send_all(&broadcast(1), false);
        // n1 comes back on the same address (once the aborted listener is gone): n0 re-dials it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = Arc::new(Recorder::default());
        let mesh = Mesh::new("n1", &members, settings, got.clone()).unwrap();
        super::super::testkit::start(&mesh, members.addr("n1").unwrap()).await;
        let back = Node { mesh, got };
        wait_for("relink", || nodes[0].mesh.connected() == ["n1"]).await;
        wait_for("relink", || back.mesh.connected() == ["n0"]).await;
        nodes[0].mesh.send_all(&broadcast(2), false);
        wait_for("delivery", || received(&back).len() == 1).await;
        assert_eq!(
            received(&back),
            [("n0".to_string(), "2[\"n\",2]".to_string())]
        );
        back.mesh.close();
        nodes[0].mesh.close();
    }

    /// Each side learns where the other serves clients from its Hello, but only an address
    /// on the IP discovery gave for it: one elsewhere is ignored, so nothing is forwarded there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn links_tell_each_side_where_the_other_serves_clients() {
        let mut members = Members::new();
        for id in ["a", "b", "c"] {
            members.insert(id, free_port([127, 0, 0, 1]));
        }
        let mesh = |id| Mesh::new(id, &members, fast(), Arc::new(Recorder::default())).unwrap();
        let (a, b, c) = (mesh("a"), mesh("b"), mesh("c"));
        a.advertise_client_address("127.0.0.1:3000".parse().unwrap());
        // An unspecified IP is filled in with the IP of the peer link.
        b.advertise_client_address("0.0.0.0:3001".parse().unwrap());
        // Off c's own IP: an address c cannot make the others forward to.
        c.advertise_client_address("127.0.0.21:3002".parse().unwrap());
        for m in [&a, &b, &c] {
            super::super::testkit::start(m, members.addr(m.me()).unwrap()).await;
        }
        wait_for("addresses", || {
            a.client_address_of("b").is_some() && b.client_address_of("a").is_some()
        })
        .await;
        wait_for("links", || {
            a.connected().len() == 2 && b.connected().len() == 2
        })
        .await;
        assert_eq!(
            a.client_address_of("b"),
            Some("127.0.0.1:3001".parse().unwrap())
        );
        assert_eq!(
            b.client_address_of("a"),
            Some("127.0.0.1:3000".parse().unwrap())
        );
        assert_eq!(
            a.client_address_of("c"),
            None,
            "c's lie is ignored by its dialer"
        );
        assert_eq!(b.client_address_of("c"), None);
        assert_eq!(
            c.client_address_of("a"),
            Some("127.0.0.1:3000".parse().unwrap())
        );
        assert_eq!(a.client_address_of("nobody"), None);
        // A peer whose link is down has no route.
        b.close();
        wait_for("link down", || a.client_address_of("b").is_none()).await;
        a.close();
        c.close();
    }

    #[test]
    fn batches_respect_their_limits() {
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 2048, 1 << 30);
        peer.up.store(true, Ordering::Release);
        for n in 0..1000 {
            peer.offer(broadcast(n), false);
        }
        let mut rx = peer.rx.try_lock().unwrap();
        let first = collect_batch(broadcast(0), &mut rx, &peer);
        assert_eq!(first.messages.len(), BATCH_MESSAGES);
        let big = pb::Message::of(Kind::Broadcast(pb::Broadcast {
            packet: bytes::Bytes::from(vec![b'x'; BATCH_BYTES]),
            ..Default::default()
        }));
        assert_eq!(collect_batch(big, &mut rx, &peer).messages.len(), 1);
    }
}
