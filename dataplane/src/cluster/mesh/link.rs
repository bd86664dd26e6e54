//! A link's life once its stream is open: the writer that drains the peer's queue into
//! batches (and sends heartbeats when there is nothing to say), the reader that applies the
//! peer's batches and drops the link when the peer goes silent, and the bookkeeping when it
//! comes up and goes down.
//!
//! The link knows the mesh only through [`Host`], the few things it asks of it, so this
//! module depends on nothing above it. Batching and reading a Hello's client address are
//! pure and tested here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Streaming;

use super::peer::{Peer, Queued};
use crate::cluster::proto::{self as pb, message::Kind};
use crate::engine::cork;

/// Largest gRPC message accepted or sent. One broadcast may carry a client message of up
/// to `engine.maxHttpBufferSize` (at most 256 MiB), and a batch holds whole messages.
pub(super) const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// A batch is closed once it holds this many messages or bytes (or the queue is empty).
const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 1024 * 1024;
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
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            queue: 16 * 1024,
            queue_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What links (and the dialer and acceptor that open them) need from the mesh.
pub(super) trait Host: Send + Sync + 'static {
    /// This node's member id.
    fn me(&self) -> &str;
    fn settings(&self) -> LinkSettings;
    /// The Hello this node opens each link with.
    fn hello(&self) -> pb::Message;
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
    send_hello: bool,
    /// The peer's client address, when its Hello came before the link started.
    client_addr: Option<SocketAddr>,
}

/// Runs a new link to `peer` on its own task, replacing any previous one. The dialer
/// (`send_hello` false) sent its Hello with the call; the acceptor sends its own first, and
/// passes the client address of the Hello it already read.
pub(super) fn attach<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    inbound: Streaming<pb::Batch>,
    out: mpsc::Sender<pb::Batch>,
    send_hello: bool,
    client_addr: Option<SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    let generation = peer
        .generation
        .fetch_add(1, Ordering::AcqRel)
        .wrapping_add(1);
    let link = Link {
        generation,
        send_hello,
        client_addr,
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
        send_hello,
        client_addr,
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
    peer.learn_client_addr(client_addr);
    peer.up.store(true, Ordering::Release);
    tracing::info!(peer = %peer.id, addr = %peer.addr, "peer link up");
    host.link_up(&peer);

    let settings = host.settings();
    let writer = async {
        if send_hello
            && out
                .send(pb::Batch {
                    messages: vec![host.hello()],
                })
                .await
                .is_err()
        {
            return "stream closed";
        }
        let mut seq = 0u64;
        loop {
            let batch = match tokio::time::timeout(settings.heartbeat_interval, queue.recv()).await
            {
                Ok(Some(first)) => collect_batch(peer.take(first), &mut queue, &peer),
                Ok(None) => return "mesh closed",
                Err(_) => {
                    seq = seq.wrapping_add(1);
                    pb::Batch {
                        messages: vec![pb::Message::of(Kind::Heartbeat(pb::Heartbeat { seq }))],
                    }
                }
            };
            if out.send(batch).await.is_err() {
                return "stream closed";
            }
        }
    };
    let reader = async {
        loop {
            match tokio::time::timeout(settings.heartbeat_timeout, inbound.message()).await {
                Err(_) => return "heartbeat timeout".to_string(),
                Ok(Ok(None)) => return "closed by peer".to_string(),
                Ok(Err(status)) => return format!("stream error: {}", status.message()),
                Ok(Ok(Some(batch))) => {
                    if let Some(reason) = receive_batch(&host, &peer, generation, batch) {
                        return reason;
                    }
                }
            }
        }
    };
    let reason = tokio::select! {
        reason = writer => reason.to_string(),
        reason = reader => reason,
    };
    if peer.generation.load(Ordering::Acquire) == generation {
        peer.up.store(false, Ordering::Release);
        host.link_down(&peer);
        *peer.client_addr.lock() = None;
        let mut discarded = 0usize;
        while let Ok(stale) = queue.try_recv() {
            let _ = peer.take(stale);
            discarded = discarded.saturating_add(1);
        }
        tracing::warn!(peer = %peer.id, addr = %peer.addr, %reason, discarded, "peer link down; peer out of routing");
        host.peer_gone(&peer);
    }
}

/// Applies one batch from `peer` on link `generation`; `Some` ends the link, saying why.
/// One write-combining scope per batch: a local socket that several of its broadcasts
/// reach gets them in one write.
fn receive_batch<H: Host>(
    host: &Arc<H>,
    peer: &Arc<Peer>,
    generation: u64,
    batch: pb::Batch,
) -> Option<String> {
    cork::corked(|| {
        for message in batch.messages {
            match message.kind {
                Some(Kind::Hello(hello)) if hello.member != peer.id => {
                    return Some(format!(
                        "the peer at {} says it is {:?}",
                        peer.addr, hello.member
                    ));
                }
                Some(Kind::Hello(hello)) => {
                    if peer.generation.load(Ordering::Acquire) == generation {
                        peer.learn_client_addr(peer_client_address(&hello, peer.addr));
                    }
                }
                Some(Kind::Heartbeat(_)) | None => {}
                Some(kind) => host.handle(peer, kind),
            }
        }
        None
    })
}

/// The client address a peer's Hello advertises. An unspecified IP (a node listening on
/// 0.0.0.0 that was not told its own address) is replaced by the IP its peer link uses.
pub(super) fn peer_client_address(hello: &pb::Hello, peer_addr: SocketAddr) -> Option<SocketAddr> {
    if hello.client_address.is_empty() {
        return None;
    }
    let Ok(mut addr) = hello.client_address.parse::<SocketAddr>() else {
        tracing::warn!(peer = %hello.member, address = %hello.client_address, "peer advertises an unusable client address");
        return None;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(peer_addr.ip());
    }
    Some(addr)
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
        mesh.start(members.addr("n1").unwrap()).await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn links_tell_each_side_where_the_other_serves_clients() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 1]));
        let a = Mesh::new("a", &members, fast(), Arc::new(Recorder::default())).unwrap();
        let b = Mesh::new("b", &members, fast(), Arc::new(Recorder::default())).unwrap();
        a.advertise_client_address("127.0.0.21:3000".parse().unwrap());
        // An unspecified IP is filled in with the IP of the peer link.
        b.advertise_client_address("0.0.0.0:3001".parse().unwrap());
        a.start(members.addr("a").unwrap()).await.unwrap();
        b.start(members.addr("b").unwrap()).await.unwrap();
        wait_for("addresses", || {
            a.client_address_of("b").is_some() && b.client_address_of("a").is_some()
        })
        .await;
        assert_eq!(
            a.client_address_of("b"),
            Some("127.0.0.1:3001".parse().unwrap())
        );
        assert_eq!(
            b.client_address_of("a"),
            Some("127.0.0.21:3000".parse().unwrap())
        );
        assert_eq!(a.client_address_of("nobody"), None);
        // A peer whose link is down has no route.
        b.close();
        wait_for("link down", || a.client_address_of("b").is_none()).await;
        a.close();
    }

    #[test]
    fn advertised_client_addresses_are_checked_and_completed() {
        let peer: SocketAddr = "10.0.0.7:7000".parse().unwrap();
        let hello = |address: &str| pb::Hello {
            member: "b".into(),
            client_address: address.into(),
        };
        assert_eq!(peer_client_address(&hello(""), peer), None);
        assert_eq!(peer_client_address(&hello("not an address"), peer), None);
        assert_eq!(
            peer_client_address(&hello("10.0.0.8:3000"), peer),
            Some("10.0.0.8:3000".parse().unwrap())
        );
        assert_eq!(
            peer_client_address(&hello("0.0.0.0:3000"), peer),
            Some("10.0.0.7:3000".parse().unwrap())
        );
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
