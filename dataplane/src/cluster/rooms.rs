//! Keeping every peer's view of this node's rooms current, and this node's view of theirs
//! ([`Interest`]), so room broadcasts go only to the nodes with members.
//!
//! One task sends everything this node says about its rooms, in the order it happened:
//! transitions (first member joined, last one left), a full list plus `Synced` on each new
//! link, and the settling of peers' socketsJoin operations. Each transition carries the
//! room's state at that moment, so replaying an older one after a full list that already
//! had it is harmless: the last message about a room always tells its current state.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::interest::Interest;
use super::mesh::Mesh;
use super::proto::{self as pb, message::Kind};
use crate::socketio::Hub;

/// Rooms per message of a full list.
const LIST_CHUNK: usize = 512;
/// Events folded into one round of announcements.
const EVENT_BATCH: usize = 4096;

/// Something the announcing task must tell peers.
#[derive(Debug)]
enum Event {
    Room {
        nsp: Arc<str>,
        room: String,
        present: bool,
    },
    LinkUp(String),
    /// Tell `peer` that its socketsJoin `op` was applied, once every peer has heard of the
    /// rooms it changed here.
    Settle {
        peer: String,
        op: u64,
    },
    /// Wake the sender once every peer has heard of the changes so far.
    Barrier(oneshot::Sender<()>),
}

/// A socketsJoin this node sent, waiting for the peers to settle it.
struct JoinWait {
    peers: HashSet<String>,
    done: Option<oneshot::Sender<()>>,
}

/// This node's rooms as peers must know them, and theirs as this node knows them.
pub struct RoomSync {
    interest: Mutex<Interest>,
    events: mpsc::UnboundedSender<Event>,
    next_op: AtomicU64,
    joins: Mutex<HashMap<u64, JoinWait>>,
}

impl RoomSync {
    /// The shared state, and the queue its task (see [`RoomSync::run`]) consumes.
    pub fn new() -> (Arc<Self>, RoomEvents) {
        let (events, rx) = mpsc::unbounded_channel();
        let sync = Arc::new(Self {
            interest: Mutex::new(Interest::new()),
            events,
            next_op: AtomicU64::new(1),
            joins: Mutex::new(HashMap::new()),
        });
        (sync, RoomEvents(rx))
    }

    /// Queues the announcement of a room transition of this node.
    pub fn room_changed(&self, nsp: &str, room: &str, present: bool) {
        let _ = self.events.send(Event::Room {
            nsp: Arc::from(nsp),
            room: room.to_string(),
            present,
        });
    }

    /// A new link to `peer`: it must (re)learn this node's rooms, and this node its rooms.
    pub fn link_up(&self, peer: &str) {
        self.interest.lock().link_up(peer);
        let _ = self.events.send(Event::LinkUp(peer.to_string()));
    }

    pub fn link_down(&self, peer: &str) {
        self.interest.lock().link_down(peer);
        // It will not settle anything any more.
        let mut joins = self.joins.lock();
        for op in joins.keys().copied().collect::<Vec<_>>() {
            Self::settled(&mut joins, op, peer);
        }
    }

    /// `peer` settled socketsJoin `op`: wake the waiter once all did.
    fn settled(joins: &mut HashMap<u64, JoinWait>, op: u64, peer: &str) {
        if let Some(wait) = joins.get_mut(&op) {
            wait.peers.remove(peer);
            if wait.peers.is_empty() {
                if let Some(done) = joins.remove(&op).and_then(|w| w.done) {
                    let _ = done.send(());
                }
            }
        }
    }

    /// A peer's announcement.
    pub fn announced(&self, peer: &str, a: &pb::RoomAnnounce) {
        let mut interest = self.interest.lock();
        if !a.joined.is_empty() || !a.left.is_empty() {
            interest.announce(peer, &a.namespace, &a.joined, &a.left);
        }
        if a.settles != 0 {
            interest.join_settled(peer, a.settles);
            drop(interest);
            Self::settled(&mut self.joins.lock(), a.settles, peer);
        }
    }

    /// Resolves once every linked peer has handled the room changes this node made before
    /// the call (one round trip; at most the request timeout for a peer that does not answer).
    pub fn propagated(&self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.events.send(Event::Barrier(tx));
        async move {
            let _ = rx.await;
        }
    }

    pub fn synced(&self, peer: &str) {
        self.interest.lock().synced(peer);
    }

    /// This node applied `peer`'s socketsJoin `op`; tell it once the rooms it changed have
    /// been announced.
    pub fn settle(&self, peer: &str, op: u64) {
        let _ = self.events.send(Event::Settle {
            peer: peer.to_string(),
            op,
        });
    }

    /// Registers a socketsJoin about to be sent to `peers`: until each settles it, they count
    /// as members of `rooms`. Returns its id, and a future that resolves once all settled.
    pub fn join_sent(
        &self,
        peers: &[String],
        nsp: &str,
        rooms: &[String],
    ) -> (u64, impl Future<Output = ()> + Send + 'static) {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let mut interest = self.interest.lock();
        for peer in peers {
            interest.join_sent(peer, op, nsp, rooms);
        }
        drop(interest);
        let (tx, rx) = oneshot::channel();
        if peers.is_empty() {
            let _ = tx.send(());
        } else {
            self.joins.lock().insert(
                op,
                JoinWait {
                    peers: peers.iter().cloned().collect(),
                    done: Some(tx),
                },
            );
        }
        let joins_done = async move {
            let _ = rx.await;
        };
        (op, joins_done)
    }

    /// Forgets a socketsJoin whose wait ended (timed out).
    pub fn join_abandoned(&self, op: u64) {
        self.joins.lock().remove(&op);
    }

    /// The peers (of those linked) a broadcast to `rooms` of `nsp` must reach.
    pub fn targets(&self, nsp: &str, rooms: &[String], linked: &[String]) -> Vec<String> {
        self.interest
            .lock()
            .targets(nsp, rooms, linked.iter().map(String::as_str))
            .into_iter()
            .collect()
    }

    /// Whether every linked peer has sent all its rooms (for stats and tests).
    pub fn all_synced(&self, linked: &[String]) -> bool {
        let interest = self.interest.lock();
        linked.iter().all(|p| interest.is_synced(p))
    }
}

/// The receiving end of a [`RoomSync`]'s events.
pub struct RoomEvents(mpsc::UnboundedReceiver<Event>);

/// Sends this node's room events to its peers until the mesh closes.
pub async fn run(mut events: RoomEvents, mesh: Arc<Mesh>, hub: Hub) {
    let mut batch = Vec::with_capacity(64);
    loop {
        if events.0.recv_many(&mut batch, EVENT_BATCH).await == 0 {
            return;
        }
        // Transitions in a row go out together; a link-up in between is sent in its place,
        // after the transitions before it. Barriers and settles of one batch share one
        // round of pings, sent after everything else of the batch.
        let mut pending: HashMap<Arc<str>, HashMap<String, bool>> = HashMap::new();
        let mut waiters = Vec::new();
        let mut settles = Vec::new();
        for event in batch.drain(..) {
            match event {
                Event::Room { nsp, room, present } => {
                    pending.entry(nsp).or_default().insert(room, present);
                }
                Event::LinkUp(peer) => {
                    flush(&mesh, &mut pending);
                    send_all_rooms(&mesh, &hub, &peer);
                }
                Event::Settle { peer, op } => settles.push((peer, op)),
                Event::Barrier(waiter) => waiters.push(waiter),
            }
        }
        flush(&mesh, &mut pending);
        if !waiters.is_empty() || !settles.is_empty() {
            tokio::spawn(barrier(mesh.clone(), waiters, settles));
        }
    }
}

/// Pings every peer; once they answered (or the request timeout passed), wakes the waiters
/// and settles peers' socketsJoin operations.
async fn barrier(mesh: Arc<Mesh>, waiters: Vec<oneshot::Sender<()>>, settles: Vec<(String, u64)>) {
    let ping = |id| pb::Message::of(Kind::Ping(pb::Ping { id }));
    let (_, missing) = mesh.ask_all(ping, mesh.request_timeout()).await;
    if missing {
        tracing::debug!("a peer did not answer a room barrier in time");
    }
    for (peer, op) in settles {
        let settled = pb::Message::of(Kind::RoomAnnounce(pb::RoomAnnounce {
            settles: op,
            ..Default::default()
        }));
        mesh.send_to(&peer, settled, false);
    }
    for waiter in waiters {
        let _ = waiter.send(());
    }
}

/// Announces the collected transitions to every peer.
fn flush(mesh: &Mesh, pending: &mut HashMap<Arc<str>, HashMap<String, bool>>) {
    for (nsp, rooms) in pending.drain() {
        let mut announce = pb::RoomAnnounce {
            namespace: nsp.to_string(),
            ..Default::default()
        };
        for (room, present) in rooms {
            if present {
                announce.joined.push(room);
            } else {
                announce.left.push(room);
            }
        }
        mesh.send_all(&pb::Message::of(Kind::RoomAnnounce(announce)), false);
    }
}

/// Every room of this node, then `Synced`, to a newly linked peer.
fn send_all_rooms(mesh: &Mesh, hub: &Hub, peer: &str) {
    let mut rooms = 0usize;
    for ns in hub.namespaces() {
        let names = ns.room_names();
        rooms += names.len();
        for chunk in names.chunks(LIST_CHUNK) {
            let announce = pb::RoomAnnounce {
                namespace: ns.name().to_string(),
                joined: chunk.to_vec(),
                ..Default::default()
            };
            if !mesh.send_to(peer, pb::Message::of(Kind::RoomAnnounce(announce)), false) {
                // Its link is gone or full: it stays unsynced (so it gets every broadcast)
                // until the next link.
                tracing::warn!(peer, "could not send this node's rooms to a new peer");
                return;
            }
        }
    }
    mesh.send_to(
        peer,
        pb::Message::of(Kind::Synced(pb::Synced { ring: 0 })),
        false,
    );
    tracing::debug!(peer, rooms, "sent this node's rooms to a new peer");
}
