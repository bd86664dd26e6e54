//! Peer links: one long-lived gRPC bidirectional stream per pair of members.
//!
//! Of each pair, the member whose id sorts first dials (and re-dials, with exponential
//! backoff) and the other accepts on its peer listener; both directions then share the one
//! stream. What a node sends to a peer goes through that peer's bounded queue; one writer
//! per link drains it into batches (many messages per HTTP/2 frame), so a broadcast costs
//! one network copy per destination node however many recipients it has there.
//!
//! Liveness: a side that has sent nothing for `heartbeat_interval` sends a heartbeat, and a
//! side that has heard nothing for `heartbeat_timeout` drops the link. A peer whose link is
//! down is out of routing: nothing is queued for it, and what was queued is discarded. So a
//! dead peer stops receiving traffic at once when its connection breaks (process exit, RST)
//! and at most `heartbeat_timeout` after its last message when it goes silent (partition,
//! hung process).
//!
//! Members come and go at run time ([`Mesh::set_members`]): a new member gets a queue (and
//! a dial loop when this node dials it), a departed one loses its link, its queue and its
//! place in pending requests at once, and one whose address changed is replaced as if it
//! had left and joined. Every change is published as a [`Membership`] on a watch channel
//! ([`Mesh::subscribe`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::membership::{MembersDiff, Membership};
use super::proto::peer_client::PeerClient;
use super::proto::peer_server::{Peer as PeerService, PeerServer};
use super::proto::{self as pb, message::Kind};
use super::Members;
use crate::engine::cork;

/// Largest gRPC message accepted or sent. One broadcast may carry a client message of up
/// to `engine.maxHttpBufferSize` (at most 256 MiB), and a batch holds whole messages.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// A batch is closed once it holds this many messages or bytes (or the queue is empty).
const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches in flight between a link's writer and HTTP/2; HTTP/2 flow control pushes back
/// through this small channel to the peer's queue.
const STREAM_DEPTH: usize = 4;
/// Dial backoff: doubles from the minimum up to the maximum, with jitter, and starts over
/// after a link that stayed up for `BACKOFF_RESET`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Largest backoff after a peer refused this node as not (yet) a member.
const BACKOFF_STRANGER: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Timing and sizing of peer links.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Messages queued per peer before new ones are dropped.
    pub queue: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            queue: 16 * 1024,
        }
    }
}

/// Errors of the peer layer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("this node ({0:?}) is not in the member list")]
    NotAMember(String),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
}

/// A reply still being worked out (e.g. waiting for clients' acks).
pub type Answer = Pin<Box<dyn std::future::Future<Output = pb::Message> + Send>>;

/// What this node does with the messages its peers send (other than link upkeep and
/// replies to this node's requests).
pub trait Inbound: Send + Sync + 'static {
    /// Handles one message; the answer it may return is sent back to `from` once ready
    /// (it runs on its own task, so a slow answer never holds up the link).
    fn receive(&self, from: &str, message: Kind) -> Option<Answer>;

    /// A link to `peer` came up; called before any of its messages is received.
    fn link_up(&self, _peer: &str) {}

    /// The link to `peer` went down (the peer is out of routing).
    fn link_down(&self, _peer: &str) {}
}

/// One other member and the state of the link to it.
struct Peer {
    id: String,
    addr: SocketAddr,
    tx: mpsc::Sender<pb::Message>,
    /// Held by the link's writer for as long as the link lives.
    rx: tokio::sync::Mutex<mpsc::Receiver<pb::Message>>,
    /// In routing: a link is up.
    up: AtomicBool,
    /// Bumped by every new link; a link only cleans up after itself while it is current.
    generation: AtomicU64,
    link: Mutex<Option<AbortHandle>>,
    /// The dial loop, on the side that dials.
    dialer: Mutex<Option<AbortHandle>>,
    /// Set once the peer left the member set (or the mesh closed); no link attaches after.
    removed: AtomicBool,
    dropped: AtomicU64,
    /// Where the peer serves clients, as its Hello of the current link said.
    client_addr: Mutex<Option<SocketAddr>>,
    /// Set on the first drop of an overload, cleared on the next successful send, so an
    /// overload logs twice (start, end) instead of once per message.
    overloaded: AtomicBool,
}

impl Peer {
    fn new(id: &str, addr: SocketAddr, queue: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Arc::new(Peer {
            id: id.to_string(),
            addr,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            link: Mutex::new(None),
            dialer: Mutex::new(None),
            removed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            client_addr: Mutex::new(None),
            overloaded: AtomicBool::new(false),
        })
    }

    /// Out of routing for good: no more dialing, the link closed, no link attaches after.
    fn stop(&self) {
        self.removed.store(true, Ordering::Release);
        self.up.store(false, Ordering::Release);
        if let Some(dialer) = self.dialer.lock().take() {
            dialer.abort();
        }
        if let Some(link) = self.link.lock().take() {
            link.abort();
        }
    }

    /// Records where the peer serves clients (from its Hello), saying so when it changes.
    fn learn_client_addr(&self, addr: Option<SocketAddr>) {
        let mut current = self.client_addr.lock();
        if *current != addr {
            *current = addr;
            match addr {
                Some(client) => {
                    tracing::info!(peer = %self.id, %client, "peer serves clients here; its sessions' requests are forwarded there")
                }
                None => {
                    tracing::info!(peer = %self.id, "peer advertises no client address; its sessions' requests are not forwarded")
                }
            }
        }
    }
}

/// What a request waiting for replies hears about.
enum PendingEvent {
    Reply(String, pb::Reply),
    /// The peer's link broke or it left the cluster: its reply will never come.
    Gone(String),
}

/// Start/stop state; its lock also serialises member changes with `start` and `close`.
#[derive(Default)]
struct Control {
    started: bool,
    closed: bool,
    tasks: Vec<AbortHandle>,
}

/// This node's links to every other member.
pub struct Mesh {
    me: String,
    peers: RwLock<BTreeMap<String, Arc<Peer>>>,
    settings: LinkSettings,
    inbound: Arc<dyn Inbound>,
    control: Mutex<Control>,
    membership: watch::Sender<Arc<Membership>>,
    /// This node's client address, told to peers in every Hello.
    client_address: std::sync::OnceLock<SocketAddr>,
    /// Messages queued for peers and received from them (link upkeep and room updates not
    /// counted).
    sent: AtomicU64,
    received: AtomicU64,
    /// Room updates (announcements, full lists, synced markers, their pings) queued and
    /// received.
    room_updates_sent: AtomicU64,
    room_updates_received: AtomicU64,
    /// Drops counted by peers that have since left (the total is a counter: it never falls).
    dropped_by_departed: AtomicU64,
    /// Requests waiting for replies, by id.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<PendingEvent>>>,
    next_request: AtomicU64,
}

/// Counters of a mesh, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshStats {
    /// Members of the ring, this node included.
    pub members: usize,
    /// The membership epoch (see [`Membership::epoch`]).
    pub epoch: u64,
    /// Other members.
    pub peers: usize,
    /// Other members whose link is up (in routing).
    pub connected: usize,
    pub sent: u64,
    pub received: u64,
    pub room_updates_sent: u64,
    pub room_updates_received: u64,
    /// Messages not sent because a peer's queue was full.
    pub dropped: u64,
}

impl Mesh {
    /// The links of member `me` to the other `members` (none is opened yet: see
    /// [`Mesh::start`]). `members` must list `me` (its address is what this node
    /// advertises); this is membership epoch 0.
    pub fn new(
        me: &str,
        members: &Members,
        settings: LinkSettings,
        inbound: Arc<dyn Inbound>,
    ) -> Result<Arc<Self>, PeerError> {
        if members.addr(me).is_none() {
            return Err(PeerError::NotAMember(me.to_string()));
        }
        let peers = members
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, addr)| (id.to_string(), Peer::new(id, addr, settings.queue)))
            .collect();
        let (membership, _) = watch::channel(Arc::new(Membership::new(0, members.clone())));
        Ok(Arc::new(Self {
            me: me.to_string(),
            peers: RwLock::new(peers),
            settings,
            inbound,
            control: Mutex::new(Control::default()),
            membership,
            client_address: std::sync::OnceLock::new(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            room_updates_sent: AtomicU64::new(0),
            room_updates_received: AtomicU64::new(0),
            dropped_by_departed: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
        }))
    }

    /// The current member set and ring.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership.borrow().clone()
    }

    /// Follows the member set: the receiver holds the current [`Membership`] and sees every
    /// later one (`changed().await`, then `borrow_and_update()`). A slow reader may skip
    /// versions (watch keeps only the newest) but never misses the latest; compare epochs
    /// to tell. Peer links of new members come up after the change is published, so a
    /// subscriber must not assume a member of the ring is reachable yet.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Membership>> {
        self.membership.subscribe()
    }

    /// Makes `members` the member set (this node stays a member even when `members` leaves
    /// it out). Starts links to new members, drops departed ones (link closed, queued
    /// messages discarded, their pending requests answered as missing at once) and replaces
    /// the ones whose address changed. Publishes a new [`Membership`] when anything changed;
    /// returns what changed. Does nothing once the mesh is closed.
    pub fn set_members(self: &Arc<Self>, members: &Members) -> MembersDiff {
        let control = self.control.lock();
        if control.closed {
            return MembersDiff::default();
        }
        let current = self.membership();
        let mut next = members.clone();
        if next.addr(&self.me).is_none() {
            if let Some(addr) = current.members.addr(&self.me) {
                next.insert(self.me.clone(), addr);
            }
        }
        let diff = current.members.diff(&next);
        if diff.is_empty() {
            return diff;
        }
        let (added, removed) = self.apply(&diff);
        for peer in &removed {
            self.retire(peer);
        }
        if control.started {
            for peer in added.iter().filter(|p| self.dials(&p.id)) {
                self.spawn_dialer(peer);
            }
        }
        self.membership
            .send_replace(Arc::new(Membership::new(current.epoch + 1, next)));
        diff
    }

    /// Updates the peer map for `diff`; returns the peers added and removed (a moved member
    /// is both: a new peer replaces the old one).
    fn apply(&self, diff: &MembersDiff) -> (Vec<Arc<Peer>>, Vec<Arc<Peer>>) {
        let mut peers = self.peers.write();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let gone = diff.left.iter().map(|(id, _)| id);
        let moved = diff.moved.iter().map(|(id, _, _)| id);
        for id in gone.chain(moved).filter(|id| **id != self.me) {
            removed.extend(peers.remove(id));
        }
        let joined = diff.joined.iter().map(|(id, addr)| (id, *addr));
        let moved = diff.moved.iter().map(|(id, _, addr)| (id, *addr));
        for (id, addr) in joined.chain(moved).filter(|(id, _)| **id != self.me) {
            let peer = Peer::new(id, addr, self.settings.queue);
            peers.insert(id.clone(), peer.clone());
            added.push(peer);
        }
        (added, removed)
    }

    /// Takes a peer out for good: stops its dialer and link, and tells waiting requests.
    fn retire(&self, peer: &Peer) {
        peer.stop();
        self.dropped_by_departed
            .fetch_add(peer.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        self.peer_gone(&peer.id);
    }

    /// Requests waiting for `peer` stop waiting for it.
    fn peer_gone(&self, peer: &str) {
        for waiter in self.pending.lock().values() {
            let _ = waiter.send(PendingEvent::Gone(peer.to_string()));
        }
    }

    fn spawn_dialer(self: &Arc<Self>, peer: &Arc<Peer>) {
        let dialer = tokio::spawn(self.clone().dial_loop(peer.clone()));
        if let Some(old) = peer.dialer.lock().replace(dialer.abort_handle()) {
            old.abort();
        }
    }

    /// Binds the peer listener on `listen`, serves it, and dials every peer this node is
    /// the dialer for. Returns the bound address.
    pub async fn start(self: &Arc<Self>, listen: SocketAddr) -> Result<SocketAddr, PeerError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| PeerError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| PeerError::Listen {
            addr: listen,
            source,
        })?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let service = PeerServer::new(Acceptor(self.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let server = tokio::spawn(async move {
            if let Err(error) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(%error, "peer listener failed");
            }
        });
        let mut control = self.control.lock();
        control.tasks.push(server.abort_handle());
        if control.closed {
            server.abort();
            return Ok(addr);
        }
        control.started = true;
        let peers: Vec<_> = self.peers.read().values().cloned().collect();
        for peer in peers.iter().filter(|p| self.dials(&p.id)) {
            self.spawn_dialer(peer);
        }
        Ok(addr)
    }

    /// Closes every link and stops listening and dialing.
    pub fn close(&self) {
        let mut control = self.control.lock();
        control.closed = true;
        for task in control.tasks.drain(..) {
            task.abort();
        }
        for peer in self.peers.read().values() {
            peer.stop();
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Sets the client address this node advertises to its peers (before [`Mesh::start`];
    /// later calls are ignored).
    pub fn advertise_client_address(&self, addr: SocketAddr) {
        let _ = self.client_address.set(addr);
    }

    fn hello(&self) -> pb::Message {
        pb::Message::hello(&self.me, self.client_address.get().copied())
    }

    /// Where member `id` serves clients, if its link is up and it told us.
    pub fn client_address_of(&self, id: &str) -> Option<SocketAddr> {
        let peer = self.peers.read().get(id).cloned()?;
        if !peer.up.load(Ordering::Acquire) {
            return None;
        }
        let addr = *peer.client_addr.lock();
        addr
    }

    /// Whether this node dials `peer` (the member whose id sorts first does).
    fn dials(&self, peer: &str) -> bool {
        self.me.as_str() < peer
    }

    /// Peers whose link is up (in routing).
    pub fn connected(&self) -> Vec<String> {
        self.peers
            .read()
            .values()
            .filter(|p| p.up.load(Ordering::Acquire))
            .map(|p| p.id.clone())
            .collect()
    }

    /// Messages dropped so far because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        let current: u64 = self
            .peers
            .read()
            .values()
            .map(|p| p.dropped.load(Ordering::Relaxed))
            .sum();
        current + self.dropped_by_departed.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> MeshStats {
        let membership = self.membership();
        let peers = self.peers.read();
        MeshStats {
            members: membership.members.len(),
            epoch: membership.epoch,
            peers: peers.len(),
            connected: peers
                .values()
                .filter(|p| p.up.load(Ordering::Acquire))
                .count(),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            room_updates_sent: self.room_updates_sent.load(Ordering::Relaxed),
            room_updates_received: self.room_updates_received.load(Ordering::Relaxed),
            dropped: self.dropped(),
        }
    }

    /// Queues `message` for every peer in routing. Never waits: a peer whose queue is full
    /// does not get it (its link cannot keep up; the drop is counted and logged).
    pub fn send_all(&self, message: &pb::Message, volatile: bool) {
        for peer in self.peers.read().values() {
            self.enqueue(peer, message.clone(), volatile);
        }
    }

    /// Queues `message` for the peer `id` if it is in routing; returns whether it was queued.
    pub fn send_to(&self, id: &str, message: pb::Message, volatile: bool) -> bool {
        let peer = self.peers.read().get(id).cloned();
        match peer {
            Some(peer) => self.enqueue(&peer, message, volatile),
            None => false,
        }
    }

    /// Queues `message` for one peer if it is in routing; returns whether it was queued.
    fn enqueue(&self, peer: &Peer, message: pb::Message, volatile: bool) -> bool {
        if !peer.up.load(Ordering::Acquire) {
            return false;
        }
        let counter = if is_room_update(&message) {
            &self.room_updates_sent
        } else {
            &self.sent
        };
        match peer.tx.try_send(message) {
            Ok(()) => {
                counter.fetch_add(1, Ordering::Relaxed);
                if peer.overloaded.load(Ordering::Relaxed)
                    && peer.overloaded.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(
                        peer = %peer.id,
                        dropped_total = peer.dropped.load(Ordering::Relaxed),
                        "peer link keeps up again"
                    );
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                peer.dropped.fetch_add(1, Ordering::Relaxed);
                if !peer.overloaded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %peer.id,
                        volatile,
                        queue = self.settings.queue,
                        "peer link queue full: dropping messages to this peer"
                    );
                }
                false
            }
            // The queue lives as long as the peer: only possible while closing.
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Sends the request `make(id)` to every peer in routing and gathers their replies,
    /// until all of them answered (or their link broke, or they left) or `timeout` passed.
    /// Returns the replies by peer, and whether some peer did not answer (its link broke,
    /// it left, or it is slow).
    pub async fn ask_all(
        &self,
        make: impl Fn(u64) -> pb::Message,
        timeout: Duration,
    ) -> (Vec<(String, pb::Reply)>, bool) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, tx);
        let message = make(id);
        // Waiting is registered before anything is sent, so a link that breaks after its
        // request was queued is always heard of.
        let mut waiting: HashSet<String> = self
            .peers
            .read()
            .values()
            .filter(|peer| self.enqueue(peer, message.clone(), false))
            .map(|peer| peer.id.clone())
            .collect();
        let expected = waiting.len();
        let mut replies = Vec::with_capacity(expected);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(PendingEvent::Reply(from, reply)) => {
                        if waiting.remove(&from) {
                            replies.push((from, reply));
                        }
                    }
                    Some(PendingEvent::Gone(from)) => {
                        waiting.remove(&from);
                    }
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        self.pending.lock().remove(&id);
        let timed_out = replies.len() < expected;
        if timed_out {
            tracing::warn!(
                id,
                expected,
                answered = replies.len(),
                "peers did not all answer a request in time"
            );
        }
        (replies, timed_out)
    }

    /// How long requests wait for peers: a live peer answers at once, and one that does not
    /// answer within this is about to leave routing anyway.
    pub fn request_timeout(&self) -> Duration {
        self.settings.heartbeat_timeout
    }

    /// Applies one batch from `peer` on link `generation`; `Some` ends the link, saying why.
    /// One write-combining scope per batch: a local socket that several of its broadcasts
    /// reach gets them in one write.
    fn receive_batch(
        self: &Arc<Self>,
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
                    Some(kind) => self.handle(peer, kind),
                }
            }
            None
        })
    }

    /// One message from `peer`, other than link upkeep.
    fn handle(self: &Arc<Self>, peer: &Arc<Peer>, kind: Kind) {
        if is_room_update_kind(&kind) {
            self.room_updates_received.fetch_add(1, Ordering::Relaxed);
        } else {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        let reply = match kind {
            Kind::Reply(reply) => reply,
            // A pong answers a ping as a reply would; it carries nothing.
            Kind::Pong(pong) => pb::Reply {
                id: pong.id,
                ..Default::default()
            },
            Kind::Ping(ping) => {
                let pong = pb::Message::of(Kind::Pong(pb::Pong { id: ping.id }));
                self.enqueue(peer, pong, false);
                return;
            }
            kind => {
                if let Some(answer) = self.inbound.receive(&peer.id, kind) {
                    let (mesh, peer) = (self.clone(), peer.clone());
                    tokio::spawn(async move {
                        let reply = answer.await;
                        mesh.enqueue(&peer, reply, false);
                    });
                }
                return;
            }
        };
        // Unknown ids are replies that came after their request gave up.
        if let Some(waiter) = self.pending.lock().get(&reply.id) {
            let _ = waiter.send(PendingEvent::Reply(peer.id.clone(), reply));
        }
    }

    /// Re-dials `peer` for as long as the mesh lives.
    async fn dial_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            let mut refused_as_stranger = false;
            match self.dial(&peer).await {
                Ok((inbound, out)) => {
                    failures = 0;
                    let started = Instant::now();
                    // The acceptor's Hello (with its client address) comes on the stream.
                    let link = self.attach(&peer, inbound, out, false, None);
                    // The link task ends when the link breaks (or is replaced or aborted).
                    let _ = link.await;
                    if started.elapsed() >= BACKOFF_RESET {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(error) => {
                    refused_as_stranger = matches!(&error, DialError::Refused(status) if status.code() == tonic::Code::PermissionDenied);
                    let error = chain(&error);
                    failures += 1;
                    // The first failure after a link was up is news; the retries are not.
                    if failures == 1 {
                        tracing::info!(peer = %peer.id, addr = %peer.addr, %error, "cannot reach peer; retrying with backoff");
                    } else {
                        tracing::debug!(peer = %peer.id, addr = %peer.addr, %error, failures, "peer dial failed");
                    }
                }
            }
            let jitter = rand::thread_rng().gen_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if refused_as_stranger {
                // A new member is refused until the peer's discovery lists it too: retry
                // soon, so it links within about one discovery interval.
                backoff = backoff.min(BACKOFF_STRANGER);
            }
        }
    }

    /// Opens the link stream to `peer`. The Hello is queued before the call: the acceptor
    /// reads it before it answers, and the answer is what the call waits for.
    async fn dial(
        &self,
        peer: &Peer,
    ) -> Result<(Streaming<pb::Batch>, mpsc::Sender<pb::Batch>), DialError> {
        let channel = Endpoint::from_shared(format!("http://{}", peer.addr))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await?;
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // A fresh channel with room for STREAM_DEPTH batches: the Hello always fits.
        let (out, rx) = mpsc::channel(STREAM_DEPTH);
        let _ = out.try_send(pb::Batch {
            messages: vec![self.hello()],
        });
        let response = tokio::time::timeout(
            self.settings.heartbeat_timeout,
            client.link(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| DialError::NoAnswer)??;
        Ok((response.into_inner(), out))
    }

    /// Runs a new link to `peer` on its own task, replacing any previous one.
    fn attach(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        inbound: Streaming<pb::Batch>,
        out: mpsc::Sender<pb::Batch>,
        send_hello: bool,
        client_addr: Option<SocketAddr>,
    ) -> tokio::task::JoinHandle<()> {
        let generation = peer.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let link = Link {
            generation,
            send_hello,
            client_addr,
        };
        let task = tokio::spawn(self.clone().run_link(peer.clone(), link, inbound, out));
        if let Some(old) = peer.link.lock().replace(task.abort_handle()) {
            old.abort();
        }
        // The peer may have left while this link was being set up.
        if peer.removed.load(Ordering::Acquire) {
            task.abort();
        }
        task
    }

    async fn run_link(
        self: Arc<Self>,
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
        if peer.generation.load(Ordering::Acquire) != generation
            || peer.removed.load(Ordering::Acquire)
        {
            return;
        }
        // Whatever was queued while no link was up is stale: peers out of routing get nothing.
        while queue.try_recv().is_ok() {}
        *peer.client_addr.lock() = None;
        peer.learn_client_addr(client_addr);
        peer.up.store(true, Ordering::Release);
        tracing::info!(peer = %peer.id, addr = %peer.addr, "peer link up");
        self.inbound.link_up(&peer.id);

        let settings = self.settings;
        let writer = async {
            if send_hello
                && out
                    .send(pb::Batch {
                        messages: vec![self.hello()],
                    })
                    .await
                    .is_err()
            {
                return "stream closed";
            }
            let mut seq = 0u64;
            loop {
                let batch = match tokio::time::timeout(settings.heartbeat_interval, queue.recv())
                    .await
                {
                    Ok(Some(first)) => collect_batch(first, &mut queue),
                    Ok(None) => return "mesh closed",
                    Err(_) => {
                        seq += 1;
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
                        if let Some(reason) = self.receive_batch(&peer, generation, batch) {
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
            self.inbound.link_down(&peer.id);
            *peer.client_addr.lock() = None;
            let mut discarded = 0usize;
            while queue.try_recv().is_ok() {
                discarded += 1;
            }
            tracing::warn!(peer = %peer.id, addr = %peer.addr, %reason, discarded, "peer link down; peer out of routing");
            self.peer_gone(&peer.id);
        }
    }
}

/// What a new link task starts with.
struct Link {
    generation: u64,
    send_hello: bool,
    /// The peer's client address, when its Hello came before the link started.
    client_addr: Option<SocketAddr>,
}

/// The client address a peer's Hello advertises. An unspecified IP (a node listening on
/// 0.0.0.0 that was not told its own address) is replaced by the IP its peer link uses.
fn peer_client_address(hello: &pb::Hello, peer_addr: SocketAddr) -> Option<SocketAddr> {
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

/// Whether a message is about rooms (counted apart from broadcasts and operations).
fn is_room_update(message: &pb::Message) -> bool {
    message.kind.as_ref().is_some_and(is_room_update_kind)
}

/// Room announcements, full lists, synced markers, and the pings and pongs that make sure
/// peers have them.
fn is_room_update_kind(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::RoomAnnounce(_) | Kind::Synced(_) | Kind::Ping(_) | Kind::Pong(_)
    )
}

/// `first` plus whatever else is queued, up to the batch limits.
fn collect_batch(first: pb::Message, queue: &mut mpsc::Receiver<pb::Message>) -> pb::Batch {
    use prost::Message as _;
    let mut bytes = first.encoded_len();
    let mut messages = vec![first];
    while messages.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(message) => {
                bytes += message.encoded_len();
                messages.push(message);
            }
            Err(_) => break,
        }
    }
    pb::Batch { messages }
}

/// The gRPC service: accepts the links of the members that dial this node.
struct Acceptor(Arc<Mesh>);

type LinkStream = Pin<Box<dyn Stream<Item = Result<pb::Batch, Status>> + Send>>;

#[tonic::async_trait]
impl PeerService for Acceptor {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<LinkStream>, Status> {
        let mesh = &self.0;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(mesh.settings.heartbeat_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello"))??
            .ok_or_else(|| Status::cancelled("closed before hello"))?;
        let mut messages = first.messages.into_iter();
        let Some(Kind::Hello(hello)) = messages.next().and_then(|m| m.kind) else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        let known = mesh.peers.read().get(&hello.member).cloned();
        let Some(peer) = known.filter(|p| !p.removed.load(Ordering::Acquire)) else {
            // Also the normal case for a moment while a new member joins: it may know this
            // node before this node's discovery lists it (it re-dials with backoff).
            tracing::debug!(member = %hello.member, "link from a node that is not a member (yet) refused");
            return Err(Status::permission_denied("not a member of this cluster"));
        };
        let peer = &peer;
        if mesh.dials(&peer.id) {
            // Both sides would dial each other: the member lists disagree on the ids.
            return Err(Status::failed_precondition(
                "the member whose id sorts first dials",
            ));
        }
        for kind in messages.filter_map(|m| m.kind) {
            mesh.handle(peer, kind);
        }
        let (out, rx) = mpsc::channel(STREAM_DEPTH);
        let client = peer_client_address(&hello, peer.addr);
        mesh.attach(peer, inbound, out, true, client);
        let stream = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it receives.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Kind)>>);

    impl Inbound for Recorder {
        fn receive(&self, from: &str, message: Kind) -> Option<Answer> {
            // Answers requests with the asker's name.
            let reply = match &message {
                Kind::Request(r) => Some(pb::Message::of(Kind::Reply(pb::Reply {
                    id: r.id,
                    json: bytes::Bytes::from(format!("\"answer to {from}\"")),
                }))),
                _ => None,
            };
            self.0.lock().push((from.to_string(), message));
            reply.map(|r| Box::pin(async move { r }) as Answer)
        }
    }

    fn free_port(ip: [u8; 4]) -> SocketAddr {
        let l = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
        l.local_addr().unwrap()
    }

    fn broadcast(n: u64) -> pb::Message {
        pb::Message::of(Kind::Broadcast(pb::Broadcast {
            namespace: "/".into(),
            packet: bytes::Bytes::from(format!("2[\"n\",{n}]")),
            ..Default::default()
        }))
    }

    fn fast() -> LinkSettings {
        LinkSettings {
            heartbeat_interval: Duration::from_millis(50),
            heartbeat_timeout: Duration::from_millis(200),
            queue: 1024,
        }
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    struct Node {
        mesh: Arc<Mesh>,
        got: Arc<Recorder>,
    }

    async fn cluster(n: usize, settings: LinkSettings) -> (Members, Vec<Node>) {
        let mut members = Members::new();
        for i in 0..n {
            members.insert(format!("n{i}"), free_port([127, 0, 0, 1]));
        }
        let mut nodes = Vec::new();
        for i in 0..n {
            let got = Arc::new(Recorder::default());
            let id = format!("n{i}");
            let mesh = Mesh::new(&id, &members, settings, got.clone()).unwrap();
            mesh.start(members.addr(&id).unwrap()).await.unwrap();
            nodes.push(Node { mesh, got });
        }
        (members, nodes)
    }

    fn received(node: &Node) -> Vec<(String, String)> {
        node.got
            .0
            .lock()
            .iter()
            .filter_map(|(from, kind)| match kind {
                Kind::Broadcast(b) => Some((
                    from.clone(),
                    String::from_utf8_lossy(&b.packet).into_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_pair_links_and_broadcasts_arrive_once_in_order() {
        let (_, nodes) = cluster(3, fast()).await;
        for node in &nodes {
            wait_for("links", || node.mesh.connected().len() == 2).await;
        }
        for n in 0..100 {
            nodes[0].mesh.send_all(&broadcast(n), false);
        }
        nodes[2].mesh.send_all(&broadcast(1000), false);
        let expected: Vec<_> = (0..100)
            .map(|n| ("n0".to_string(), format!("2[\"n\",{n}]")))
            .collect();
        wait_for("delivery", || received(&nodes[1]).len() == 101).await;
        let at1 = received(&nodes[1]);
        assert_eq!(
            at1.iter()
                .filter(|(f, _)| f == "n0")
                .cloned()
                .collect::<Vec<_>>(),
            expected
        );
        wait_for("delivery", || received(&nodes[2]).len() == 100).await;
        assert_eq!(received(&nodes[2]), expected);
        wait_for("delivery", || received(&nodes[0]).len() == 1).await;
        // Heartbeats keep quiet links up; nothing is delivered twice.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received(&nodes[2]).len(), 100);
        assert_eq!(nodes[0].mesh.connected(), ["n1", "n2"]);
        let stats = nodes[0].mesh.stats();
        assert_eq!((stats.peers, stats.connected), (2, 2));
        assert_eq!((stats.sent, stats.received, stats.dropped), (200, 1, 0));
        // Requests: every peer in routing answers once.
        let (mut replies, timed_out) = nodes[1]
            .mesh
            .ask_all(
                |id| pb::Message::of(Kind::Request(pb::Request { id, query: None })),
                Duration::from_secs(5),
            )
            .await;
        assert!(!timed_out);
        replies.sort_by(|a, b| a.0.cmp(&b.0));
        let answers: Vec<_> = replies
            .iter()
            .map(|(from, r)| (from.as_str(), String::from_utf8_lossy(&r.json).into_owned()))
            .collect();
        assert_eq!(
            answers,
            [
                ("n0", "\"answer to n1\"".to_string()),
                ("n2", "\"answer to n1\"".to_string())
            ]
        );
        for node in &nodes {
            node.mesh.close();
        }
    }

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
    async fn a_peer_that_never_answers_never_enters_routing() {
        // A "peer" that accepts TCP but never speaks gRPC: the dial times out, so no link.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", silent.local_addr().unwrap());
        let got = Arc::new(Recorder::default());
        let mesh = Mesh::new("a", &members, fast(), got).unwrap();
        mesh.start(members.addr("a").unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(mesh.connected().is_empty());
        mesh.close();
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

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 1]));
        let settings = LinkSettings { queue: 2, ..fast() };
        let mesh = Mesh::new("a", &members, settings, Arc::new(Recorder::default())).unwrap();
        // Pretend the link is up but its writer is stuck: the queue fills, then drops.
        let peer = mesh.peers.read()["b"].clone();
        peer.up.store(true, Ordering::Release);
        for n in 0..5 {
            mesh.send_all(&broadcast(n), n % 2 == 0);
        }
        assert_eq!(mesh.dropped(), 3);
        assert!(peer.overloaded.load(Ordering::Relaxed));
    }

    /// Answers nothing, ever: requests to it wait until it is gone.
    struct Mute;

    impl Inbound for Mute {
        fn receive(&self, _: &str, message: Kind) -> Option<Answer> {
            match message {
                Kind::Request(_) => Some(Box::pin(std::future::pending())),
                _ => None,
            }
        }
    }

    async fn node(id: &str, members: &Members, settings: LinkSettings) -> Node {
        let got = Arc::new(Recorder::default());
        let mesh = Mesh::new(id, members, settings, got.clone()).unwrap();
        mesh.start(members.addr(id).unwrap()).await.unwrap();
        Node { mesh, got }
    }

    /// The member-set bookkeeping, without any I/O (the mesh is never started).
    #[test]
    fn set_members_tracks_joins_leaves_and_moves() {
        let members = Members::parse("a=127.0.0.1:1,b=127.0.0.1:2").unwrap();
        let mesh = Mesh::new("a", &members, fast(), Arc::new(Recorder::default())).unwrap();
        let mut ring = mesh.subscribe();
        assert_eq!(ring.borrow().epoch, 0);
        // This node stays a member when a source leaves it out: nothing changes here.
        let diff = mesh.set_members(&Members::parse("b=127.0.0.1:2").unwrap());
        assert!(diff.is_empty());
        assert!(!ring.has_changed().unwrap());

        let diff =
            mesh.set_members(&Members::parse("a=127.0.0.1:1,b=127.0.0.1:2,c=127.0.0.1:3").unwrap());
        assert_eq!(
            diff.joined,
            [("c".to_string(), "127.0.0.1:3".parse().unwrap())]
        );
        assert!(ring.has_changed().unwrap());
        let m = ring.borrow_and_update().clone();
        assert_eq!(
            (m.epoch, m.ring.members()),
            (1, &["a".to_string(), "b".into(), "c".into()][..])
        );
        assert_eq!(mesh.stats().peers, 2);
        assert_eq!((mesh.stats().members, mesh.stats().epoch), (3, 1));

        let old_c = mesh.peers.read()["c"].clone();
        let old_b = mesh.peers.read()["b"].clone();
        let diff = mesh.set_members(&Members::parse("a=127.0.0.1:1,c=127.0.0.9:3").unwrap());
        assert_eq!(diff.left.len(), 1);
        assert_eq!(diff.moved.len(), 1);
        // The moved peer is a new one at the new address; the old ones are retired.
        let peers = mesh.peers.read().clone();
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(peers["c"].addr, "127.0.0.9:3".parse().unwrap());
        assert!(!Arc::ptr_eq(&peers["c"], &old_c));
        assert!(old_c.removed.load(Ordering::Acquire) && old_b.removed.load(Ordering::Acquire));
        assert_eq!(mesh.membership().epoch, 2);
        assert_eq!(
            mesh.membership().members.addr("a"),
            Some("127.0.0.1:1".parse().unwrap())
        );

        // Drops of departed peers stay counted.
        peers["c"].dropped.store(2, Ordering::Relaxed);
        mesh.set_members(&Members::parse("a=127.0.0.1:1").unwrap());
        assert_eq!(mesh.dropped(), 2);
        assert_eq!(mesh.stats().peers, 0);

        // A closed mesh ignores changes.
        mesh.close();
        assert!(mesh
            .set_members(&Members::parse("a=127.0.0.1:1,d=127.0.0.1:4").unwrap())
            .is_empty());
        assert_eq!(mesh.membership().epoch, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_join_move_and_leave_while_running() {
        let settings = fast();
        let (two, nodes) = cluster(2, settings).await;
        for node in &nodes {
            wait_for("links", || node.mesh.connected().len() == 1).await;
        }
        // n2 joins: it starts knowing everyone, the others learn of it afterwards.
        let mut three = two.clone();
        three.insert("n2", free_port([127, 0, 0, 1]));
        let n2 = node("n2", &three, settings).await;
        let mut ring = nodes[1].mesh.subscribe();
        for node in &nodes {
            node.mesh.set_members(&three);
        }
        assert_eq!(ring.borrow_and_update().ring.len(), 3);
        for node in nodes.iter().chain([&n2]) {
            wait_for("links to the new member", || {
                node.mesh.connected().len() == 2
            })
            .await;
        }
        nodes[0].mesh.send_all(&broadcast(1), false);
        wait_for("delivery to the new member", || received(&n2).len() == 1).await;

        // n2 moves (a new process at a new address): the old one is dropped, the new one linked.
        n2.mesh.close();
        let mut moved = three.clone();
        moved.insert("n2", free_port([127, 0, 0, 1]));
        let n2 = node("n2", &moved, settings).await;
        for node in &nodes {
            let diff = node.mesh.set_members(&moved);
            assert_eq!(diff.moved.len(), 1);
        }
        wait_for("links to the moved member", || {
            n2.mesh.connected().len() == 2
        })
        .await;
        nodes[1].mesh.send_all(&broadcast(2), false);
        wait_for("delivery after the move", || received(&n2).len() == 1).await;

        // n1 leaves: out of routing at once on the others, whatever its process does.
        let mut left = moved.clone();
        left.remove("n1");
        nodes[0].mesh.set_members(&left);
        n2.mesh.set_members(&left);
        assert_eq!(nodes[0].mesh.connected(), ["n2"]);
        assert_eq!(nodes[0].mesh.stats().peers, 1);
        nodes[0].mesh.send_all(&broadcast(3), false);
        wait_for("delivery among the survivors", || received(&n2).len() == 2).await;
        // n1 still lists n0, but n0 no longer dials it nor accepts it.
        tokio::time::sleep(settings.heartbeat_timeout * 2).await;
        assert!(!nodes[1].mesh.connected().contains(&"n0".to_string()));
        assert!(
            !received(&nodes[1]).iter().any(|(_, p)| p == "2[\"n\",3]"),
            "n1 got nothing after it left"
        );
        for node in nodes.iter().chain([&n2]) {
            node.mesh.close();
        }
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
        wait_for("link", || a.mesh.connected() == ["b"]).await;
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            t.elapsed()
        );
        a.mesh.close();
        b.mesh.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_stop_waiting_for_a_peer_that_leaves() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 1]));
        let a = node("a", &members, fast()).await;
        let b = Mesh::new("b", &members, fast(), Arc::new(Mute)).unwrap();
        b.start(members.addr("b").unwrap()).await.unwrap();
        wait_for("link", || a.mesh.connected() == ["b"]).await;
        let asking = tokio::spawn({
            let mesh = a.mesh.clone();
            async move {
                let t = Instant::now();
                let (replies, missing) = mesh
                    .ask_all(
                        |id| pb::Message::of(Kind::Request(pb::Request { id, query: None })),
                        Duration::from_secs(30),
                    )
                    .await;
                (replies.len(), missing, t.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut alone = members.clone();
        alone.remove("b");
        a.mesh.set_members(&alone);
        let (replies, missing, took) = asking.await.unwrap();
        assert_eq!((replies, missing), (0, true));
        assert!(took < Duration::from_secs(5), "waited {took:?}");
        a.mesh.close();
        b.close();
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
    fn a_node_must_be_a_member() {
        let members = Members::parse("a=127.0.0.1:1").unwrap();
        assert!(matches!(
            Mesh::new("b", &members, fast(), Arc::new(Recorder::default())),
            Err(PeerError::NotAMember(_))
        ));
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

    #[test]
    fn batches_respect_their_limits() {
        let (tx, mut rx) = mpsc::channel(2048);
        for n in 0..1000 {
            tx.try_send(broadcast(n)).unwrap();
        }
        let first = collect_batch(broadcast(0), &mut rx);
        assert_eq!(first.messages.len(), BATCH_MESSAGES);
        let big = pb::Message::of(Kind::Broadcast(pb::Broadcast {
            packet: bytes::Bytes::from(vec![b'x'; BATCH_BYTES]),
            ..Default::default()
        }));
        assert_eq!(collect_batch(big, &mut rx).messages.len(), 1);
    }
}
