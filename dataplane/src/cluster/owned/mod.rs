//! Room ownership on the mesh (`cluster.rooms: owned`): the I/O around the state machines
//! of [`ownership`](super::ownership) — the directory of the rooms this node owns, the cache
//! of other owners' answers, and what this node tells owners about its own rooms.
//!
//! Everything that changes that state and everything it makes this node send happen under
//! one lock, so what goes out on each ordered link is in the order the state changed: a push
//! is queued before the ping of a flush that covers it, an unsubscribe never overtakes the
//! lookup that follows it. The lock is never held while reading the hub's rooms (the hub
//! calls into this module under its own locks): [`super::rooms`]'s task reads them first.
//!
//! Socket-id rooms are not owned: an emit to a socket goes to the node its id names, and a
//! socket recovered onto another node is announced to every peer, as in the replicated view.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures_util::future::{join_all, BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use super::mesh::{Answer as Reply, Mesh, Offer};
use super::ownership::agreement::{Agreement, Barrier, Say};
use super::ownership::cache::{CacheStats, RoomCache};
use super::ownership::directory::{Answer, Directory, Notice};
use super::ownership::{Interner, NodeId, RoomKey};
use super::proto::{self as pb, message::Kind, ownership::Kind as Own};
use super::ring::Ring;

/// Rooms per message of a full list.
const LIST_CHUNK: usize = 512;

/// A list this node must send a peer (its rooms that peer owns), for the task that can read
/// the hub's rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDue {
    pub to: String,
    pub ring_id: u64,
}

/// Counters of ownership, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OwnedStats {
    pub cache: CacheStats,
    pub cached_rooms: usize,
    /// Rooms in this node's directory (owned, or reported ahead of a ring change), and
    /// subscriptions peers hold on them.
    pub directory_rooms: usize,
    pub subscriptions: usize,
    /// Transitions this node sent to owners (or applied to its own directory).
    pub transitions: u64,
    /// Changes pushed to subscribers as an owner.
    pub pushes: u64,
    /// Join barriers whose owner could not confirm them (every peer was hinted instead).
    pub fallbacks: u64,
}

struct State {
    dir: Directory,
    cache: RoomCache,
    agree: Agreement,
    ids: Interner,
    linked: BTreeSet<String>,
    /// Joins told to owners since the last barrier, by owner (this node: its own directory).
    /// Leaves need no barrier: a node left out of a room only gets a copy too many.
    touched: BTreeMap<String, Vec<RoomKey>>,
    /// Completes once the last flush this node started as an owner has: flushes complete
    /// in the order they were asked (a later one may find nothing dirty that an earlier
    /// one is still confirming).
    last_flush: Shared<BoxFuture<'static, ()>>,
    /// Completes once the last join barrier has: barriers complete in order too.
    last_barrier: Shared<BoxFuture<'static, ()>>,
    /// Peers that must be told to forget this node's answers (a push to them was dropped).
    resets: BTreeSet<String>,
    /// Owners whose list must be sent again (a transition or list part to them was dropped).
    relists: BTreeSet<String>,
}

/// Room ownership for one node.
pub struct Owned {
    me: String,
    mesh: OnceLock<Weak<Mesh>>,
    state: Mutex<State>,
    transitions: AtomicU64,
    pushes: AtomicU64,
    fallbacks: AtomicU64,
    /// Woken when a drop leaves a reset or a list due (see [`Owned::retry`]).
    due: Notify,
}

fn done() -> Shared<BoxFuture<'static, ()>> {
    futures_util::future::ready(()).boxed().shared()
}

fn own(kind: Own) -> pb::Message {
    pb::Message::of(Kind::Ownership(pb::Ownership { kind: Some(kind) }))
}

fn room_ref(key: &RoomKey) -> pb::RoomRef {
    pb::RoomRef {
        namespace: key.nsp.to_string(),
        room: key.room.to_string(),
    }
}

fn key_of(r: &pb::RoomRef) -> RoomKey {
    RoomKey::new(&r.namespace, &r.room)
}

impl Owned {
    /// Ownership for member `me` under `ring`; `cache_size` rooms cached at most, and at
    /// most `max_subscriptions` subscriptions per peer at this node's directory.
    pub fn new(me: &str, ring: Ring, cache_size: usize, max_subscriptions: usize) -> Self {
        let mut dir = Directory::new(me, ring.clone());
        dir.limit_subscriptions(max_subscriptions);
        Self {
            me: me.to_string(),
            mesh: OnceLock::new(),
            state: Mutex::new(State {
                dir,
                cache: RoomCache::new(me, cache_size),
                agree: Agreement::new(me, ring),
                ids: Interner::default(),
                linked: BTreeSet::new(),
                touched: BTreeMap::new(),
                last_flush: done(),
                last_barrier: done(),
                resets: BTreeSet::new(),
                relists: BTreeSet::new(),
            }),
            transitions: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            due: Notify::new(),
        }
    }

    /// The mesh this node sends on (set once, before any link is up).
    pub fn attach(&self, mesh: &Arc<Mesh>) {
        let _ = self.mesh.set(Arc::downgrade(mesh));
    }

    fn mesh(&self) -> Option<Arc<Mesh>> {
        self.mesh.get().and_then(Weak::upgrade)
    }

    pub fn stats(&self) -> OwnedStats {
        let s = self.state.lock();
        let (directory_rooms, subscriptions) = s.dir.len();
        OwnedStats {
            cache: s.cache.stats(),
            cached_rooms: s.cache.len(),
            directory_rooms,
            subscriptions,
            transitions: self.transitions.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// A link to `peer` is up: it learns this node's ring first.
    pub fn link_up(&self, peer: &str) {
        let Some(mesh) = self.mesh() else { return };
        let mut s = self.state.lock();
        s.linked.insert(peer.to_string());
        s.cache.link_up(peer);
        s.agree.link_up(peer);
        let notices = s.dir.link_up(peer);
        let ring = s.agree.ring_id();
        mesh.offer_to(peer, own(Own::Ring(ring)), false);
        self.notify(&mesh, &mut s, notices);
    }

    pub fn link_down(&self, peer: &str) {
        let Some(mesh) = self.mesh() else { return };
        let mut s = self.state.lock();
        s.linked.remove(peer);
        s.cache.link_down(peer);
        s.agree.link_down(peer);
        s.resets.remove(peer);
        s.relists.remove(peer);
        let notices = s.dir.link_down(peer);
        self.notify(&mesh, &mut s, notices);
    }

    /// Sends an owner's notices; a subscriber that drops one is reset (see [`Own::Reset`]).
    fn notify(&self, mesh: &Mesh, s: &mut State, notices: Vec<Notice>) {
        for notice in notices {
            let (to, message) = match notice {
                Notice::Update {
                    to,
                    key,
                    node,
                    present,
                } => (
                    to,
                    Own::Update(pb::MemberUpdate {
                        room: Some(room_ref(&key)),
                        node: node.to_string(),
                        present,
                    }),
                ),
                Notice::Synced { to, nodes } => (
                    to,
                    Own::Synced(pb::NodeList {
                        nodes: nodes.iter().map(|n| n.to_string()).collect(),
                    }),
                ),
                Notice::Invalidate { to, key } => (to, Own::Invalidate(room_ref(&key))),
            };
            if s.resets.contains(&*to) {
                continue; // it forgets everything of ours anyway
            }
            match mesh.offer_to(&to, own(message), false) {
                Offer::Queued => {
                    self.pushes.fetch_add(1, Ordering::Relaxed);
                }
                Offer::Full => {
                    tracing::warn!(peer = %to, "a room update to this peer was dropped; it will forget this node's answers");
                    s.dir.forget_subscriber(&to);
                    s.resets.insert(to.to_string());
                    self.due.notify_one();
                }
                Offer::Down => {}
            }
        }
    }

    /// Sends a message to an owner about this node's rooms; an owner that drops one gets
    /// the whole list again later.
    fn to_owner(&self, mesh: &Mesh, s: &mut State, owner: &str, message: Own) -> bool {
        match mesh.offer_to(owner, own(message), false) {
            Offer::Queued => true,
            Offer::Full => {
                tracing::warn!(
                    peer = owner,
                    "a room transition to this owner was dropped; resending it this node's rooms"
                );
                s.relists.insert(owner.to_string());
                self.due.notify_one();
                false
            }
            Offer::Down => false,
        }
    }

    /// This node's first member joined `room` of `nsp`, or its last one left: tell its owner.
    pub fn transition(&self, nsp: &str, room: &str, present: bool) {
        let Some(mesh) = self.mesh() else { return };
        let key = RoomKey::new(nsp, room);
        let mut s = self.state.lock();
        self.transitions.fetch_add(1, Ordering::Relaxed);
        match s.agree.owner_of(&key).map(str::to_string) {
            None => {
                let notices = s.dir.local(&key, present);
                self.notify(&mesh, &mut s, notices);
                if present {
                    s.touched.entry(self.me.clone()).or_default().push(key);
                }
            }
            Some(owner) => {
                let (joined, left) = if present {
                    (vec![room.to_string()], Vec::new())
                } else {
                    (Vec::new(), vec![room.to_string()])
                };
                let change = Own::Transition(pb::RoomChanges {
                    namespace: nsp.to_string(),
                    joined,
                    left,
                });
                // An owner not linked learns the room from the list sent when it links.
                self.to_owner(&mesh, &mut s, &owner, change);
                if present {
                    s.touched.entry(owner).or_default().push(key);
                }
            }
        }
    }

    /// Sends `to` this node's rooms it owns, if both still hold ring `ring_id`. `rooms` is
    /// every room of this node, by namespace.
    pub fn send_list(&self, due: &ListDue, rooms: &[(String, Vec<String>)]) {
        let Some(mesh) = self.mesh() else { return };
        let mut s = self.state.lock();
        if s.agree.ring_id() != due.ring_id || !s.linked.contains(&due.to) {
            return; // a newer ring sends its own list
        }
        self.list(&mesh, &mut s, &due.to, rooms);
    }

    fn list(&self, mesh: &Mesh, s: &mut State, to: &str, rooms: &[(String, Vec<String>)]) {
        let ring_id = s.agree.ring_id();
        let ring = s.agree.ring().clone();
        s.relists.remove(to);
        if !self.to_owner(mesh, s, to, Own::ListStart(pb::ListStart {})) {
            return;
        }
        let mut listed = 0usize;
        for (nsp, names) in rooms {
            let mine: Vec<String> = names
                .iter()
                .filter(|r| ring.owner(nsp, r) == Some(to))
                .cloned()
                .collect();
            for chunk in mine.chunks(LIST_CHUNK) {
                listed += chunk.len();
                let part = Own::List(pb::RoomChanges {
                    namespace: nsp.clone(),
                    joined: chunk.to_vec(),
                    left: Vec::new(),
                });
                if !self.to_owner(mesh, s, to, part) {
                    return;
                }
            }
        }
        if self.to_owner(mesh, s, to, Own::ListDone(ring_id)) {
            tracing::debug!(
                peer = to,
                rooms = listed,
                ring_id,
                "sent an owner its rooms"
            );
        }
    }

    /// This node's member set changed. `rooms` is every room of this node, by namespace:
    /// the ones it owns now go into its own directory, and peers that hold the same ring get
    /// their lists.
    pub fn ring_changed(&self, ring: Ring, rooms: &[(String, Vec<String>)]) {
        let Some(mesh) = self.mesh() else { return };
        let mut s = self.state.lock();
        if s.agree.ring_id() == ring.id() {
            return;
        }
        tracing::info!(
            members = ring.len(),
            ring_id = ring.id(),
            "room owners follow the new member set"
        );
        let said = s.agree.ring_changed(ring.clone());
        let notices = s.dir.ring_changed(ring.clone());
        self.notify(&mesh, &mut s, notices);
        let moved = s.cache.ring_changed(&ring);
        Self::unsubscribe(&mesh, moved);
        // This node's rooms: the ones it owns now go into its directory; its membership of
        // the others is their new owners' to keep.
        let mut notices = Vec::new();
        for (nsp, names) in rooms {
            for room in names {
                let mine = ring.owner(nsp, room) == Some(self.me.as_str());
                notices.extend(s.dir.local(&RoomKey::new(nsp, room), mine));
            }
        }
        self.notify(&mesh, &mut s, notices);
        for say in said {
            match say {
                Say::RingChanged { ring_id } => {
                    for peer in s.linked.clone() {
                        mesh.offer_to(&peer, own(Own::Ring(ring_id)), false);
                    }
                }
                Say::List { to, .. } => self.list(&mesh, &mut s, &to, rooms),
            }
        }
    }

    fn unsubscribe(mesh: &Mesh, rooms: Vec<(RoomKey, NodeId)>) {
        let mut by_owner: BTreeMap<NodeId, Vec<pb::RoomRef>> = BTreeMap::new();
        for (key, owner) in rooms {
            by_owner.entry(owner).or_default().push(room_ref(&key));
        }
        for (owner, rooms) in by_owner {
            mesh.offer_to(&owner, own(Own::Unsubscribe(pb::RoomRefs { rooms })), false);
        }
    }

    /// The peers (of `linked`) a broadcast to `rooms` of `nsp` must reach; looks cold
    /// rooms up at their owners.
    pub fn targets(&self, nsp: &str, rooms: &[String], linked: &[String]) -> BTreeSet<String> {
        let keys: Vec<RoomKey> = rooms.iter().map(|r| RoomKey::new(nsp, r)).collect();
        let mesh = self.mesh();
        let mut s = self.state.lock();
        let ring = s.agree.ring().clone();
        let State { cache, dir, .. } = &mut *s;
        let t = cache.targets(dir, &ring, &keys);
        if let Some(mesh) = &mesh {
            for (key, owner) in t.lookups {
                let lookup = own(Own::Lookup(room_ref(&key)));
                if mesh.offer_to(&owner, lookup, false) != Offer::Queued {
                    s.cache.lookup_failed(&key);
                }
            }
        }
        if t.all {
            return linked.iter().cloned().collect();
        }
        linked
            .iter()
            .filter(|p| t.nodes.contains(p.as_str()))
            .cloned()
            .collect()
    }

    /// A peer's ownership message. Returns the lists this node now owes peers (both hold
    /// the same ring).
    pub fn receive(&self, from: &str, message: pb::Ownership) -> Vec<ListDue> {
        let Some(kind) = message.kind else {
            return Vec::new();
        };
        let Some(mesh) = self.mesh() else {
            return Vec::new();
        };
        let mut s = self.state.lock();
        let mut lists = Vec::new();
        let notices = match kind {
            Own::Ring(ring_id) => {
                for say in s.agree.peer_ring(from, ring_id) {
                    if let Say::List { to, ring_id } = say {
                        lists.push(ListDue {
                            to: to.to_string(),
                            ring_id,
                        });
                    }
                }
                s.dir.peer_ring(from, ring_id)
            }
            Own::Transition(c) => {
                let mut out = Vec::new();
                for (rooms, present) in [(&c.joined, true), (&c.left, false)] {
                    for room in rooms {
                        let key = RoomKey::new(&c.namespace, room);
                        out.extend(s.dir.transition(from, &key, present));
                    }
                }
                out
            }
            Own::ListStart(_) => s.dir.list_start(from),
            Own::List(c) => {
                let keys: Vec<RoomKey> = c
                    .joined
                    .iter()
                    .map(|r| RoomKey::new(&c.namespace, r))
                    .collect();
                s.dir.list_rooms(from, &keys)
            }
            Own::ListDone(ring_id) => s.dir.list_done(from, ring_id),
            Own::Lookup(r) => {
                let key = key_of(&r);
                let answer = match s.dir.lookup(from, &key) {
                    Answer::NotOwner => pb::LookupAnswer {
                        room: Some(r),
                        outcome: pb::lookup_answer::Outcome::NotOwner as i32,
                        ..Default::default()
                    },
                    Answer::Full => pb::LookupAnswer {
                        room: Some(r),
                        outcome: pb::lookup_answer::Outcome::Full as i32,
                        ..Default::default()
                    },
                    Answer::Known { members, synced } => pb::LookupAnswer {
                        room: Some(r),
                        outcome: pb::lookup_answer::Outcome::Known as i32,
                        members: members.iter().map(|n| n.to_string()).collect(),
                        synced: synced.iter().map(|n| n.to_string()).collect(),
                    },
                };
                mesh.offer_to(from, own(Own::Answer(answer)), false);
                Vec::new()
            }
            Own::Answer(a) => {
                let Some(r) = &a.room else {
                    return lists;
                };
                let answer = match pb::lookup_answer::Outcome::try_from(a.outcome) {
                    Ok(pb::lookup_answer::Outcome::Known) => {
                        let members = s.nodes(a.members);
                        let synced = s.nodes(a.synced);
                        Answer::Known { members, synced }
                    }
                    Ok(pb::lookup_answer::Outcome::Full) => Answer::Full,
                    _ => Answer::NotOwner,
                };
                let ring = s.agree.ring().clone();
                let dropped = s.cache.answered(&ring, from, key_of(r), answer);
                Self::unsubscribe(&mesh, dropped);
                Vec::new()
            }
            Own::Unsubscribe(r) => {
                let keys: Vec<RoomKey> = r.rooms.iter().map(key_of).collect();
                s.dir.unsubscribe(from, &keys);
                Vec::new()
            }
            Own::Update(u) => {
                if let Some(r) = &u.room {
                    let key = key_of(r);
                    if !s.cache.update(from, &key, &u.node, u.present) {
                        let stop = Own::Unsubscribe(pb::RoomRefs {
                            rooms: vec![r.clone()],
                        });
                        mesh.offer_to(from, own(stop), false);
                    }
                }
                Vec::new()
            }
            Own::Synced(list) => {
                let nodes = s.nodes(list.nodes);
                s.cache.owner_synced(from, nodes);
                Vec::new()
            }
            Own::Invalidate(r) => {
                s.cache.invalidate(from, &key_of(&r));
                Vec::new()
            }
            Own::Hint(u) => {
                if let Some(r) = &u.room {
                    s.cache.hint(from, &key_of(r), u.present);
                }
                Vec::new()
            }
            Own::Reset(_) => {
                s.cache.forget_owner(from);
                Vec::new()
            }
        };
        self.notify(&mesh, &mut s, notices);
        lists
    }

    /// A peer asks this node, as an owner, to flush: answered once every subscriber it has
    /// told something so far confirmed it (and every earlier flush completed).
    pub fn flush(&self, id: u64) -> Reply {
        let flushed = self.flush_subscribers();
        Box::pin(async move {
            flushed.await;
            // A pong answers a request like a reply, and counts as a room update.
            pb::Message::of(Kind::Pong(pb::Pong { id }))
        })
    }

    /// Pings the subscribers told something since the last flush; resolves once they all
    /// answered (or the request timeout passed) and every earlier flush completed.
    fn flush_subscribers(&self) -> impl Future<Output = ()> + Send + 'static {
        let mesh = self.mesh();
        let (tx, rx) = oneshot::channel::<()>();
        let (dirty, previous) = {
            let mut s = self.state.lock();
            let dirty: Vec<String> = s
                .dir
                .take_dirty()
                .into_iter()
                .map(|d| d.to_string())
                .filter(|d| s.linked.contains(d))
                .collect();
            let next = rx.map(|_| ()).boxed().shared();
            (dirty, std::mem::replace(&mut s.last_flush, next))
        };
        async move {
            if let Some(mesh) = mesh {
                let ping = |id| pb::Message::of(Kind::Ping(pb::Ping { id }));
                let timeout = mesh.request_timeout();
                join_all(dirty.iter().map(|d| mesh.ask(d, ping, timeout))).await;
            }
            previous.await;
            let _ = tx.send(());
        }
    }

    /// A join barrier: resolves once every node that could broadcast to the rooms this node
    /// changed before the call will reach its members there (see `ownership::agreement`).
    pub fn barrier(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let mesh = self.mesh();
        let (tx, rx) = oneshot::channel::<()>();
        let (owners, touched, token, previous, mine) = {
            let mut s = self.state.lock();
            let touched = std::mem::take(&mut s.touched);
            let (owners, token): (Vec<String>, Option<u64>) = match s.agree.barrier() {
                Barrier::Owners => (
                    touched.keys().filter(|o| **o != self.me).cloned().collect(),
                    None,
                ),
                Barrier::All { token } => (s.linked.iter().cloned().collect(), Some(token)),
            };
            let mine = token.is_some() || touched.contains_key(&self.me);
            let next = rx.map(|_| ()).boxed().shared();
            let previous = std::mem::replace(&mut s.last_barrier, next);
            (owners, touched, token, previous, mine)
        };
        let own_flush = mine.then(|| self.flush_subscribers());
        let this = self.clone();
        async move {
            if let Some(mesh) = mesh {
                let timeout = mesh.request_timeout();
                let asks = owners.iter().map(|o| {
                    let mesh = mesh.clone();
                    async move {
                        let flush = |id| {
                            pb::Message::of(Kind::Request(pb::Request {
                                id,
                                query: Some(pb::request::Query::Flush(pb::Flush {})),
                            }))
                        };
                        (o.clone(), mesh.ask(o, flush, timeout).await.is_some())
                    }
                });
                let (answers, ()) = tokio::join!(join_all(asks), async {
                    if let Some(f) = own_flush {
                        f.await;
                    }
                });
                let failed: Vec<&String> = answers
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(|(o, _)| o)
                    .filter(|o| token.is_none() || touched.contains_key(*o))
                    .collect();
                if !failed.is_empty() {
                    this.fallback(&mesh, &failed, &touched).await;
                }
                if let Some(token) = token {
                    this.state.lock().agree.flushed_all(token);
                }
            }
            previous.await;
            let _ = tx.send(());
        }
    }

    /// The owners `failed` could not confirm this node's transitions: this node hints every
    /// peer itself and waits until each has applied the hints.
    async fn fallback(
        &self,
        mesh: &Arc<Mesh>,
        failed: &[&String],
        touched: &BTreeMap<String, Vec<RoomKey>>,
    ) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            owners = ?failed,
            "a room owner did not confirm a join; telling every peer directly"
        );
        {
            let s = self.state.lock();
            for owner in failed {
                for key in touched.get(*owner).into_iter().flatten() {
                    let hint = own(Own::Hint(pb::MemberUpdate {
                        room: Some(room_ref(key)),
                        node: String::new(),
                        present: true,
                    }));
                    for peer in &s.linked {
                        mesh.offer_to(peer, hint.clone(), false);
                    }
                }
            }
        }
        let ping = |id| pb::Message::of(Kind::Ping(pb::Ping { id }));
        mesh.ask_all(ping, mesh.request_timeout()).await;
    }

    /// Resends what drops left wrong: resets to subscribers, lists to owners. Returns
    /// whether some are still due (their queues are still full).
    pub fn retry(&self, rooms: impl FnOnce() -> Vec<(String, Vec<String>)>) -> bool {
        let Some(mesh) = self.mesh() else {
            return false;
        };
        let mut s = self.state.lock();
        for peer in std::mem::take(&mut s.resets) {
            if mesh.offer_to(&peer, own(Own::Reset(pb::Reset {})), false) == Offer::Full {
                s.resets.insert(peer);
            }
        }
        let relists: Vec<String> = std::mem::take(&mut s.relists).into_iter().collect();
        let agreed: Vec<String> = relists.into_iter().filter(|p| s.agree.agrees(p)).collect();
        if !agreed.is_empty() {
            drop(s);
            let rooms = rooms();
            s = self.state.lock();
            for peer in agreed {
                if s.agree.agrees(&peer) {
                    self.list(&mesh, &mut s, &peer, &rooms);
                }
            }
        }
        !s.resets.is_empty() || !s.relists.is_empty()
    }

    /// Resolves once a drop has left a reset or a list due (at once if one did since the
    /// last call).
    pub async fn retry_due(&self) {
        self.due.notified().await;
    }
}

impl State {
    /// Peer-supplied node ids: only members of this node's ring, interned, sorted.
    fn nodes(&mut self, names: Vec<String>) -> Vec<NodeId> {
        let ring = self.agree.ring();
        let mut out: Vec<NodeId> = names
            .iter()
            .filter(|n| ring.contains(n))
            .map(|n| self.ids.get(n))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests;
