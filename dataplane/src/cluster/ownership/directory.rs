//! The owner's side: for the rooms this node owns, which nodes have members and which
//! nodes cache that answer. Pure data; every method returns the notices to send.
//!
//! A peer's memberships arrive as transitions (first member joined, last one left) and as
//! full lists, sent whenever the peer and this node agree on the ring. The peer is *synced*
//! link. Answers name the synced nodes (this owner among them); any other node a sender is
//! linked to (not synced, not linked here, not even in this node's ring yet) may have
//! members this owner does not know of, so the sender sends it every broadcast to this
//! owner's rooms.
//!
//! Memberships are kept for any room a peer reports, owned or not: a peer ahead of this
//! node on the ring reports rooms this node is about to own. Only owned rooms are answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Interner, NodeId, NodeSet, RoomKey};
use crate::cluster::ring::Ring;

/// What a sender learns from a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This node does not own the room under its ring: the sender must not cache anything.
    NotOwner,
    /// The asker holds as many subscriptions here as this node allows one peer
    /// ([`Directory::limit_subscriptions`]): it must not cache the room, and keeps
    /// sending its broadcasts everywhere. Bounds what one peer can make an owner hold.
    Full,
    /// The nodes with members (the asker excluded) and, sorted, the nodes whose memberships
    /// here are complete (this owner included). The asker is now subscribed to the room.
    Known {
        members: Vec<NodeId>,
        synced: Vec<NodeId>,
    },
}

/// A message the owner must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `node` now has (or no longer has) members in `key`.
    Update {
        to: NodeId,
        key: RoomKey,
        node: NodeId,
        present: bool,
    },
    /// The nodes synced at this owner now, sorted (the set replaces the last one).
    Synced { to: NodeId, nodes: Vec<NodeId> },
    /// This node no longer owns `key`: forget the cached answer.
    Invalidate { to: NodeId, key: RoomKey },
}

#[derive(Debug, Default)]
struct Entry {
    members: NodeSet,
    subscribers: NodeSet,
}

#[derive(Debug, Default)]
struct PeerState {
    /// The ring the peer last said it holds.
    ring: Option<u64>,
    /// The ring of the peer's last complete list on the current link.
    listed: Option<u64>,
    /// While a list arrives: the rooms the peer had here that the list has not named yet.
    unlisted: Option<BTreeSet<RoomKey>>,
}

/// Subscriptions one peer may hold at an owner by default: twice the default sender cache,
/// so an honest peer never reaches it.
pub const DEFAULT_SUBSCRIPTIONS_PER_PEER: usize = 2 * 65_536;

/// This node's directory of the rooms it owns.
#[derive(Debug)]
pub struct Directory {
    me: NodeId,
    ring: Ring,
    ring_id: u64,
    ids: Interner,
    rooms: HashMap<RoomKey, Entry>,
    /// Linked peers.
    peers: HashMap<NodeId, PeerState>,
    /// Subscriptions held per subscriber node (ordered, so notices go out in one order).
    subscriptions: BTreeMap<NodeId, usize>,
    /// The most one subscriber may hold.
    max_subscriptions: usize,
    /// The synced set subscribers were last told.
    told_synced: Vec<NodeId>,
    /// Subscribers sent a notice since the last [`Directory::take_dirty`].
    dirty: BTreeSet<NodeId>,
}

impl Directory {
    pub fn new(me: &str, ring: Ring) -> Self {
        let mut ids = Interner::default();
        let ring_id = ring.id();
        let mut dir = Self {
            me: ids.get(me),
            ring,
            ring_id,
            ids,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            subscriptions: BTreeMap::new(),
            max_subscriptions: DEFAULT_SUBSCRIPTIONS_PER_PEER,
            told_synced: Vec::new(),
            dirty: BTreeSet::new(),
        };
        dir.told_synced = dir.synced_set();
        dir
    }

    /// At most `max` subscriptions per peer from now on (see [`Answer::Full`]).
    pub fn limit_subscriptions(&mut self, max: usize) {
        self.max_subscriptions = max;
    }

    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// Whether this node owns `key` under its ring.
    pub fn owns(&self, key: &RoomKey) -> bool {
        self.ring.owner(&key.nsp, &key.room) == Some(&*self.me)
    }

    fn is_synced(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| {
            p.ring == Some(self.ring_id) && p.listed == Some(self.ring_id) && p.unlisted.is_none()
        })
    }

    /// This node and the peers whose memberships here are complete, sorted.
    fn synced_set(&self) -> Vec<NodeId> {
        let mut set: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|p| self.is_synced(p))
            .cloned()
            .chain([self.me.clone()])
            .collect();
        set.sort();
        set
    }

    /// After anything that may change who is synced: the new set for every subscriber.
    fn synced_changed(&mut self, out: &mut Vec<Notice>) {
        let now = self.synced_set();
        if now == self.told_synced {
            return;
        }
        self.told_synced = now;
        for to in self.subscriptions.keys() {
            out.push(Notice::Synced {
                to: to.clone(),
                nodes: self.told_synced.clone(),
            });
            self.dirty.insert(to.clone());
        }
    }

    /// Sets `node`'s membership of `key`, telling the room's subscribers if it changed.
    fn set_member(&mut self, key: &RoomKey, node: &NodeId, present: bool, out: &mut Vec<Notice>) {
        let changed = if present {
            self.rooms
                .entry(key.clone())
                .or_default()
                .members
                .insert(node)
        } else {
            match self.rooms.get_mut(key) {
                Some(e) => {
                    let removed = e.members.remove(node);
                    if e.members.is_empty() && e.subscribers.is_empty() {
                        self.rooms.remove(key);
                    }
                    removed
                }
                None => false,
            }
        };
        if !changed {
            return;
        }
        if let Some(e) = self.rooms.get(key) {
            for to in e.subscribers.iter().filter(|s| **s != *node) {
                out.push(Notice::Update {
                    to: to.clone(),
                    key: key.clone(),
                    node: node.clone(),
                    present,
                });
                self.dirty.insert(to.clone());
            }
        }
    }

    /// This node's own first member joined `key`, or its last one left.
    pub fn local(&mut self, key: &RoomKey, present: bool) -> Vec<Notice> {
        let mut out = Vec::new();
        let me = self.me.clone();
        self.set_member(key, &me, present, &mut out);
        out
    }

    /// `peer` says its first member joined `key`, or its last one left.
    pub fn transition(&mut self, peer: &str, key: &RoomKey, present: bool) -> Vec<Notice> {
        let mut out = Vec::new();
        let node = self.ids.get(peer);
        if let Some(unlisted) = self.peers.get_mut(peer).and_then(|p| p.unlisted.as_mut()) {
            unlisted.remove(key);
        }
        self.set_member(key, &node, present, &mut out);
        out
    }

    /// A link to `peer` is up: it is unsynced until its list for the common ring arrives.
    pub fn link_up(&mut self, peer: &str) -> Vec<Notice> {
        let id = self.ids.get(peer);
        self.peers.insert(id, PeerState::default());
        let mut out = Vec::new();
        self.synced_changed(&mut out);
        out
    }

    /// The link to `peer` is down: it is unsynced, and nothing it subscribed to is kept.
    /// Its memberships stay until its next list says otherwise (a relink with the same
    /// rooms costs no updates) or it leaves the ring.
    pub fn link_down(&mut self, peer: &str) -> Vec<Notice> {
        self.peers.remove(peer);
        self.drop_subscriber(peer);
        let mut out = Vec::new();
        self.synced_changed(&mut out);
        out
    }

    /// `peer` missed a push (its queue was full): it is told to forget every answer of
    /// this node ([`RoomCache::forget_owner`]), and its subscriptions here go.
    ///
    /// [`RoomCache::forget_owner`]: super::cache::RoomCache::forget_owner
    pub fn forget_subscriber(&mut self, peer: &str) {
        self.drop_subscriber(peer);
    }

    fn drop_subscriber(&mut self, peer: &str) {
        if self.subscriptions.remove(peer).is_none() {
            return;
        }
        self.dirty.remove(peer);
        self.rooms.retain(|_, e| {
            e.subscribers.remove(peer);
            !(e.members.is_empty() && e.subscribers.is_empty())
        });
    }

    /// `peer` holds the ring `ring_id` now (it said so on the link).
    pub fn peer_ring(&mut self, peer: &str, ring_id: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(p) = self.peers.get_mut(peer) {
            p.ring = Some(ring_id);
            self.synced_changed(&mut out);
        }
        out
    }

    /// `peer` starts its full list (for the ring it holds): what it had here and does not
    /// list again is removed when the list ends.
    pub fn list_start(&mut self, peer: &str) -> Vec<Notice> {
        let mut out = Vec::new();
        let had: BTreeSet<RoomKey> = self
            .rooms
            .iter()
            .filter(|(_, e)| e.members.contains(peer))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(p) = self.peers.get_mut(peer) {
            p.listed = None;
            p.unlisted = Some(had);
            self.synced_changed(&mut out);
        }
        out
    }

    /// A part of `peer`'s list: it has members in `keys`.
    pub fn list_rooms(&mut self, peer: &str, keys: &[RoomKey]) -> Vec<Notice> {
        let mut out = Vec::new();
        for key in keys {
            out.extend(self.transition(peer, key, true));
        }
        out
    }

    /// `peer`'s list for ring `ring_id` is complete.
    pub fn list_done(&mut self, peer: &str, ring_id: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        let Some(p) = self.peers.get_mut(peer) else {
            return out;
        };
        let stale = p.unlisted.take().unwrap_or_default();
        p.listed = Some(ring_id);
        let node = self.ids.get(peer);
        for key in stale {
            self.set_member(&key, &node, false, &mut out);
        }
        self.synced_changed(&mut out);
        out
    }

    /// The ring changed here: rooms no longer owned are forgotten (their subscribers told),
    /// members that left the ring are forgotten, and every peer is unsynced until its list
    /// for the new ring arrives.
    pub fn ring_changed(&mut self, ring: Ring) -> Vec<Notice> {
        let mut out = Vec::new();
        self.ring = ring;
        self.ring_id = self.ring.id();
        let ring = &self.ring;
        let me = &*self.me;
        let mut dropped = Vec::new();
        self.rooms.retain(|key, e| {
            let members_left: Vec<NodeId> = e
                .members
                .iter()
                .filter(|m| !ring.contains(m))
                .cloned()
                .collect();
            for m in members_left {
                e.members.remove(&m);
            }
            let owned = ring.owner(&key.nsp, &key.room) == Some(me);
            if !owned && !e.subscribers.is_empty() {
                dropped.push((key.clone(), std::mem::take(&mut e.subscribers)));
            }
            !e.members.is_empty() || (owned && !e.subscribers.is_empty())
        });
        dropped.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, subscribers) in dropped {
            for to in subscribers.iter() {
                if let Some(n) = self.subscriptions.get_mut(to) {
                    *n = n.saturating_sub(1);
                }
                out.push(Notice::Invalidate {
                    to: to.clone(),
                    key: key.clone(),
                });
                self.dirty.insert(to.clone());
            }
        }
        self.subscriptions.retain(|_, n| *n > 0);
        self.synced_changed(&mut out);
        out
    }

    /// `from` asks who has members in `key`; it is subscribed to the room's changes.
    pub fn lookup(&mut self, from: &str, key: &RoomKey) -> Answer {
        if !self.owns(key) {
            return Answer::NotOwner;
        }
        let from_id = self.ids.get(from);
        let held = self.subscriptions.get(from).copied().unwrap_or(0);
        let subscribed = self
            .rooms
            .get(key)
            .is_some_and(|e| e.subscribers.contains(from));
        if !subscribed && held >= self.max_subscriptions {
            return Answer::Full;
        }
        let e = self.rooms.entry(key.clone()).or_default();
        if e.subscribers.insert(&from_id) {
            *self.subscriptions.entry(from_id).or_default() += 1;
        }
        let members = e
            .members
            .iter()
            .filter(|m| ***m != *from)
            .cloned()
            .collect();
        Answer::Known {
            members,
            synced: self.told_synced.clone(),
        }
    }

    /// `from` no longer caches `keys`.
    pub fn unsubscribe(&mut self, from: &str, keys: &[RoomKey]) {
        for key in keys {
            let Some(e) = self.rooms.get_mut(key) else {
                continue;
            };
            if e.subscribers.remove(from) {
                if let Some(n) = self.subscriptions.get_mut(from) {
                    *n -= 1;
                    if *n == 0 {
                        self.subscriptions.remove(from);
                    }
                }
            }
            if e.members.is_empty() && e.subscribers.is_empty() {
                self.rooms.remove(key);
            }
        }
    }

    /// The nodes with members in `key` (this one included) and the synced nodes, when this
    /// node owns it.
    pub fn targets(&self, key: &RoomKey) -> Option<(Vec<NodeId>, &[NodeId])> {
        if !self.owns(key) {
            return None;
        }
        let members = self
            .rooms
            .get(key)
            .map(|e| e.members.iter().cloned().collect())
            .unwrap_or_default();
        Some((members, &self.told_synced))
    }

    /// The subscribers told something since the last call: an owner's flush waits until
    /// each of them confirmed it applied everything (a ping on the same ordered link).
    pub fn take_dirty(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Rooms with an entry (owned or reported), and subscriptions held.
    pub fn len(&self) -> (usize, usize) {
        (self.rooms.len(), self.subscriptions.values().sum())
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Heap bytes of the directory: the table's slots (at capacity) plus what entries hold.
    pub fn heap_bytes(&self) -> usize {
        // The table allocates a power of two of buckets for 7/8 of them in use, each with a
        // control byte.
        let slot = std::mem::size_of::<(RoomKey, Entry)>() + 1;
        let buckets = match self.rooms.capacity() {
            0 => 0,
            cap => (cap * 8 / 7).next_power_of_two(),
        };
        buckets * slot
            + self
                .rooms
                .iter()
                .map(|(k, e)| k.heap_bytes() + e.members.heap_bytes() + e.subscribers.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ownership::testing::{owns, ring, room_where};

    /// A room `me` owns in `ring`.
    fn owned_by(ring: &Ring, me: &str) -> RoomKey {
        room_where("/", "room-", |k| owns(ring, k, me))
    }

    fn synced_dir(n: usize) -> Directory {
        let r = ring(n);
        let mut d = Directory::new("hub-0", r.clone());
        for i in 1..n {
            let p = format!("hub-{i}");
            d.link_up(&p);
            d.peer_ring(&p, r.id());
            d.list_start(&p);
            d.list_done(&p, r.id());
        }
        d
    }

    fn ids(v: &[NodeId]) -> Vec<&str> {
        v.iter().map(|n| &**n).collect()
    }

    #[test]
    fn answers_members_and_synced_and_pushes_changes() {
        let mut d = synced_dir(3);
        let r = ring(3);
        let key = owned_by(&r, "hub-0");
        assert!(
            d.transition("hub-1", &key, true).is_empty(),
            "no subscriber yet"
        );
        let Answer::Known { members, synced } = d.lookup("hub-2", &key) else {
            panic!("owned")
        };
        assert_eq!(ids(&members), ["hub-1"]);
        assert_eq!(ids(&synced), ["hub-0", "hub-1", "hub-2"]);
        // A join elsewhere is pushed to the subscriber, not to the node that joined.
        let out = d.transition("hub-2", &key, true);
        assert!(out.is_empty(), "the subscriber itself joined: {out:?}");
        let out = d.local(&key, true);
        assert_eq!(
            out,
            vec![Notice::Update {
                to: "hub-2".into(),
                key: key.clone(),
                node: "hub-0".into(),
                present: true
            }]
        );
        assert_eq!(d.take_dirty(), vec![NodeId::from("hub-2")]);
        assert!(d.take_dirty().is_empty());
        let (members, _) = d.targets(&key).unwrap();
        assert_eq!(ids(&members), ["hub-0", "hub-1", "hub-2"]);
    }

    #[test]
    fn a_room_owned_elsewhere_is_not_answered() {
        let mut d = synced_dir(3);
        let key = owned_by(&ring(3), "hub-1");
        assert_eq!(d.lookup("hub-2", &key), Answer::NotOwner);
        assert_eq!(d.targets(&key), None);
    }

    #[test]
    fn a_peer_is_unsynced_until_its_list_for_the_common_ring_is_complete() {
        let r = ring(3);
        let mut d = Directory::new("hub-0", r.clone());
        let key = owned_by(&r, "hub-0");
        let Answer::Known { synced, .. } = d.lookup("hub-2", &key) else {
            panic!()
        };
        assert_eq!(ids(&synced), ["hub-0"], "nobody linked yet");
        d.link_up("hub-1");
        d.list_start("hub-1");
        d.list_rooms("hub-1", std::slice::from_ref(&key));
        let out = d.list_done("hub-1", r.id());
        assert!(
            !out.iter()
                .any(|n| matches!(n, Notice::Synced { nodes, .. } if nodes.len() > 1)),
            "the ring of hub-1 is not known yet: {out:?}"
        );
        let out = d.peer_ring("hub-1", r.id());
        assert_eq!(
            out,
            vec![Notice::Synced {
                to: "hub-2".into(),
                nodes: vec!["hub-0".into(), "hub-1".into()]
            }]
        );
        // A peer on another ring is unsynced again.
        let out = d.peer_ring("hub-1", 42);
        assert_eq!(
            out,
            vec![Notice::Synced {
                to: "hub-2".into(),
                nodes: vec!["hub-0".into()]
            }]
        );
    }

    #[test]
    fn a_list_replaces_what_the_peer_had() {
        let mut d = synced_dir(3);
        let r = ring(3);
        let a = owned_by(&r, "hub-0");
        let b = room_where("/chat", "r", |k| owns(&r, k, "hub-0"));
        d.transition("hub-1", &a, true);
        d.lookup("hub-2", &a);
        d.lookup("hub-2", &b);
        d.take_dirty();
        // hub-1 relinks; its list names b, not a.
        d.link_down("hub-1");
        d.link_up("hub-1");
        d.peer_ring("hub-1", r.id());
        d.list_start("hub-1");
        let out = d.list_rooms("hub-1", std::slice::from_ref(&b));
        assert!(out.contains(&Notice::Update {
            to: "hub-2".into(),
            key: b.clone(),
            node: "hub-1".into(),
            present: true
        }));
        let out = d.list_done("hub-1", r.id());
        assert!(out.contains(&Notice::Update {
            to: "hub-2".into(),
            key: a.clone(),
            node: "hub-1".into(),
            present: false
        }));
        assert!(out.contains(&Notice::Synced {
            to: "hub-2".into(),
            nodes: vec!["hub-0".into(), "hub-1".into(), "hub-2".into()]
        }));
        assert!(d.targets(&a).unwrap().0.is_empty());
    }

    #[test]
    fn a_ring_change_invalidates_moved_rooms_and_unsyncs_everyone() {
        let mut d = synced_dir(3);
        let r3 = ring(3);
        let r4 = ring(4);
        // A room hub-0 owns with 3 members and hub-3 owns with 4.
        let moved = room_where("/", "m", |k| owns(&r3, k, "hub-0") && owns(&r4, k, "hub-3"));
        let kept = owned_by(&r4, "hub-0");
        d.transition("hub-1", &moved, true);
        d.lookup("hub-2", &moved);
        d.lookup("hub-2", &kept);
        let out = d.ring_changed(r4.clone());
        assert!(out.contains(&Notice::Invalidate {
            to: "hub-2".into(),
            key: moved.clone()
        }));
        assert!(out.contains(&Notice::Synced {
            to: "hub-2".into(),
            nodes: vec!["hub-0".into()]
        }));
        // hub-1's membership of the moved room is kept (it is hub-1's state), not answered.
        assert_eq!(d.lookup("hub-2", &moved), Answer::NotOwner);
        assert_eq!(d.len().1, 1, "only the kept subscription");
        // Members that left the ring are forgotten.
        d.transition("hub-2", &kept, true);
        d.ring_changed(ring(2));
        assert!(d.targets(&kept).map(|t| t.0.is_empty()).unwrap_or(true));
    }

    /// A peer that looks up room after room (a bug, or a hostile member) holds at most its
    /// limit of subscriptions here; the rest are refused without growing the directory, and
    /// another peer's lookups are answered as before.
    #[test]
    fn one_peer_cannot_make_an_owner_hold_unbounded_subscriptions() {
        let r = ring(3);
        let mut d = synced_dir(3);
        d.limit_subscriptions(100);
        let keys: Vec<RoomKey> = (0..)
            .map(|i| RoomKey::new("/", &format!("flood-{i}")))
            .filter(|k| owns(&r, k, "hub-0"))
            .take(150)
            .collect();
        let answers: Vec<Answer> = keys.iter().map(|k| d.lookup("hub-1", k)).collect();
        let full = answers.iter().filter(|a| **a == Answer::Full).count();
        assert_eq!(full, 50);
        assert_eq!(d.len(), (100, 100), "refused lookups leave nothing behind");
        // Asking again for a room it holds is still answered.
        assert!(matches!(d.lookup("hub-1", &keys[0]), Answer::Known { .. }));
        // The bystander.
        let mine = owned_by(&r, "hub-0");
        d.transition("hub-2", &mine, true);
        let Answer::Known { members, .. } = d.lookup("hub-0-bystander", &mine) else {
            panic!("a bystander's lookup is answered")
        };
        assert_eq!(ids(&members), ["hub-2"]);
        // Unsubscribing makes room again.
        d.unsubscribe("hub-1", &keys[..10]);
        assert!(matches!(
            d.lookup("hub-1", &keys[140]),
            Answer::Known { .. }
        ));
    }

    #[test]
    fn a_subscriber_that_goes_away_is_forgotten() {
        let mut d = synced_dir(3);
        let key = owned_by(&ring(3), "hub-0");
        d.lookup("hub-2", &key);
        assert_eq!(d.len(), (1, 1));
        d.link_down("hub-2");
        assert_eq!(d.len(), (0, 0));
        d.lookup("hub-1", &key);
        d.unsubscribe("hub-1", std::slice::from_ref(&key));
        assert_eq!(d.len(), (0, 0));
        assert!(d.is_empty());
    }
}
