//! Keeping every peer's view of this node's rooms current, and this node's view of theirs
//! ([`Interest`]), so room broadcasts go only to the nodes with members.
//!
//! One task sends everything this node says about its rooms, in the order it happened:
//! transitions (first member joined, last one left), a full list plus `Synced` on each new
//! link, and the settling of peers' socketsJoin operations. Each transition carries the
//! room's state at that moment, so replaying an older one after a full list that already
//! had it is harmless: the last message about a room always tells its current state.
//!
//! A peer whose queue is full drops what this node tells it. When that was an announcement
//! (or part of a full list), the peer's view of this node is wrong: this node marks the peer
//! unsynced ([`Unsynced`]) and, once its queue has room again, resends it everything, as on
//! a new link: a `resync` marker (the peer forgets this node's rooms and sends it every
//! broadcast meanwhile), the full list, then `Synced`. Attempts back off from 50 ms to 2 s
//! while the queue stays full.
//!
//! With room ownership (`cluster.rooms: owned`, [`Owned`]) rooms are told only to their
//! owners and this view keeps only what ownership leaves to it: sockets recovered onto
//! this node with another node's id (announced to every peer), and the socketsJoin
//! operations in flight. The task then also sends owners their lists and follows the
//! member set.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::interest::Interest;
use super::membership::Membership;
use super::mesh::{Mesh, Offer};
use super::owned::{ListDue, Owned};
use super::proto::{self as pb, message::Kind};
use crate::engine::sid::owner_of;
use crate::socketio::Hub;

/// Rooms per message of a full list.
const LIST_CHUNK: usize = 512;
/// Events folded into one round of announcements.
const EVENT_BATCH: usize = 4096;
/// First and longest wait before resending the rooms to a peer that dropped some.
const RESYNC_MIN_DELAY: Duration = Duration::from_millis(50);
const RESYNC_MAX_DELAY: Duration = Duration::from_secs(2);

/// The peers whose view of this node's rooms is wrong because something this node told
/// them was dropped (their queue was full), and when to resend them everything. Pure state.
#[derive(Debug, Default)]
struct Unsynced {
    peers: BTreeSet<String>,
    /// The wait before the next attempt; doubles while attempts fail.
    delay: Duration,
    next: Option<Instant>,
}

impl Unsynced {
    /// What this node told `peer` was dropped.
    fn dropped(&mut self, peer: &str, now: Instant) {
        if self.peers.insert(peer.to_string()) && self.next.is_none() {
            self.delay = RESYNC_MIN_DELAY;
            self.next = Some(now + self.delay);
        }
    }

    /// A new link to `peer` gets the full list anyway.
    fn linked(&mut self, peer: &str) {
        self.peers.remove(peer);
        if self.peers.is_empty() {
            self.next = None;
        }
    }

    /// When the next attempt is due, if any peer is unsynced.
    fn next_attempt(&self) -> Option<Instant> {
        self.next
    }

    /// The peers to resend everything to now.
    fn due(&self) -> Vec<String> {
        self.peers.iter().cloned().collect()
    }

    /// An attempt at `peer` ended with the last message's fate: queued (done), down (the
    /// next link sends the list) or full (try again later).
    fn attempted(&mut self, peer: &str, outcome: Offer) {
        if outcome != Offer::Full {
            self.peers.remove(peer);
        }
    }

    /// After a round of attempts: the next one, later each time while some peer is left.
    fn round_done(&mut self, now: Instant) {
        if self.peers.is_empty() {
            self.next = None;
            self.delay = Duration::ZERO;
        } else {
            self.delay = (self.delay * 2).clamp(RESYNC_MIN_DELAY, RESYNC_MAX_DELAY);
            self.next = Some(now + self.delay);
        }
    }
}

/// Something the announcing task must tell peers.
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
    /// Ownership: a list this node owes a peer.
    List(ListDue),
    /// Ownership: the member set changed.
    Ring(Arc<Membership>),
}

/// A socketsJoin this node sent, waiting for the peers to settle it.
struct JoinWait {
    peers: HashSet<String>,
    /// A peer whose link went down before it settled: the join may not have reached it.
    lost: Option<String>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// This node's rooms as peers must know them, and theirs as this node knows them.
pub struct RoomSync {
    interest: Mutex<Interest>,
    /// Room ownership, when `cluster.rooms` is `owned`.
    owned: Option<Arc<Owned>>,
    /// With ownership: the linked peers that speak it (they said their ring on the link).
    /// Only they get this view's `Synced`: a peer that keeps the replicated view (another
    /// version, or `cluster.rooms: replicated`) never counts this node as synced, so it
    /// sends this node every room broadcast, and this node, whose rooms it never hears of,
    /// misses none.
    speaking: Mutex<HashSet<String>>,
    events: mpsc::UnboundedSender<Event>,
    next_op: AtomicU64,
    joins: Mutex<HashMap<u64, JoinWait>>,
}

impl RoomSync {
    /// The shared state, and the queue its task (see [`run`]) consumes; `owned` for room
    /// ownership.
    pub fn new(owned: Option<Arc<Owned>>) -> (Arc<Self>, RoomEvents) {
        let (events, rx) = mpsc::unbounded_channel();
        let sync = Arc::new(Self {
            interest: Mutex::new(Interest::new()),
            owned,
            speaking: Mutex::new(HashSet::new()),
            events,
            next_op: AtomicU64::new(1),
            joins: Mutex::new(HashMap::new()),
        });
        (sync, RoomEvents(rx))
    }

    /// Room ownership, when on.
    pub fn owned(&self) -> Option<&Arc<Owned>> {
        self.owned.as_ref()
    }

    /// Queues the announcement of a room transition of this node.
    pub fn room_changed(&self, nsp: &str, room: &str, present: bool) {
        if let Some(owned) = self.owned.as_ref().filter(|_| owner_of(room).is_none()) {
            // Under the hub's locks: the owner learns it at once (a barrier asked after
            // this covers it), and nothing here reads the hub.
            owned.transition(nsp, room, present);
            return;
        }
        let _ = self.events.send(Event::Room {
            nsp: Arc::from(nsp),
            room: room.to_string(),
            present,
        });
    }

    /// A new link to `peer`: it must (re)learn this node's rooms, and this node its rooms.
    pub fn link_up(&self, peer: &str) {
        self.interest.lock().link_up(peer);
        match &self.owned {
            Some(owned) => {
                self.speaking.lock().remove(peer);
                owned.link_up(peer);
            }
            None => {
                let _ = self.events.send(Event::LinkUp(peer.to_string()));
            }
        }
    }

    pub fn link_down(&self, peer: &str) {
        self.interest.lock().link_down(peer);
        if let Some(owned) = &self.owned {
            self.speaking.lock().remove(peer);
            owned.link_down(peer);
        }
        // It will not settle anything any more: the joins it had not settled may not have
        // reached it.
        let mut joins = self.joins.lock();
        for op in joins.keys().copied().collect::<Vec<_>>() {
            if let Some(wait) = joins.get_mut(&op) {
                if wait.peers.contains(peer) && wait.lost.is_none() {
                    wait.lost = Some(peer.to_string());
                }
            }
            Self::settled(&mut joins, op, peer);
        }
    }

    /// `peer` settled socketsJoin `op`: wake the waiter once all did (with the peer whose
    /// link went down first, if one did).
    fn settled(joins: &mut HashMap<u64, JoinWait>, op: u64, peer: &str) {
        if let Some(wait) = joins.get_mut(&op) {
            wait.peers.remove(peer);
            if wait.peers.is_empty() {
                if let Some(wait) = joins.remove(&op) {
                    if let Some(done) = wait.done {
                        let _ = done.send(wait.lost.map_or(Ok(()), Err));
                    }
                }
            }
        }
    }

    /// A peer's announcement.
    pub fn announced(&self, peer: &str, a: &pb::RoomAnnounce) {
        let mut interest = self.interest.lock();
        if a.resync {
            tracing::info!(
                peer,
                "peer resends its rooms (some of its announcements were dropped)"
            );
            interest.resync(peer);
        }
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
    /// With ownership: once every node that could broadcast to the rooms will reach this
    /// node's members there (the owners' flushes).
    pub fn propagated(&self) -> impl Future<Output = ()> + Send + 'static {
        let owned = self.owned.as_ref().map(|o| o.barrier());
        let (tx, rx) = oneshot::channel();
        let _ = self.events.send(Event::Barrier(tx));
        async move {
            if let Some(owned) = owned {
                owned.await;
            }
            let _ = rx.await;
        }
    }

    /// A peer's ownership message (`cluster.rooms: owned`).
    pub fn ownership(&self, peer: &str, message: super::proto::Ownership) {
        let ring = matches!(message.kind, Some(super::proto::ownership::Kind::Ring(_)));
        match &self.owned {
            Some(owned) => {
                if ring && self.speaking.lock().insert(peer.to_string()) {
                    // Its first word on this link: it gets this view's list (see `speaking`).
                    let _ = self.events.send(Event::LinkUp(peer.to_string()));
                }
                for due in owned.receive(peer, message) {
                    let _ = self.events.send(Event::List(due));
                }
            }
            None if ring => tracing::warn!(
                peer,
                "a peer uses room ownership and this node does not (set the same cluster.rooms on every member)"
            ),
            None => {}
        }
    }

    /// The member set changed (ownership follows it).
    pub fn membership_changed(&self, membership: Arc<Membership>) {
        if self.owned.is_some() {
            let _ = self.events.send(Event::Ring(membership));
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
    /// as members of `rooms`. Returns its id, and a future that resolves once all settled,
    /// with `Err(peer)` when the link to `peer` went down before it settled.
    pub fn join_sent(
        &self,
        peers: &[String],
        nsp: &str,
        rooms: &[String],
    ) -> (
        u64,
        impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let mut interest = self.interest.lock();
        for peer in peers {
            interest.join_sent(peer, op, nsp, rooms);
        }
        drop(interest);
        let (tx, rx) = oneshot::channel();
        if peers.is_empty() {
            let _ = tx.send(Ok(()));
        } else {
            self.joins.lock().insert(
                op,
                JoinWait {
                    peers: peers.iter().cloned().collect(),
                    lost: None,
                    done: Some(tx),
                },
            );
        }
        // A dropped sender (the wait was abandoned) is not a success.
        let joins_done = async move { rx.await.unwrap_or_else(|_| Err(String::new())) };
        (op, joins_done)
    }

    /// Forgets a socketsJoin whose wait ended (timed out, or not sent to some peer): the
    /// peers no longer count as members of its rooms on its account (what they joined, they
    /// announce).
    /// Returns the peers that had not settled it.
    pub fn join_abandoned(&self, op: u64) -> Vec<String> {
        let wait = self.joins.lock().remove(&op);
        self.interest.lock().join_forgotten(op);
        let mut peers: Vec<String> = wait
            .map(|w| w.peers.into_iter().collect())
            .unwrap_or_default();
        peers.sort();
        peers
    }

    /// The peers (of those linked) a broadcast to `rooms` of `nsp` must reach.
    pub fn targets(&self, nsp: &str, rooms: &[String], linked: &[String]) -> Vec<String> {
        let mut targets =
            self.interest
                .lock()
                .targets(nsp, rooms, linked.iter().map(String::as_str));
        if let Some(owned) = &self.owned {
            targets.extend(owned.targets(nsp, rooms, linked));
        }
        targets.into_iter().collect()
    }

    /// Whether every linked peer has sent all its rooms (for stats and tests).
    pub fn all_synced(&self, linked: &[String]) -> bool {
        let interest = self.interest.lock();
        linked.iter().all(|p| interest.is_synced(p))
    }
}

/// The receiving end of a [`RoomSync`]'s events.
pub struct RoomEvents(mpsc::UnboundedReceiver<Event>);

/// Every room of this node (socket-id rooms aside), by namespace.
fn hub_rooms(hub: &Hub) -> Vec<(String, Vec<String>)> {
    hub.namespaces()
        .into_iter()
        .map(|ns| (ns.name().to_string(), ns.room_names()))
        .collect()
}

/// Sends this node's room events to its peers until the mesh closes.
pub async fn run(mut events: RoomEvents, mesh: Arc<Mesh>, hub: Hub, owned: Option<Arc<Owned>>) {
    let mut batch = Vec::with_capacity(64);
    let mut unsynced = Unsynced::default();
    // Ownership: resets and lists that drops left due, retried with the same backoff.
    let mut owned_retry = Unsynced::default();
    let all_rooms = owned.is_none();
    // Ownership: whether this view announced something since its last ping of every peer,
    // and that ping (later barriers wait for it).
    let mut announced = false;
    let mut last_ping: Shared<BoxFuture<'static, ()>> =
        futures_util::future::ready(()).boxed().shared();
    loop {
        let next = [unsynced.next_attempt(), owned_retry.next_attempt()]
            .into_iter()
            .flatten()
            .min();
        let due = async {
            match &owned {
                Some(o) => o.retry_due().await,
                None => std::future::pending().await,
            }
        };
        let received = match next {
            None => tokio::select! {
                received = events.0.recv_many(&mut batch, EVENT_BATCH) => received,
                () = due => {
                    owned_retry.dropped(OWNED, Instant::now());
                    continue;
                }
            },
            Some(at) => tokio::select! {
                received = events.0.recv_many(&mut batch, EVENT_BATCH) => received,
                () = due => {
                    owned_retry.dropped(OWNED, Instant::now());
                    continue;
                }
                () = tokio::time::sleep_until(at) => {
                    let now = Instant::now();
                    if unsynced.next_attempt().is_some_and(|t| t <= now) {
                        for peer in unsynced.due() {
                            let outcome = send_all_rooms(&mesh, &hub, &peer, true, all_rooms);
                            unsynced.attempted(&peer, outcome);
                        }
                        unsynced.round_done(now);
                    }
                    if let Some(o) = owned.as_ref().filter(|_| owned_retry.next_attempt().is_some_and(|t| t <= now)) {
                        let outcome = if o.retry(|| hub_rooms(&hub)) { Offer::Full } else { Offer::Queued };
                        owned_retry.attempted(OWNED, outcome);
                        owned_retry.round_done(now);
                    }
                    continue;
                }
            },
        };
        if received == 0 {
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
                    flush(&mesh, &mut pending, &mut unsynced);
                    unsynced.linked(&peer);
                    if send_all_rooms(&mesh, &hub, &peer, false, all_rooms) == Offer::Full {
                        unsynced.dropped(&peer, Instant::now());
                    }
                }
                Event::Settle { peer, op } => settles.push((peer, op)),
                Event::Barrier(waiter) => waiters.push(waiter),
                Event::List(due) => {
                    if let Some(o) = &owned {
                        o.send_list(&due, &hub_rooms(&hub));
                    }
                }
                Event::Ring(membership) => {
                    if let Some(o) = &owned {
                        o.ring_changed(membership.ring.clone(), &hub_rooms(&hub));
                    }
                }
            }
        }
        announced |= !pending.is_empty();
        flush(&mesh, &mut pending, &mut unsynced);
        if !waiters.is_empty() || !settles.is_empty() {
            // With ownership, peers hear of this view's announcements only (recovered
            // sockets' ids), and the owners' side of a settle is a barrier of its own.
            if owned.is_none() || std::mem::take(&mut announced) {
                last_ping = ping_all(mesh.clone()).boxed().shared();
            }
            let owned_barrier = match (&owned, settles.is_empty()) {
                (Some(o), false) => Some(o.barrier()),
                _ => None,
            };
            tokio::spawn(barrier(
                mesh.clone(),
                waiters,
                settles,
                last_ping.clone(),
                owned_barrier,
            ));
        }
    }
}

/// The one "peer" of the ownership retries (they are per node, not per peer).
const OWNED: &str = "";

/// Pings every peer; resolves once they answered (or the request timeout passed).
async fn ping_all(mesh: Arc<Mesh>) {
    let ping = |id| pb::Message::of(Kind::Ping(pb::Ping { id }));
    let (_, missing) = mesh.ask_all(ping, mesh.request_timeout()).await;
    if missing {
        tracing::debug!("a peer did not answer a room barrier in time");
    }
}

/// Waits for `ping` (a ping of every peer behind this view's announcements) and `owned`
/// (an ownership barrier); then wakes the waiters and settles peers' socketsJoin operations.
async fn barrier(
    mesh: Arc<Mesh>,
    waiters: Vec<oneshot::Sender<()>>,
    settles: Vec<(String, u64)>,
    ping: Shared<BoxFuture<'static, ()>>,
    owned: Option<impl Future<Output = ()>>,
) {
    ping.await;
    if let Some(owned) = owned {
        owned.await;
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

/// Announces the collected transitions to every peer; a peer that drops one is unsynced.
fn flush(
    mesh: &Mesh,
    pending: &mut HashMap<Arc<str>, HashMap<String, bool>>,
    unsynced: &mut Unsynced,
) {
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
        let message = pb::Message::of(Kind::RoomAnnounce(announce));
        for peer in mesh.send_all_checked(&message, false) {
            tracing::warn!(
                peer,
                "a room announcement to this peer was dropped; resending it all rooms"
            );
            unsynced.dropped(&peer, Instant::now());
        }
    }
}

/// Every room of this node, then `Synced`, to a newly linked peer (or, with `resync`, to a
/// linked one whose view is wrong, after a marker telling it to forget what it knew).
/// Returns the fate of the last message offered: `Queued` when all went.
/// With ownership (`all_rooms` false) the list is empty: peers learn rooms from owners.
fn send_all_rooms(mesh: &Mesh, hub: &Hub, peer: &str, resync: bool, all_rooms: bool) -> Offer {
    let offer = |announce: pb::RoomAnnounce| {
        mesh.offer_to(peer, pb::Message::of(Kind::RoomAnnounce(announce)), false)
    };
    if resync {
        let outcome = offer(pb::RoomAnnounce {
            resync: true,
            ..Default::default()
        });
        if outcome != Offer::Queued {
            return outcome;
        }
    }
    let mut rooms = 0usize;
    for ns in hub.namespaces().into_iter().filter(|_| all_rooms) {
        let names = ns.room_names();
        rooms += names.len();
        for chunk in names.chunks(LIST_CHUNK) {
            let outcome = offer(pb::RoomAnnounce {
                namespace: ns.name().to_string(),
                joined: chunk.to_vec(),
                ..Default::default()
            });
            if outcome != Offer::Queued {
                // Its link is gone (the next one sends the list) or full (sent again later);
                // meanwhile it stays unsynced, so it gets every broadcast.
                tracing::warn!(peer, ?outcome, "could not send this node's rooms to a peer");
                return outcome;
            }
        }
    }
    let outcome = mesh.offer_to(
        peer,
        pb::Message::of(Kind::Synced(pb::Synced { ring: 0 })),
        false,
    );
    if outcome == Offer::Queued {
        tracing::debug!(peer, rooms, resync, "sent this node's rooms to a peer");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_dropped_an_announcement_is_resent_everything_with_backoff() {
        let t0 = Instant::now();
        let mut u = Unsynced::default();
        assert_eq!(u.next_attempt(), None, "nothing to do");
        u.dropped("b", t0);
        u.dropped("c", t0 + Duration::from_millis(10));
        // The first attempt comes soon after the first drop, for both.
        assert_eq!(u.next_attempt(), Some(t0 + RESYNC_MIN_DELAY));
        assert_eq!(u.due(), ["b", "c"]);
        // b's queue is still full; c took everything.
        u.attempted("b", Offer::Full);
        u.attempted("c", Offer::Queued);
        let t1 = t0 + RESYNC_MIN_DELAY;
        u.round_done(t1);
        assert_eq!(u.due(), ["b"]);
        assert_eq!(
            u.next_attempt(),
            Some(t1 + RESYNC_MIN_DELAY * 2),
            "backs off"
        );
        // Failing on, the wait doubles up to its bound.
        let mut now = t1;
        for _ in 0..10 {
            u.attempted("b", Offer::Full);
            now += Duration::from_millis(1);
            u.round_done(now);
        }
        assert_eq!(u.next_attempt(), Some(now + RESYNC_MAX_DELAY));
        // Another drop meanwhile does not bring the attempt forward.
        u.dropped("d", now);
        assert_eq!(u.next_attempt(), Some(now + RESYNC_MAX_DELAY));
        // A new link to b sends the list anyway; d's link went down.
        u.linked("b");
        u.attempted("d", Offer::Down);
        u.round_done(now);
        assert_eq!(u.next_attempt(), None);
        assert!(u.due().is_empty());
        // The next episode starts again at the shortest wait.
        u.dropped("b", now);
        assert_eq!(u.next_attempt(), Some(now + RESYNC_MIN_DELAY));
        u.linked("b");
        assert_eq!(u.next_attempt(), None);
    }
}
