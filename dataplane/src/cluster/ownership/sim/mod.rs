//! An in-memory cluster of ownership state machines: the real [`Directory`], [`RoomCache`]
//! and [`Agreement`] of every node, joined by ordered links with a delay, under a virtual
//! clock. Used by the property tests of this module and by `bench/ringsim` (64 nodes, 2
//! million rooms) to check that no broadcast misses a member whose join was acknowledged,
//! through churn, link cuts and member set changes, and to count what ownership costs.
//!
//! The protocol each node runs here is the one the mesh runs (messages named alike); what
//! the simulation leaves out is the sockets: a node's "members" are counts per room.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::agreement::{Agreement, Barrier, Say};
use super::cache::RoomCache;
use super::directory::{Answer, Directory, Notice};
use super::{NodeId, RoomKey};
use crate::cluster::ring::Ring;

/// Rooms per list message, as the mesh chunks them.
const LIST_CHUNK: usize = 512;

/// What travels on a link.
#[derive(Debug, Clone)]
enum Msg {
    Hello {
        ring_id: u64,
    },
    RingChanged {
        ring_id: u64,
    },
    Transition {
        key: RoomKey,
        present: bool,
    },
    ListStart,
    ListRooms {
        keys: Vec<RoomKey>,
    },
    ListDone {
        ring_id: u64,
    },
    Lookup {
        key: RoomKey,
    },
    Answer {
        key: RoomKey,
        answer: Answer,
    },
    Unsubscribe {
        keys: Vec<RoomKey>,
    },
    Notice(Notice),
    Flush {
        id: u64,
    },
    FlushDone {
        id: u64,
    },
    Ping {
        round: u64,
    },
    Pong {
        round: u64,
    },
    /// A member node's own word that it has members in a room, sent to every peer when
    /// the room's owner could not confirm its transition (see [`Sim::fallback`]).
    Hint {
        key: RoomKey,
        present: bool,
    },
}

impl Msg {
    /// What a message is counted as.
    fn kind(&self) -> Kind {
        match self {
            Msg::Lookup { .. } | Msg::Answer { .. } | Msg::Unsubscribe { .. } => Kind::Lookup,
            Msg::Hello { .. }
            | Msg::RingChanged { .. }
            | Msg::ListStart
            | Msg::ListRooms { .. }
            | Msg::ListDone { .. }
            | Msg::Notice(Notice::Synced { .. })
            | Msg::Notice(Notice::Invalidate { .. }) => Kind::Sync,
            _ => Kind::Room,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Lookup,
    Sync,
    Room,
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct SimStats {
    pub joins: u64,
    pub leaves: u64,
    /// Transitions (first member joined, last left) at member nodes.
    pub transitions: u64,
    /// Messages a transition causes: the transition, pushes of it to subscribers, the join
    /// barrier's flushes and pings, hints.
    pub room_messages: u64,
    /// Messages of links and member set changes: hellos, ring changes, lists, owners'
    /// synced sets and invalidations.
    pub sync_messages: u64,
    /// Rooms carried by list messages.
    pub listed_rooms: u64,
    pub lookup_messages: u64,
    pub broadcasts: u64,
    /// Copies of broadcasts sent to other nodes, and those sent to nodes with no member.
    pub copies: u64,
    pub wasted_copies: u64,
    /// Broadcasts that missed a node whose join had been acknowledged (must stay 0).
    pub lost: u64,
    /// Broadcasts sent everywhere because a room was cold.
    pub cold: u64,
    /// Broadcasts held for a lookup (when cold rooms are looked up first), and the time they
    /// were held, summed (virtual µs).
    pub held: u64,
    pub hold_us: u64,
    /// Join acknowledgements and their latency (virtual µs), summed.
    pub acked: u64,
    pub ack_latency_us: u64,
}

#[derive(Debug)]
struct Round {
    waiting: BTreeSet<NodeId>,
    /// Who waits for this round: (node, flush id).
    replies: Vec<(NodeId, u64)>,
}

#[derive(Debug)]
struct JoinWait {
    key: RoomKey,
    started: u64,
    waiting: BTreeSet<NodeId>,
    token: Option<u64>,
    /// The remote owner flushed, while its flush may still fail over to the fallback.
    owner: Option<NodeId>,
    /// The room's transition count at this node when the join was made: the ack vouches
    /// for the membership only if no transition came after (a leave and a new join are
    /// vouched for by the new join's own barrier).
    transitions: u64,
}

struct SimNode {
    id: NodeId,
    dir: Directory,
    cache: RoomCache,
    agree: Agreement,
    linked: BTreeSet<NodeId>,
    /// Local members per room.
    local: HashMap<RoomKey, u32>,
    /// Transitions per room so far.
    transitions: HashMap<RoomKey, u64>,
    /// The local rooms by owner under the ring `lists_ring` (what lists hold), kept as rooms
    /// come and go: computing owners is most of a list's cost.
    lists: HashMap<NodeId, HashSet<RoomKey>>,
    lists_ring: Option<u64>,
    /// Owner flush rounds in order; the first ones complete first.
    rounds: BTreeMap<u64, Round>,
    /// Broadcasts held for lookups, in order: (room, when made, acknowledged members then).
    held: VecDeque<(RoomKey, u64, BTreeSet<NodeId>)>,
    /// Join barriers waiting for flushes, by flush id.
    joins: BTreeMap<u64, JoinWait>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Link {
    up: bool,
    gen: u64,
    last: u64,
    /// Messages sent so far: with the seed and the link, what draws the delay of the next
    /// one, so that a run does not depend on the order hash maps iterate in.
    sent: u64,
    /// Added to every delay (a slow link, see [`Sim::slow`]).
    extra: u64,
}

impl SimNode {
    /// The local rooms by owner under the current ring.
    fn lists(&mut self) -> &HashMap<NodeId, HashSet<RoomKey>> {
        let ring_id = self.agree.ring_id();
        if self.lists_ring != Some(ring_id) {
            let ring = self.agree.ring();
            let mut lists: HashMap<NodeId, HashSet<RoomKey>> = HashMap::new();
            for key in self.local.keys() {
                if let Some(owner) = ring.owner(&key.nsp, &key.room) {
                    lists.entry(owner.into()).or_default().insert(key.clone());
                }
            }
            self.lists = lists;
            self.lists_ring = Some(ring_id);
        }
        &self.lists
    }

    /// Keeps the lists current when a local room appears or goes.
    fn listed(&mut self, key: &RoomKey, present: bool) {
        if self.lists_ring != Some(self.agree.ring_id()) {
            return;
        }
        let Some(owner) = self.agree.ring().owner(&key.nsp, &key.room) else {
            return;
        };
        let set = self.lists.entry(owner.into()).or_default();
        if present {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }
}

enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        gen: u64,
        msg: Msg,
    },
}

/// The simulated cluster.
pub struct Sim {
    now: u64,
    seq: u64,
    latency_us: u64,
    next_id: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Per ordered pair: its link, whose generation rises with every link up and cut (so
    /// what was in flight on a cut link is lost), and its last delivery time (messages
    /// stay in order).
    links: HashMap<(NodeId, NodeId), Link>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    /// Acknowledged members: room -> nodes.
    truth: HashMap<RoomKey, BTreeSet<NodeId>>,
    pub stats: SimStats,
    pub rng: StdRng,
    seed: u64,
    /// The first lost broadcasts, described.
    pub losses: Vec<String>,
    /// Cold rooms: a broadcast goes to every peer while its lookup is in flight (true, the
    /// default), or waits for the answer (false).
    pub cold_everywhere: bool,
    /// Debugging: every event about this room (and every ring and link change) is logged.
    pub trace: Option<RoomKey>,
    pub log: Vec<String>,
}

impl Sim {
    /// `members` nodes, each with a sender cache of `cache_capacity` rooms, links with a
    /// one-way delay of `latency_us`.
    pub fn new(members: &[String], cache_capacity: usize, latency_us: u64, seed: u64) -> Self {
        let ring = Ring::new(members.iter().cloned());
        let mut sim = Self {
            now: 0,
            seq: 0,
            latency_us,
            next_id: 1,
            nodes: BTreeMap::new(),
            links: HashMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            truth: HashMap::new(),
            stats: SimStats::default(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            losses: Vec::new(),
            cold_everywhere: true,
            trace: None,
            log: Vec::new(),
        };
        for m in members {
            sim.add(m, ring.clone(), cache_capacity);
        }
        sim
    }

    fn add(&mut self, id: &str, ring: Ring, cache_capacity: usize) {
        let node = SimNode {
            id: id.into(),
            dir: Directory::new(id, ring.clone()),
            cache: RoomCache::new(id, cache_capacity),
            agree: Agreement::new(id, ring),
            linked: BTreeSet::new(),
            local: HashMap::new(),
            transitions: HashMap::new(),
            lists: HashMap::new(),
            lists_ring: None,
            rounds: BTreeMap::new(),
            joins: BTreeMap::new(),
            held: VecDeque::new(),
        };
        self.nodes.insert(id.into(), node);
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn members(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
    }

    /// Gives `node` local members in `keys` at once (no barrier): a starting state, before
    /// links come up.
    pub fn preload(&mut self, node: &str, keys: impl IntoIterator<Item = RoomKey>) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        for key in keys {
            *n.local.entry(key.clone()).or_default() += 1;
            self.truth.entry(key).or_default().insert(n.id.clone());
        }
    }

    /// This node's own rooms it owns go into its directory (as its transitions would).
    pub fn preload_done(&mut self) {
        for n in self.nodes.values_mut() {
            let keys: Vec<RoomKey> = n.local.keys().cloned().collect();
            for key in keys {
                if n.agree.owner_of(&key).is_none() {
                    n.dir.local(&key, true);
                }
            }
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn send(&mut self, from: &NodeId, to: &NodeId, msg: Msg) {
        let Some(link) = self
            .links
            .get_mut(&(from.clone(), to.clone()))
            .filter(|l| l.up)
        else {
            return; // no link: dropped
        };
        // A delay between one and two `latency_us`, in order per link.
        link.sent += 1;
        let draw = xxhash_rust::xxh3::xxh3_64_with_seed(
            format!("{from}>{to}#{}", link.sent).as_bytes(),
            self.seed,
        );
        let delay = self.latency_us + draw % (self.latency_us + 1) + link.extra;
        let at = (self.now + delay).max(link.last);
        link.last = at;
        let gen = link.gen;
        match msg.kind() {
            Kind::Lookup => self.stats.lookup_messages += 1,
            Kind::Sync => self.stats.sync_messages += 1,
            Kind::Room => self.stats.room_messages += 1,
        }
        if let Msg::ListRooms { keys } = &msg {
            self.stats.listed_rooms += keys.len() as u64;
        }
        self.schedule(
            at,
            Event::Deliver {
                from: from.clone(),
                to: to.clone(),
                gen,
                msg,
            },
        );
    }

    /// Brings the link between `a` and `b` up (both directions) and exchanges hellos.
    pub fn link(&mut self, a: &str, b: &str) {
        let (a, b): (NodeId, NodeId) = (a.into(), b.into());
        let up = |x: &NodeId, y: &NodeId| {
            self.links
                .get(&(x.clone(), y.clone()))
                .is_some_and(|l| l.up)
        };
        if a == b
            || !self.nodes.contains_key(&a)
            || !self.nodes.contains_key(&b)
            || (up(&a, &b) && up(&b, &a))
        {
            return;
        }
        for (x, y) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            let link = self.links.entry((x.clone(), y.clone())).or_default();
            link.up = true;
            link.gen += 1;
            let Some(n) = self.nodes.get_mut(&x) else {
                continue;
            };
            n.linked.insert(y.clone());
            n.agree.link_up(&y);
            n.cache.link_up(&y);
            let notices = n.dir.link_up(&y);
            let ring_id = n.agree.ring_id();
            self.notices(&x, notices);
            self.send(&x, &y, Msg::Hello { ring_id });
        }
    }

    /// Makes what `from` sends `to` take `extra_us` longer (the link stays ordered).
    pub fn slow(&mut self, from: &str, to: &str, extra_us: u64) {
        if let Some(link) = self.links.get_mut(&(from.into(), to.into())) {
            link.extra = extra_us;
        }
    }

    /// Cuts the link between `a` and `b`: what is in flight is lost.
    pub fn cut(&mut self, a: &str, b: &str) {
        self.trace_event(None, || format!("cut {a} {b}"));
        let (a, b): (NodeId, NodeId) = (a.into(), b.into());
        for (x, y) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            if let Some(link) = self.links.get_mut(&(x.clone(), y.clone())) {
                link.up = false;
                link.gen += 1;
            }
            let Some(n) = self.nodes.get_mut(&x) else {
                continue;
            };
            if !n.linked.remove(&y) {
                continue;
            }
            n.agree.link_down(&y);
            n.cache.link_down(&y);
            let notices = n.dir.link_down(&y);
            // Flushes waiting on the peer: it will not answer.
            for r in n.rounds.values_mut() {
                r.waiting.remove(&y);
            }
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for (id, j) in n.joins.iter_mut() {
                if j.owner.as_ref() == Some(&y) {
                    failed.push(*id);
                } else if j.waiting.remove(&y) && j.waiting.is_empty() {
                    done.push(*id);
                }
            }
            self.notices(&x, notices);
            self.complete_rounds(&x);
            for id in done {
                self.join_done(&x, id);
            }
            for id in failed {
                self.fallback(&x, id);
            }
            self.release(&x);
        }
    }

    /// Tells `node` the member set is now `members` (as discovery would).
    pub fn set_ring(&mut self, node: &str, members: &[String]) {
        self.trace_event(None, || format!("{node} learns {members:?}"));
        let ring = Ring::new(members.iter().cloned());
        let id: NodeId = node.into();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.agree.ring_id() == ring.id() {
            return;
        }
        let said = n.agree.ring_changed(ring.clone());
        let notices = n.dir.ring_changed(ring.clone());
        let moved = n.cache.ring_changed(&ring);
        self.notices(&id, notices);
        self.unsubscribe(&id, moved);
        self.say(&id, said);
        self.release(&id);
        // Rooms this node owns now go into its own directory.
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let me = n.id.clone();
        let mut mine: Vec<RoomKey> = n
            .lists()
            .get(&me)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        mine.sort();
        let mut notices = Vec::new();
        for key in mine {
            notices.extend(n.dir.local(&key, true));
        }
        self.notices(&id, notices);
    }

    /// Every node allows each peer at most `max` subscriptions (see `Answer::Full`).
    pub fn limit_subscriptions(&mut self, max: usize) {
        for n in self.nodes.values_mut() {
            n.dir.limit_subscriptions(max);
        }
    }

    /// `node` learns the member set `members` (as discovery would tell it) and links to the
    /// members it is not linked to yet.
    pub fn learn(&mut self, node: &str, members: &[String]) {
        self.set_ring(node, members);
        for other in members {
            self.link(node, other);
        }
    }

    /// Adds a node holding `members` as its ring (it links to the others as they learn it).
    pub fn add_node(&mut self, id: &str, members: &[String], cache_capacity: usize) {
        self.add(id, Ring::new(members.iter().cloned()), cache_capacity);
    }

    /// Removes a node at once (a crash or the end of a drain): its links go down, its
    /// members are gone.
    pub fn remove_node(&mut self, id: &str) {
        let peers: Vec<NodeId> = self
            .nodes
            .get(id)
            .map(|n| n.linked.iter().cloned().collect())
            .unwrap_or_default();
        for p in peers {
            self.cut(id, &p);
        }
        self.nodes.remove(id);
        for members in self.truth.values_mut() {
            members.remove(id);
        }
    }

    fn say(&mut self, from: &NodeId, said: Vec<Say>) {
        for s in said {
            match s {
                Say::RingChanged { ring_id } => {
                    let peers: Vec<NodeId> = self.nodes[from].linked.iter().cloned().collect();
                    for p in peers {
                        self.send(from, &p, Msg::RingChanged { ring_id });
                    }
                }
                Say::List { to, ring_id } => {
                    let Some(n) = self.nodes.get_mut(from) else {
                        continue;
                    };
                    let mut keys: Vec<RoomKey> = n
                        .lists()
                        .get(&to)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    keys.sort();
                    self.send(from, &to, Msg::ListStart);
                    for chunk in keys.chunks(LIST_CHUNK) {
                        self.send(
                            from,
                            &to,
                            Msg::ListRooms {
                                keys: chunk.to_vec(),
                            },
                        );
                    }
                    self.send(from, &to, Msg::ListDone { ring_id });
                }
            }
        }
    }

    fn notices(&mut self, from: &NodeId, notices: Vec<Notice>) {
        for n in notices {
            let to = match &n {
                Notice::Update { to, .. }
                | Notice::Synced { to, .. }
                | Notice::Invalidate { to, .. } => to.clone(),
            };
            self.send(from, &to, Msg::Notice(n));
        }
    }

    fn unsubscribe(&mut self, from: &NodeId, rooms: Vec<(RoomKey, NodeId)>) {
        let mut by_owner: BTreeMap<NodeId, Vec<RoomKey>> = BTreeMap::new();
        for (k, o) in rooms {
            by_owner.entry(o).or_default().push(k);
        }
        for (o, keys) in by_owner {
            self.send(from, &o, Msg::Unsubscribe { keys });
        }
    }

    /// A local socket of `node` joins `key`; the join is acknowledged (and counted in the
    /// truth) once its barrier completes.
    pub fn join(&mut self, node: &str, key: &RoomKey) {
        self.trace_event(Some(key), || format!("{node} joins"));
        let id: NodeId = node.into();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        self.stats.joins += 1;
        let count = n.local.entry(key.clone()).or_default();
        *count += 1;
        if *count == 1 {
            *n.transitions.entry(key.clone()).or_default() += 1;
            n.listed(key, true);
            self.stats.transitions += 1;
            self.transition(&id, key, true);
        }
        // The barrier.
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let flush_id = self.next_id;
        self.next_id += 1;
        let (targets, token) = match n.agree.barrier() {
            Barrier::Owners => (vec![n.agree.owner_of(key).map(NodeId::from)], None),
            Barrier::All { token } => {
                let mut t: Vec<Option<NodeId>> = n.linked.iter().cloned().map(Some).collect();
                t.push(None);
                (t, Some(token))
            }
        };
        let mut waiting = BTreeSet::new();
        let mut owner = None;
        let mut unreachable = false;
        for t in &targets {
            match t {
                Some(o) if n.linked.contains(o) => {
                    waiting.insert(o.clone());
                    if token.is_none() {
                        owner = Some(o.clone());
                    }
                }
                Some(_) => unreachable = token.is_none(),
                None => {
                    waiting.insert(id.clone());
                }
            }
        }
        n.joins.insert(
            flush_id,
            JoinWait {
                key: key.clone(),
                started: self.now,
                waiting: waiting.clone(),
                token,
                owner,
                transitions: n.transitions.get(key).copied().unwrap_or(0),
            },
        );
        if unreachable {
            self.fallback(&id, flush_id);
            return;
        }
        if waiting.is_empty() {
            self.join_done(&id, flush_id);
            return;
        }
        for w in waiting {
            if w == id {
                self.flush(&id, id.clone(), flush_id);
            } else {
                self.send(&id, &w, Msg::Flush { id: flush_id });
            }
        }
    }

    /// The owner could not confirm a join (unreachable, or its link broke before it
    /// answered the flush): the member node tells every peer itself and flushes them all,
    /// so any sender caching the room has the member before the join is acknowledged.
    fn fallback(&mut self, node: &NodeId, flush_id: u64) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let peers: Vec<NodeId> = n.linked.iter().cloned().collect();
        let Some(j) = n.joins.get_mut(&flush_id) else {
            return;
        };
        j.owner = None;
        j.waiting = peers.iter().cloned().collect();
        let key = j.key.clone();
        if peers.is_empty() {
            self.join_done(node, flush_id);
            return;
        }
        for p in peers {
            self.send(
                node,
                &p,
                Msg::Hint {
                    key: key.clone(),
                    present: true,
                },
            );
            self.send(node, &p, Msg::Flush { id: flush_id });
        }
    }

    fn join_done(&mut self, node: &NodeId, flush_id: u64) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(j) = n.joins.remove(&flush_id) else {
            return;
        };
        if let Some(token) = j.token {
            n.agree.flushed_all(token);
        }
        let current = n.transitions.get(&j.key).copied().unwrap_or(0) == j.transitions;
        let member = current && n.local.get(&j.key).copied().unwrap_or(0) > 0;
        self.trace_event(Some(&j.key), || format!("{node} join acked"));
        if member {
            self.truth.entry(j.key).or_default().insert(node.clone());
        }
        self.stats.acked += 1;
        self.stats.ack_latency_us += self.now - j.started;
    }

    /// The last local socket of `node` in `key` leaves (or one of several does).
    pub fn leave(&mut self, node: &str, key: &RoomKey) {
        self.trace_event(Some(key), || format!("{node} leaves"));
        let id: NodeId = node.into();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(count) = n.local.get_mut(key) else {
            return;
        };
        self.stats.leaves += 1;
        *count -= 1;
        if *count == 0 {
            n.local.remove(key);
            *n.transitions.entry(key.clone()).or_default() += 1;
            n.listed(key, false);
            if let Some(t) = self.truth.get_mut(key) {
                t.remove(&id);
            }
            self.stats.transitions += 1;
            self.transition(&id, key, false);
        }
    }

    fn transition(&mut self, id: &NodeId, key: &RoomKey, present: bool) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        match n.agree.owner_of(key).map(NodeId::from) {
            None => {
                let notices = n.dir.local(key, present);
                self.notices(id, notices);
            }
            Some(owner) => self.send(
                id,
                &owner,
                Msg::Transition {
                    key: key.clone(),
                    present,
                },
            ),
        }
    }

    /// `from` broadcasts to `key`; checks the targets against the acknowledged members.
    pub fn broadcast(&mut self, from: &str, key: &RoomKey) {
        let id: NodeId = from.into();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        self.stats.broadcasts += 1;
        let truth = self.truth.get(key).cloned().unwrap_or_default();
        if !self.cold_everywhere {
            // Look cold rooms up first; hold the broadcast, and every later one of this node
            // (its order), until the answer is in.
            let ring = n.agree.ring().clone();
            let rooms = std::slice::from_ref(key);
            let mut lookups = Vec::new();
            for (k, owner) in n.cache.prepare(&n.dir, &ring, rooms) {
                if n.linked.contains(&owner) {
                    lookups.push((k, owner));
                } else {
                    n.cache.lookup_failed(&k);
                }
            }
            let hold = !n.held.is_empty() || n.cache.waiting(&n.dir, rooms);
            if hold {
                n.held.push_back((key.clone(), self.now, truth));
                self.stats.held += 1;
            }
            for (k, owner) in lookups {
                self.send(&id, &owner, Msg::Lookup { key: k });
            }
            if hold {
                return;
            }
            let truth = self.truth.get(key).cloned().unwrap_or_default();
            return self.send_broadcast(&id, key, truth);
        }
        self.send_broadcast(&id, key, truth);
    }

    /// Sends the held broadcasts of `id` whose lookups are answered, in order.
    fn release(&mut self, id: &NodeId) {
        loop {
            let Some(n) = self.nodes.get_mut(id) else {
                return;
            };
            let Some((key, _, _)) = n.held.front() else {
                return;
            };
            if n.cache.waiting(&n.dir, std::slice::from_ref(key)) {
                return;
            }
            let Some((key, at, truth)) = n.held.pop_front() else {
                return;
            };
            self.stats.hold_us += self.now - at;
            self.send_broadcast(id, &key, truth);
        }
    }

    /// Sends a broadcast of `id` to `key` now, and checks it reaches every node of `truth`
    /// (the acknowledged members when it was made) that still has members.
    fn send_broadcast(&mut self, id: &NodeId, key: &RoomKey, truth: BTreeSet<NodeId>) {
        let id = id.clone();
        let now_truth = self.truth.get(key).cloned().unwrap_or_default();
        let truth: BTreeSet<NodeId> = truth.intersection(&now_truth).cloned().collect();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let ring = n.agree.ring().clone();
        let t = n.cache.targets(&n.dir, &ring, std::slice::from_ref(key));
        let reach: BTreeSet<NodeId> = if t.all {
            self.stats.cold += 1;
            n.linked.clone()
        } else {
            t.nodes
                .iter()
                .filter(|x| n.linked.contains(*x))
                .cloned()
                .collect()
        };
        let missed = truth
            .iter()
            .any(|m| *m != id && n.linked.contains(m) && !reach.contains(m));
        if self.trace.as_ref() == Some(key) {
            self.log.push(format!(
                "{} {id} broadcasts: all={} reach={reach:?} truth={truth:?}",
                self.now, t.all
            ));
        }
        if missed {
            self.stats.lost += 1;
            if self.losses.len() < 8 {
                let cached = !t.all;
                self.losses.push(format!(
                    "t={} from={id} key={key:?} truth={truth:?} reach={reach:?} warm={cached}",
                    self.now
                ));
            }
        }
        let mut lookups = Vec::new();
        for (k, owner) in t.lookups {
            if n.linked.contains(&owner) {
                lookups.push((k, owner));
            } else {
                n.cache.lookup_failed(&k);
            }
        }
        for (k, owner) in lookups {
            self.send(&id, &owner, Msg::Lookup { key: k });
        }
        for to in reach {
            if to == id {
                continue;
            }
            // Counted, not delivered: what a copy does at its node is not simulated.
            self.stats.copies += 1;
            let has = self
                .nodes
                .get(&to)
                .is_some_and(|m| m.local.contains_key(key));
            if !has {
                self.stats.wasted_copies += 1;
            }
        }
    }

    /// Owner `owner` starts a flush for `requester`'s flush `flush_id`.
    fn flush(&mut self, owner: &NodeId, requester: NodeId, flush_id: u64) {
        let Some(n) = self.nodes.get_mut(owner) else {
            return;
        };
        let dirty: BTreeSet<NodeId> = n
            .dir
            .take_dirty()
            .into_iter()
            .filter(|d| n.linked.contains(d))
            .collect();
        let round = self.next_id;
        self.next_id += 1;
        n.rounds.insert(
            round,
            Round {
                waiting: dirty.clone(),
                replies: vec![(requester, flush_id)],
            },
        );
        for d in dirty {
            self.send(owner, &d, Msg::Ping { round });
        }
        self.complete_rounds(owner);
    }

    /// Completes the leading rounds whose pings are all answered.
    fn complete_rounds(&mut self, owner: &NodeId) {
        loop {
            let Some(n) = self.nodes.get_mut(owner) else {
                return;
            };
            let Some((&round, r)) = n.rounds.iter().next() else {
                return;
            };
            if !r.waiting.is_empty() {
                return;
            }
            let Some(r) = n.rounds.remove(&round) else {
                return;
            };
            for (to, id) in r.replies {
                if to == *owner {
                    self.flush_done(owner, owner.clone(), id);
                } else {
                    self.send(owner, &to, Msg::FlushDone { id });
                }
            }
        }
    }

    fn flush_done(&mut self, node: &NodeId, from: NodeId, id: u64) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let done = n
            .joins
            .get_mut(&id)
            .is_some_and(|j| j.waiting.remove(&from) && j.waiting.is_empty());
        if done {
            self.join_done(node, id);
        }
    }

    /// Runs events until `until` (virtual µs).
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(event) = self.events.remove(&seq) {
                self.handle(event);
            }
        }
        self.now = self.now.max(until);
    }

    /// Logs `line()` when tracing `key` (any room when `key` is `None`).
    fn trace_event(&mut self, key: Option<&RoomKey>, line: impl FnOnce() -> String) {
        let Some(t) = &self.trace else {
            return;
        };
        if key.is_none_or(|k| k == t) {
            let line = format!("{} {}", self.now, line());
            self.log.push(line);
        }
    }

    fn traced(&self, msg: &Msg) -> bool {
        let Some(t) = &self.trace else {
            return false;
        };
        match msg {
            Msg::Transition { key, .. }
            | Msg::Lookup { key }
            | Msg::Answer { key, .. }
            | Msg::Hint { key, .. } => key == t,
            Msg::ListRooms { keys } | Msg::Unsubscribe { keys } => keys.contains(t),
            Msg::Notice(Notice::Update { key, .. })
            | Msg::Notice(Notice::Invalidate { key, .. }) => key == t,
            _ => true,
        }
    }

    fn handle(&mut self, event: Event) {
        let Event::Deliver { from, to, gen, msg } = event;
        if self.traced(&msg) {
            let line = format!("{} {from}->{to} gen{gen} {msg:?}", self.now);
            self.log.push(line);
        }
        // Lost with its link.
        let link = self.links.get(&(from.clone(), to.clone()));
        if !link.is_some_and(|l| l.up && l.gen == gen) {
            return;
        }
        match msg {
            Msg::Flush { id } => return self.flush(&to, from, id),
            Msg::FlushDone { id } => return self.flush_done(&to, from, id),
            Msg::Ping { round } => return self.send(&to, &from, Msg::Pong { round }),
            Msg::Pong { round } => {
                if let Some(r) = self
                    .nodes
                    .get_mut(&to)
                    .and_then(|n| n.rounds.get_mut(&round))
                {
                    r.waiting.remove(&from);
                }
                return self.complete_rounds(&to);
            }
            _ => {}
        }
        let Some(n) = self.nodes.get_mut(&to) else {
            return;
        };
        let mut notices = Vec::new();
        let mut said = Vec::new();
        let mut replies = Vec::new();
        let mut drop = Vec::new();
        match msg {
            Msg::Hello { ring_id } | Msg::RingChanged { ring_id } => {
                notices = n.dir.peer_ring(&from, ring_id);
                said = n.agree.peer_ring(&from, ring_id);
            }
            Msg::Transition { key, present } => notices = n.dir.transition(&from, &key, present),
            Msg::ListStart => notices = n.dir.list_start(&from),
            Msg::ListRooms { keys } => notices = n.dir.list_rooms(&from, &keys),
            Msg::ListDone { ring_id } => notices = n.dir.list_done(&from, ring_id),
            Msg::Lookup { key } => {
                let answer = n.dir.lookup(&from, &key);
                replies.push(Msg::Answer { key, answer });
            }
            Msg::Answer { key, answer } => {
                let ring = n.agree.ring().clone();
                drop = n.cache.answered(&ring, &from, key, answer);
            }
            Msg::Unsubscribe { keys } => n.dir.unsubscribe(&from, &keys),
            Msg::Notice(Notice::Update {
                key, node, present, ..
            }) => {
                if !n.cache.update(&from, &key, &node, present) {
                    replies.push(Msg::Unsubscribe { keys: vec![key] });
                }
            }
            Msg::Notice(Notice::Synced { nodes, .. }) => n.cache.owner_synced(&from, nodes),
            Msg::Notice(Notice::Invalidate { key, .. }) => n.cache.invalidate(&from, &key),
            Msg::Hint { key, present } => n.cache.hint(&from, &key, present),
            Msg::Flush { .. } | Msg::FlushDone { .. } | Msg::Ping { .. } | Msg::Pong { .. } => {}
        }
        self.notices(&to, notices);
        self.say(&to, said);
        for reply in replies {
            self.send(&to, &from, reply);
        }
        self.unsubscribe(&to, drop);
        self.release(&to);
    }

    /// Per node: (directory heap bytes, cache heap bytes, cache entries).
    pub fn memory(&self) -> Vec<(NodeId, usize, usize, usize)> {
        self.nodes
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    n.dir.heap_bytes(),
                    n.cache.heap_bytes(),
                    n.cache.len(),
                )
            })
            .collect()
    }

    /// Summed cache counters of every node.
    pub fn cache_stats(&self) -> super::cache::CacheStats {
        let mut s = super::cache::CacheStats::default();
        for n in self.nodes.values() {
            let c = n.cache.stats();
            s.hits += c.hits;
            s.misses += c.misses;
            s.lookups += c.lookups;
            s.evictions += c.evictions;
            s.updates += c.updates;
        }
        s
    }

    /// The nodes with local members of `key` now.
    pub fn holders(&self, key: &RoomKey) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.local.contains_key(key))
            .map(|n| n.id.clone())
            .collect()
    }

    /// Joins still waiting for their barrier.
    pub fn pending_joins(&self) -> usize {
        self.nodes.values().map(|n| n.joins.len()).sum()
    }

    /// A random element of `0..n`.
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n.max(1))
    }
}

#[cfg(test)]
mod tests;
