//! The peer mesh ([`Mesh`]): one long-lived gRPC bidirectional stream per pair of members.
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
//! Leaving ([`Mesh::close_gracefully`], at shutdown): every link sends what is queued for it,
//! ends its side of the stream, and waits for the peer to end its own, which the peer does
//! once it has read everything before that end. So a message queued before a node leaves
//! (a broadcast its management API has already acknowledged, a handed-over session) reaches
//! the peer, instead of dying with the process.
//!
//! Members come and go at run time ([`Mesh::set_members`]): a new member gets a queue (and
//! a dial loop when this node dials it), a departed one loses its link, its queue and its
//! place in pending requests at once, and one whose address changed is replaced as if it
//! had left and joined. Every change is published as a [`Membership`] on a watch channel
//! ([`Mesh::subscribe`]).
//!
//! This file holds the mesh's API and the state that ties the parts together; each part
//! is a module below it that knows nothing of [`Mesh`] (what they need from it is the
//! narrow `link::Host` trait), so the dependencies run one way, from here down:
//! - `peer`: one other member, its queue and link state;
//! - `counters`: what the mesh counts ([`MeshStats`]);
//! - `requests`: request/answer bookkeeping ([`Mesh::ask_all`]);
//! - `link`: a link's life (writer, reader, heartbeats, batches) and [`LinkSettings`];
//! - `dial`: which side dials, dialing with backoff;
//! - `accept`: the gRPC service that accepts links;
//! - `hello`: the Hello in the call's headers, and which advertised address to believe;
//! - `tls`: the TLS material and the identity rule (a member's certificate names its id);
//! - `reload`: keeps the TLS material current as its files change;
//! - `transport`: TLS (or plain TCP) connections and the HTTP/2 limits of the peer port.

mod accept;
mod connlimit;
mod counters;
mod dial;
mod hello;
mod link;
mod peer;
mod reload;
mod requests;
#[cfg(test)]
pub(crate) mod testkit;
mod tls;
mod transport;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use self::accept::Acceptor;
use self::counters::Counters;
use self::dial::{dials, spawn_dialer};
use self::link::Host;
use self::peer::Peer;
use self::requests::Requests;
use super::membership::{Members, MembersDiff, Membership};
use super::proto::peer_server::PeerServer;
use super::proto::{self as pb, message::Kind};

pub use self::counters::MeshStats;
pub use self::link::{LinkSettings, BATCH_BYTES};
pub use self::peer::Offer;
pub use self::reload::{LoadError, PeerTls, Reload, TlsFiles, TlsSettings};
pub use self::tls::{IdentityError, Material, TlsError};
// The app link listener (crate::applink) accepts the way the peer port does.
pub(crate) use self::connlimit::ConnLimit;
pub(crate) use self::transport::{accept, PeerConnInfo, Port, Refusals};

/// Errors of the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("this node ({0:?}) is not in the member list")]
    NotAMember(String),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    app_address: std::sync::OnceLock<SocketAddr>,
    /// TLS on the peer port (unset: plaintext).
    tls: std::sync::OnceLock<Arc<PeerTls>>,
    counters: Counters,
    requests: Requests,
    /// Set when the node leaves: links end after their queue ([`Mesh::close_gracefully`]).
    closing: watch::Sender<bool>,
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
    ) -> Result<Arc<Self>, MeshError> {
        if members.addr(me).is_none() {
            return Err(MeshError::NotAMember(me.to_string()));
        }
        let peers = members
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, addr)| {
                (
                    id.to_string(),
                    Peer::new(id, addr, settings.queue, settings.queue_bytes),
                )
            })
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
            app_address: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            counters: Counters::default(),
            requests: Requests::default(),
            closing: watch::channel(false).0,
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
            for peer in added.iter().filter(|p| dials(&self.me, &p.id)) {
                spawn_dialer(self, peer);
            }
        }
        self.membership.send_replace(Arc::new(Membership::new(
            current.epoch.saturating_add(1),
            next,
        )));
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
            let peer = Peer::new(id, addr, self.settings.queue, self.settings.queue_bytes);
            peers.insert(id.clone(), peer.clone());
            added.push(peer);
        }
        (added, removed)
    }

    /// Takes a peer out for good: stops its dialer and link, and tells waiting requests.
    fn retire(&self, peer: &Peer) {
        peer.stop();
        self.counters
            .dropped_by_departed
            .fetch_add(peer.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        self.requests.gone(&peer.id);
    }

    /// Binds the peer listener on `listen`, serves it, and dials every peer this node is
    /// the dialer for. Returns the bound address.
    pub async fn start(self: &Arc<Self>, listen: SocketAddr) -> Result<SocketAddr, MeshError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| MeshError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MeshError::Listen {
            addr: listen,
            source,
        })?;
        // Backs off when accepting fails (out of file descriptors) instead of spinning.
        let tcp = crate::cluster::listen::incoming(listener, "peer");
        let tls = self.tls.get().cloned();
        let limit = connlimit::ConnLimit::new(
            self.settings.max_connections,
            self.settings.max_connections_per_ip,
        );
        let refused = transport::Refusals {
            handshakes_failed: self.counters.handshakes_failed.clone(),
            over_limit: self.counters.connections_refused.clone(),
        };
        let incoming = transport::accept(tcp, tls.clone(), limit, refused, &transport::PEER_PORT);
        let max = self.settings.max_message_bytes;
        let service = PeerServer::new(Acceptor(self.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let server = tokio::spawn(async move {
            if let Err(error) = tonic::transport::Server::builder()
                .max_concurrent_streams(transport::MAX_STREAMS_PER_CONNECTION)
                .initial_stream_window_size(transport::WINDOW_BYTES)
                .initial_connection_window_size(transport::WINDOW_BYTES)
                .http2_max_header_list_size(transport::MAX_HEADER_LIST_BYTES)
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(%error, "peer listener failed");
            }
        });
        let mut control = self.control.lock();
        control.tasks.push(server.abort_handle());
        if let Some(tls) = tls {
            control.tasks.push(tokio::spawn(tls.run()).abort_handle());
        }
        if control.closed {
            server.abort();
            return Ok(addr);
        }
        control.started = true;
        let peers: Vec<_> = self.peers.read().values().cloned().collect();
        for peer in peers.iter().filter(|p| dials(&self.me, &p.id)) {
            spawn_dialer(self, peer);
        }
        Ok(addr)
    }

    /// Ends every link after what is queued for it, then closes (as [`Mesh::close`]). Each
    /// link sends its queue, ends its side of the stream and waits for the peer to end its
    /// own (the peer has then read it all); no link is opened or re-dialed meanwhile. Links
    /// still running after `within` (a peer that stopped reading) are cut. What is queued
    /// after this begins may not be sent.
    pub async fn close_gracefully(&self, within: Duration) {
        self.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let running = self.peers.read().values().any(|p| p.link_running());
            if !running || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.close();
    }

    /// Closes every link (cutting it: what is queued is lost) and stops listening and dialing.
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

    /// Runs the peer port with mutual TLS (before [`Mesh::start`]; later calls are
    /// ignored). Without it the port is plaintext.
    pub fn secure(&self, tls: Arc<PeerTls>) {
        let _ = self.tls.set(tls);
    }

    /// The peer port's TLS material (reloaded as its files change), when it runs TLS.
    pub fn peer_tls(&self) -> Option<Arc<PeerTls>> {
        self.tls.get().cloned()
    }

    /// Sets the client address this node advertises to its peers (before [`Mesh::start`];
    /// later calls are ignored).
    pub fn advertise_client_address(&self, addr: SocketAddr) {
        let _ = self.client_address.set(addr);
    }

    /// Sets the app link address this node advertises to its peers (before [`Mesh::start`];
    /// later calls are ignored).
    pub fn advertise_app_address(&self, addr: SocketAddr) {
        let _ = self.app_address.set(addr);
    }

    /// Where member `id` takes app links, if its link is up and it told us.
    pub fn app_address_of(&self, id: &str) -> Option<SocketAddr> {
        let peer = self.peers.read().get(id).cloned()?;
        if !peer.is_up() {
            return None;
        }
        let addr = *peer.app_addr.lock();
        addr
    }

    /// Where member `id` serves clients, if its link is up and it told us.
    pub fn client_address_of(&self, id: &str) -> Option<SocketAddr> {
        let peer = self.peers.read().get(id).cloned()?;
        peer.client_addr()
    }

    /// Peers whose link is up (in routing).
    pub fn connected(&self) -> Vec<String> {
        self.peers
            .read()
            .values()
            .filter(|p| p.is_up())
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
        current.saturating_add(self.counters.dropped_by_departed.load(Ordering::Relaxed))
    }

    pub fn stats(&self) -> MeshStats {
        let membership = self.membership();
        let peers = self.peers.read();
        let c = &self.counters;
        MeshStats {
            members: membership.members.len(),
            epoch: membership.epoch,
            peers: peers.len(),
            connected: peers.values().filter(|p| p.is_up()).count(),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            room_updates_sent: c.room_updates_sent.load(Ordering::Relaxed),
            room_updates_received: c.room_updates_received.load(Ordering::Relaxed),
            dropped: self.dropped(),
            handshakes_failed: c.handshakes_failed.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            links_refused: c.links_refused.load(Ordering::Relaxed),
            tls_reloads: self.tls.get().map(|t| t.reloads.load(Ordering::Relaxed)),
            tls_reloads_failed: self
                .tls
                .get()
                .map(|t| t.reloads_failed.load(Ordering::Relaxed)),
        }
    }

    /// Queues `message` for every peer in routing. Never waits: a peer whose queue is full
    /// does not get it (its link cannot keep up; the drop is counted and logged).
    pub fn send_all(&self, message: &pb::Message, volatile: bool) {
        for peer in self.peers.read().values() {
            self.enqueue(peer, message.clone(), volatile);
        }
    }

    /// Queues `message` for every peer in routing, like [`Mesh::send_all`]; returns the
    /// peers whose queue was full (they did not get it; the drop is counted and logged).
    pub fn send_all_checked(&self, message: &pb::Message, volatile: bool) -> Vec<String> {
        self.peers
            .read()
            .values()
            .filter(|peer| self.offer(peer, message.clone(), volatile) == Offer::Full)
            .map(|peer| peer.id.clone())
            .collect()
    }

    /// Queues `message` for the peer `id`, saying what became of it.
    pub fn offer_to(&self, id: &str, message: pb::Message, volatile: bool) -> Offer {
        let peer = self.peers.read().get(id).cloned();
        match peer {
            Some(peer) => self.offer(&peer, message, volatile),
            None => Offer::Down,
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
        self.offer(peer, message, volatile) == Offer::Queued
    }

    /// Offers `message` to one peer, saying what became of it.
    fn offer(&self, peer: &Peer, message: pb::Message, volatile: bool) -> Offer {
        let counter = self.counters.sent_for(&message);
        let offer = peer.offer(message, volatile);
        if offer == Offer::Queued {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        offer
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
        let request = self.requests.open();
        let message = make(request.id());
        // Waiting is registered before anything is sent, so a link that breaks after its
        // request was queued is always heard of.
        let waiting: HashSet<String> = self
            .peers
            .read()
            .values()
            .filter(|peer| self.enqueue(peer, message.clone(), false))
            .map(|peer| peer.id.clone())
            .collect();
        request.gather(waiting, timeout).await
    }

    /// Sends the request `make(id)` to the peer `to` and waits for its reply, at most
    /// `timeout`; `None` when it is not in routing, its link broke, or it did not answer.
    pub async fn ask(
        &self,
        to: &str,
        make: impl FnOnce(u64) -> pb::Message,
        timeout: Duration,
    ) -> Option<pb::Reply> {
        let request = self.requests.open();
        let message = make(request.id());
        let peer = self.peers.read().get(to).cloned()?;
        if !self.enqueue(&peer, message, false) {
            return None;
        }
        let (mut replies, _) = request
            .gather(HashSet::from([to.to_string()]), timeout)
            .await;
        replies.pop().map(|(_, reply)| reply)
    }

    /// How long requests wait for peers: a live peer answers at once, and one that does not
    /// answer within this is about to leave routing anyway.
    pub fn request_timeout(&self) -> Duration {
        self.settings.heartbeat_timeout
    }
}

impl Host for Mesh {
    fn me(&self) -> &str {
        &self.me
    }

    fn settings(&self) -> LinkSettings {
        self.settings
    }

    fn hello(&self) -> pb::Hello {
        pb::Hello {
            member: self.me.clone(),
            client_address: self
                .client_address
                .get()
                .map(ToString::to_string)
                .unwrap_or_default(),
            app_address: self
                .app_address
                .get()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }

    fn tls(&self) -> Option<Arc<PeerTls>> {
        self.tls.get().cloned()
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn link_refused(&self) {
        self.counters.links_refused.fetch_add(1, Ordering::Relaxed);
    }

    fn peer(&self, id: &str) -> Option<Arc<Peer>> {
        let known = self.peers.read().get(id).cloned();
        known.filter(|p| !p.is_removed())
    }

    fn handle(self: &Arc<Self>, peer: &Arc<Peer>, kind: Kind) {
        self.counters.count_received(&kind);
        match kind {
            Kind::Reply(reply) => self.requests.reply(&peer.id, reply),
            // A pong answers a ping as a reply would; it carries nothing.
            Kind::Pong(pong) => self.requests.reply(
                &peer.id,
                pb::Reply {
                    id: pong.id,
                    ..Default::default()
                },
            ),
            Kind::Ping(ping) => {
                let pong = pb::Message::of(Kind::Pong(pb::Pong { id: ping.id }));
                self.enqueue(peer, pong, false);
            }
            kind => {
                if let Some(answer) = self.inbound.receive(&peer.id, kind) {
                    let (mesh, peer) = (self.clone(), peer.clone());
                    tokio::spawn(async move {
                        let reply = answer.await;
                        mesh.enqueue(&peer, reply, false);
                    });
                }
            }
        }
    }

    fn link_up(&self, peer: &Peer) {
        self.inbound.link_up(&peer.id);
    }

    fn link_down(&self, peer: &Peer) {
        self.inbound.link_down(&peer.id);
    }

    fn peer_gone(&self, peer: &Peer) {
        self.requests.gone(&peer.id);
    }
}

#[cfg(test)]
mod tests {

    use super::testkit::{broadcast, cluster, fast, free_port, node, received, wait_for, Recorder};
    use super::*;

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

    /// A node that leaves right after queueing (an emit its management API acknowledged just
    /// before shutdown) still gets every message to every peer, on links it dialed and on
    /// links it accepted; and it neither re-dials nor accepts while leaving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaving_node_sends_what_it_queued_first() {
        // n1 accepts n0's link and dials n2's.
        let (_, nodes) = cluster(3, fast()).await;
        for node in &nodes {
            wait_for("links", || node.mesh.connected().len() == 2).await;
        }
        let n = 1000u64; // within fast()'s queue of 1024
        for i in 0..n {
            nodes[1].mesh.send_all(&broadcast(i), false);
        }
        nodes[1].mesh.close_gracefully(Duration::from_secs(5)).await;
        let expected: Vec<_> = (0..n)
            .map(|i| ("n1".to_string(), format!("2[\"n\",{i}]")))
            .collect();
        for at in [&nodes[0], &nodes[2]] {
            assert_eq!(received(at), expected, "every message, once, in order");
        }
        // The others saw the link end and do not get it back: n1 does not re-dial n2 and
        // refuses n0's dials (which back off).
        wait_for("links down", || {
            nodes[0].mesh.connected() == ["n2"] && nodes[2].mesh.connected() == ["n0"]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(nodes[0].mesh.connected(), ["n2"]);
        assert!(nodes[1].mesh.connected().is_empty());
        for node in &nodes {
            node.mesh.close();
        }
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

    #[test]
    fn a_node_must_be_a_member() {
        let members = Members::parse("a=127.0.0.1:1").unwrap();
        assert!(matches!(
            Mesh::new("b", &members, fast(), Arc::new(Recorder::default())),
            Err(MeshError::NotAMember(_))
        ));
    }
}
