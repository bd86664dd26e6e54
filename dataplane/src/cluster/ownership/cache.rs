//! The sender's side: a bounded cache of other owners' answers (which nodes have members
//! in a room), kept current by their pushes, and the choice of where a broadcast goes.
//!
//! A broadcast to rooms goes to the union, over its rooms, of:
//! - rooms this node owns: its directory's members;
//! - cached rooms: the cached members;
//! - in both cases, every linked peer that is not synced at the room's owner (its
//!   memberships there may be incomplete: a list not finished, another ring, a new node);
//! - a room named after a socket id: that socket's node;
//! - anything else (a *cold* room): every peer, and a lookup is sent to the owner so that
//!   the next broadcast is exact. Never too few, one hop, on the same ordered links.
//!
//! The cache holds at most `capacity` rooms; past that the least recently used of a few
//! sampled entries is evicted (approximate LRU, as Redis does) and its owner is told to stop
//! pushing. Everything is plain data; the mesh sends what the methods return.

use std::collections::{BTreeSet, HashMap, HashSet};

use indexmap::IndexMap;

use super::directory::{Answer, Directory};
use super::{Interner, NodeId, NodeSet, RoomKey};
use crate::cluster::ring::Ring;
use crate::engine::sid::owner_of;

/// Entries compared per eviction.
const EVICTION_SAMPLES: usize = 8;

#[derive(Debug)]
struct Cached {
    owner: NodeId,
    members: NodeSet,
    used: u64,
}

/// Counters of the cache, for metrics and the simulation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Rooms of broadcasts answered from the cache (or this node's own directory).
    pub hits: u64,
    /// Rooms of broadcasts that were cold (sent to every peer).
    pub misses: u64,
    pub lookups: u64,
    pub evictions: u64,
    /// Pushed changes applied.
    pub updates: u64,
}

/// Where one broadcast goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// A cold room: every peer in routing.
    pub all: bool,
    /// Otherwise these nodes (this one included when it has members).
    pub nodes: BTreeSet<NodeId>,
    /// Lookups to send: (room, its owner).
    pub lookups: Vec<(RoomKey, NodeId)>,
}

/// The cache of one sender.
#[derive(Debug)]
pub struct RoomCache {
    me: NodeId,
    capacity: usize,
    ids: Interner,
    entries: IndexMap<RoomKey, Cached>,
    /// Lookups in flight, by room: the owner asked.
    pending: HashMap<RoomKey, NodeId>,
    /// Per owner, the nodes synced there, sorted (its last word on it).
    synced: HashMap<NodeId, Vec<NodeId>>,
    /// Peers in routing.
    linked: BTreeSet<NodeId>,
    tick: u64,
    rng: u64,
    stats: CacheStats,
}

impl RoomCache {
    pub fn new(me: &str, capacity: usize) -> Self {
        let mut ids = Interner::default();
        Self {
            me: ids.get(me),
            capacity: capacity.max(1),
            ids,
            entries: IndexMap::new(),
            pending: HashMap::new(),
            synced: HashMap::new(),
            linked: BTreeSet::new(),
            tick: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where a broadcast to `rooms` goes. `dir` answers the rooms this node owns.
    pub fn targets(&mut self, dir: &Directory, ring: &Ring, rooms: &[RoomKey]) -> Targets {
        let mut t = Targets::default();
        if rooms.is_empty() {
            t.all = true;
            return t;
        }
        self.tick += 1;
        for key in rooms {
            if let Some(node) = owner_of(&key.room) {
                t.nodes.insert(self.ids.get(&node));
                continue;
            }
            if let Some((members, synced)) = dir.targets(key) {
                self.stats.hits += 1;
                t.nodes.extend(members);
                add_unsynced(&mut t.nodes, &self.linked, synced);
                continue;
            }
            if let Some(c) = self.entries.get_mut(key) {
                c.used = self.tick;
                self.stats.hits += 1;
                t.nodes.extend(c.members.iter().cloned());
                let synced = self.synced.get(&c.owner).map(Vec::as_slice).unwrap_or(&[]);
                add_unsynced(&mut t.nodes, &self.linked, synced);
                continue;
            }
            self.stats.misses += 1;
            t.all = true;
            t.lookups.extend(self.start_lookup(ring, key));
        }
        if t.all {
            t.nodes.clear();
        }
        t
    }

    /// Whether a room of `rooms` is cold with its lookup in flight. A sender that does not
    /// send cold broadcasts everywhere holds such a broadcast (and, to keep its order, every
    /// later one) until the answers are in: see [`RoomCache::prepare`].
    pub fn waiting(&self, dir: &Directory, rooms: &[RoomKey]) -> bool {
        rooms
            .iter()
            .any(|key| self.is_cold(dir, key) && self.pending.contains_key(key))
    }

    /// Neither a socket's room, nor owned here, nor cached.
    fn is_cold(&self, dir: &Directory, key: &RoomKey) -> bool {
        owner_of(&key.room).is_none() && !dir.owns(key) && !self.entries.contains_key(key)
    }

    /// Registers a lookup of `key` at its owner, unless one is in flight (or the ring is
    /// empty); returns it, to send.
    fn start_lookup(&mut self, ring: &Ring, key: &RoomKey) -> Option<(RoomKey, NodeId)> {
        if self.pending.contains_key(key) {
            return None;
        }
        let owner = self.ids.get(ring.owner(&key.nsp, &key.room)?);
        self.pending.insert(key.clone(), owner.clone());
        self.stats.lookups += 1;
        Some((key.clone(), owner))
    }

    /// For a sender that looks cold rooms up before sending: the lookups to send for the cold
    /// rooms of `rooms` that have none in flight (registered as pending). Counts nothing;
    /// [`RoomCache::targets`] counts the broadcast when it is sent.
    pub fn prepare(
        &mut self,
        dir: &Directory,
        ring: &Ring,
        rooms: &[RoomKey],
    ) -> Vec<(RoomKey, NodeId)> {
        let mut lookups = Vec::new();
        for key in rooms {
            if self.is_cold(dir, key) {
                lookups.extend(self.start_lookup(ring, key));
            }
        }
        lookups
    }

    /// `owner` answered the lookup of `key`. Returns rooms to unsubscribe from at `owner`
    /// (the answer came too late: the ring moved the room meanwhile) and rooms evicted to
    /// make place, each with its owner.
    pub fn answered(
        &mut self,
        ring: &Ring,
        owner: &str,
        key: RoomKey,
        answer: Answer,
    ) -> Vec<(RoomKey, NodeId)> {
        if self.pending.get(&key).is_some_and(|o| **o == *owner) {
            self.pending.remove(&key);
        }
        let Answer::Known { members, synced } = answer else {
            return Vec::new();
        };
        let owner_id = self.ids.get(owner);
        if ring.owner(&key.nsp, &key.room) != Some(owner) {
            return vec![(key, owner_id)];
        }
        self.synced.insert(owner_id.clone(), synced);
        let mut evicted = Vec::new();
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                match self.evict_one() {
                    Some(e) => evicted.push(e),
                    None => break,
                }
            }
        }
        let members = members.iter().collect();
        self.entries.insert(
            key,
            Cached {
                owner: owner_id,
                members,
                used: self.tick,
            },
        );
        evicted
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: reproducible sampling, no global state.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn evict_one(&mut self) -> Option<(RoomKey, NodeId)> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let mut oldest: Option<(usize, u64)> = None;
        for _ in 0..EVICTION_SAMPLES.min(len) {
            let i = (self.next_random() % len as u64) as usize;
            let used = self.entries.get_index(i).map(|(_, c)| c.used).unwrap_or(0);
            if oldest.is_none_or(|(_, u)| used < u) {
                oldest = Some((i, used));
            }
        }
        let (i, _) = oldest?;
        let (key, c) = self.entries.swap_remove_index(i)?;
        self.stats.evictions += 1;
        Some((key, c.owner))
    }

    /// The lookup of `key` could not be sent (its owner is not linked): a later broadcast
    /// may try again.
    pub fn lookup_failed(&mut self, key: &RoomKey) {
        self.pending.remove(key);
    }

    /// `owner` pushed a change of `key`. Applied if the room is cached from `owner`; false
    /// when `owner` should be told to stop (the room is neither cached from it nor being
    /// looked up there: an unsubscribe now cannot cancel a lookup's subscription).
    pub fn update(&mut self, owner: &str, key: &RoomKey, node: &str, present: bool) -> bool {
        let Some(c) = self.entries.get_mut(key).filter(|c| *c.owner == *owner) else {
            return self.pending.get(key).is_some_and(|o| **o == *owner);
        };
        self.stats.updates += 1;
        set_member(&mut self.ids, c, node, present);
        true
    }

    /// `node` says itself that it has (or no longer has) members in `key`: its owner could
    /// not confirm it. Applied to the cached answer, whoever its owner.
    pub fn hint(&mut self, node: &str, key: &RoomKey, present: bool) {
        if let Some(c) = self.entries.get_mut(key) {
            set_member(&mut self.ids, c, node, present);
        }
    }

    /// `owner` says which nodes are synced there now (sorted).
    pub fn owner_synced(&mut self, owner: &str, nodes: Vec<NodeId>) {
        let id = self.ids.get(owner);
        self.synced.insert(id, nodes);
    }

    /// A link to `peer` is up: it is in routing.
    pub fn link_up(&mut self, peer: &str) {
        let id = self.ids.get(peer);
        self.linked.insert(id);
    }

    /// `owner` no longer owns `key`.
    pub fn invalidate(&mut self, owner: &str, key: &RoomKey) {
        if self.entries.get(key).is_some_and(|c| *c.owner == *owner) {
            self.entries.swap_remove(key);
        }
    }

    /// The link to `owner` is down: it is out of routing, and nothing it said as an owner
    /// holds any more (it forgot our subscriptions, and it may restart with an empty directory).
    pub fn link_down(&mut self, owner: &str) {
        self.linked.remove(owner);
        self.forget_owner(owner);
    }

    /// Nothing `owner` said holds any more (it missed pushing us a change and dropped our
    /// subscriptions): its rooms are cold again.
    pub fn forget_owner(&mut self, owner: &str) {
        self.entries.retain(|_, c| *c.owner != *owner);
        self.pending.retain(|_, o| **o != *owner);
        self.synced.remove(owner);
    }

    /// This node's ring changed: entries whose owner changed are dropped; returns them with
    /// their old owner, to unsubscribe there.
    pub fn ring_changed(&mut self, ring: &Ring) -> Vec<(RoomKey, NodeId)> {
        let mut moved = Vec::new();
        self.entries.retain(|key, c| {
            let keep = ring.owner(&key.nsp, &key.room) == Some(&*c.owner);
            if !keep {
                moved.push((key.clone(), c.owner.clone()));
            }
            keep
        });
        self.pending.clear();
        let members: HashSet<&str> = ring.members().iter().map(String::as_str).collect();
        self.synced.retain(|o, _| members.contains(&**o));
        moved
    }

    /// Heap bytes: the table's slots plus what entries hold (ids are shared).
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(RoomKey, Cached)>() + std::mem::size_of::<usize>() * 2;
        self.entries.capacity() * slot
            + self
                .entries
                .iter()
                .map(|(k, c)| k.heap_bytes() + c.members.heap_bytes())
                .sum::<usize>()
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }
}

/// Adds `node` to (or removes it from) the members of a cached answer.
fn set_member(ids: &mut Interner, c: &mut Cached, node: &str, present: bool) {
    if present {
        c.members.insert(&ids.get(node));
    } else {
        c.members.remove(node);
    }
}

/// Adds the peers of `linked` that are not in `synced` (sorted).
fn add_unsynced(nodes: &mut BTreeSet<NodeId>, linked: &BTreeSet<NodeId>, synced: &[NodeId]) {
    for peer in linked {
        if synced.binary_search(peer).is_err() {
            nodes.insert(peer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ownership::testing::{owns, ring, room_where};

    fn room_of(ring: &Ring, owner: &str, prefix: &str) -> RoomKey {
        room_where("/", prefix, |k| owns(ring, k, owner))
    }

    fn known(members: &[&str], synced: &[&str]) -> Answer {
        Answer::Known {
            members: members.iter().map(|m| NodeId::from(*m)).collect(),
            synced: synced.iter().map(|m| NodeId::from(*m)).collect(),
        }
    }

    fn names(t: &Targets) -> Vec<&str> {
        t.nodes.iter().map(|n| &**n).collect()
    }

    #[test]
    fn cold_rooms_go_everywhere_once_then_exactly() {
        let r = ring(4);
        let dir = Directory::new("hub-0", r.clone());
        let mut c = RoomCache::new("hub-0", 10);
        for p in ["hub-1", "hub-2", "hub-3"] {
            c.link_up(p);
        }
        let key = room_of(&r, "hub-1", "a");
        let t = c.targets(&dir, &r, std::slice::from_ref(&key));
        assert!(t.all);
        assert_eq!(t.lookups, vec![(key.clone(), NodeId::from("hub-1"))]);
        // A second broadcast before the answer: still everywhere, no second lookup.
        let t = c.targets(&dir, &r, std::slice::from_ref(&key));
        assert!(t.all && t.lookups.is_empty());
        assert!(c
            .answered(
                &r,
                "hub-1",
                key.clone(),
                known(&["hub-2"], &["hub-1", "hub-2"])
            )
            .is_empty());
        let t = c.targets(&dir, &r, std::slice::from_ref(&key));
        assert!(!t.all);
        assert_eq!(names(&t), ["hub-2", "hub-3"]);
        // Pushed changes.
        assert!(c.update("hub-1", &key, "hub-1", true));
        c.owner_synced(
            "hub-1",
            vec!["hub-1".into(), "hub-2".into(), "hub-3".into()],
        );
        assert_eq!(
            names(&c.targets(&dir, &r, std::slice::from_ref(&key))),
            ["hub-1", "hub-2"]
        );
        assert!(
            !c.update("hub-2", &key, "hub-3", true),
            "not from its owner"
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.lookups, s.updates), (2, 2, 1, 1));
    }

    #[test]
    fn multi_room_targets_are_a_union_and_socket_rooms_name_their_node() {
        let r = ring(4);
        let dir = Directory::new("hub-0", r.clone());
        let mut c = RoomCache::new("hub-0", 10);
        let a = room_of(&r, "hub-1", "a");
        let b = room_of(&r, "hub-2", "b");
        c.answered(&r, "hub-1", a.clone(), known(&["hub-3"], &[]));
        c.answered(&r, "hub-2", b.clone(), known(&["hub-3", "hub-1"], &[]));
        let sid = crate::engine::sid::SidGenerator::new("hub-2").session_id();
        let sock = RoomKey::new("/", &crate::engine::sid::socket_id(&sid));
        let t = c.targets(&dir, &r, &[a, b, sock]);
        assert_eq!(names(&t), ["hub-1", "hub-2", "hub-3"]);
        assert!(c.targets(&dir, &r, &[]).all, "the whole namespace");
    }

    #[test]
    fn bounded_with_eviction_of_the_least_recently_used() {
        let r = ring(3);
        let dir = Directory::new("hub-0", r.clone());
        let mut c = RoomCache::new("hub-0", 4);
        let keys: Vec<RoomKey> = (0..5)
            .map(|i| room_of(&r, "hub-1", &format!("k{i}-")))
            .collect();
        for k in &keys[..4] {
            assert!(c
                .answered(&r, "hub-1", k.clone(), known(&[], &[]))
                .is_empty());
        }
        // Use all but keys[0]; an eviction samples 4 of 4 entries, so it picks keys[0].
        for k in &keys[1..4] {
            c.targets(&dir, &r, std::slice::from_ref(k));
        }
        let evicted = c.answered(&r, "hub-1", keys[4].clone(), known(&[], &[]));
        assert_eq!(evicted, vec![(keys[0].clone(), NodeId::from("hub-1"))]);
        assert_eq!(c.len(), 4);
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn late_answers_ring_changes_and_owner_loss_drop_entries() {
        let r3 = ring(3);
        let r4 = ring(4);
        let dir = Directory::new("hub-0", r4.clone());
        let mut c = RoomCache::new("hub-0", 10);
        let moved = room_where("/", "m", |k| owns(&r3, k, "hub-1") && owns(&r4, k, "hub-3"));
        // An answer from the old owner, arriving after the ring moved the room.
        assert_eq!(
            c.answered(&r4, "hub-1", moved.clone(), known(&[], &[])),
            vec![(moved.clone(), NodeId::from("hub-1"))]
        );
        assert!(c.is_empty());
        c.answered(&r3, "hub-1", moved.clone(), known(&["hub-2"], &[]));
        assert_eq!(
            c.ring_changed(&r4),
            vec![(moved.clone(), NodeId::from("hub-1"))]
        );
        assert!(c.targets(&dir, &r4, std::slice::from_ref(&moved)).all);
        let kept = room_of(&r4, "hub-2", "k");
        c.answered(&r4, "hub-2", kept.clone(), known(&["hub-1"], &[]));
        c.link_down("hub-2");
        assert!(c.targets(&dir, &r4, std::slice::from_ref(&kept)).all);
        c.answered(&r4, "hub-2", kept.clone(), known(&["hub-1"], &[]));
        c.invalidate("hub-2", &kept);
        assert!(c.is_empty());
    }
}
