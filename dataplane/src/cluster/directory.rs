//! The room directory: what the owner of a room knows about where its members are.
//!
//! Each node tells a room's owner only on transitions: its first local socket joined the
//! room, or its last one left. The owner keeps, per room, the set of nodes with members, so
//! a broadcast to the room reaches exactly those nodes. The directory is soft state: on
//! every ring change all nodes re-announce their rooms to the new owners, and until every
//! live peer has finished re-announcing for the current ring (its "synced" marker), the
//! directory is warming and answers "all nodes" so that nothing is lost while ownership
//! moves. Pure data, no I/O.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::Ring;

/// Where a broadcast to one room must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Exactly these nodes have members (possibly none).
    Nodes(BTreeSet<String>),
    /// The directory is warming: send to every node.
    All,
}

/// A room, by namespace and name.
pub type RoomKey = (String, String);

#[derive(Debug, Clone)]
pub struct Directory {
    me: String,
    ring: Ring,
    epoch: u64,
    rooms: HashMap<RoomKey, BTreeSet<String>>,
    synced: HashSet<String>,
}

impl Directory {
    pub fn new(me: impl Into<String>, ring: Ring, epoch: u64) -> Self {
        Self {
            me: me.into(),
            ring,
            epoch,
            rooms: HashMap::new(),
            synced: HashSet::new(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Whether this node owns the room under the current ring.
    pub fn owns(&self, namespace: &str, room: &str) -> bool {
        self.ring.owner(namespace, room) == Some(self.me.as_str())
    }

    /// A new ring (membership changed): keep what this node still owns from nodes still
    /// there, and start warming until every peer re-announces for `epoch`.
    pub fn set_ring(&mut self, ring: Ring, epoch: u64) {
        self.ring = ring;
        self.epoch = epoch;
        self.synced.clear();
        let (me, ring) = (&self.me, &self.ring);
        self.rooms.retain(|(ns, room), nodes| {
            nodes.retain(|n| ring.contains(n));
            !nodes.is_empty() && ring.owner(ns, room) == Some(me.as_str())
        });
    }

    /// `from` has (`present`) or no longer has members in a room. Announcements for rooms
    /// this node does not own, or from nodes outside the ring, are ignored (they are stale).
    pub fn apply(&mut self, from: &str, namespace: &str, room: &str, present: bool) {
        if !self.ring.contains(from) || !self.owns(namespace, room) {
            return;
        }
        let key = (namespace.to_string(), room.to_string());
        if present {
            self.rooms.entry(key).or_default().insert(from.to_string());
        } else if let Some(nodes) = self.rooms.get_mut(&key) {
            nodes.remove(from);
            if nodes.is_empty() {
                self.rooms.remove(&key);
            }
        }
    }

    /// `from` finished re-announcing all its rooms for ring `epoch`.
    pub fn mark_synced(&mut self, from: &str, epoch: u64) {
        if epoch == self.epoch && self.ring.contains(from) {
            self.synced.insert(from.to_string());
        }
    }

    /// A node left: forget its memberships at once (it also leaves the ring soon).
    pub fn forget_node(&mut self, node: &str) {
        self.rooms.retain(|_, nodes| {
            nodes.remove(node);
            !nodes.is_empty()
        });
        self.synced.remove(node);
    }

    /// True until every other member of the ring has synced for the current epoch.
    pub fn is_warming(&self) -> bool {
        self.ring
            .members()
            .iter()
            .any(|m| *m != self.me && !self.synced.contains(m))
    }

    /// Where a broadcast to this room must go.
    pub fn targets(&self, namespace: &str, room: &str) -> Targets {
        if self.is_warming() {
            return Targets::All;
        }
        let key = (namespace.to_string(), room.to_string());
        Targets::Nodes(self.rooms.get(&key).cloned().unwrap_or_default())
    }

    /// The rooms this node owns and their member nodes (for metrics and debugging).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[&str]) -> Targets {
        Targets::Nodes(list.iter().map(|s| s.to_string()).collect())
    }

    /// A room owned by `owner` under `ring`.
    fn room_owned_by(ring: &Ring, owner: &str) -> String {
        (0..)
            .map(|i| format!("room-{i}"))
            .find(|r| ring.owner("/", r) == Some(owner))
            .unwrap()
    }

    fn synced(dir: &mut Directory, members: &[&str]) {
        for m in members {
            dir.mark_synced(m, dir.epoch());
        }
    }

    #[test]
    fn transitions_track_member_nodes() {
        let ring = Ring::new(["a", "b", "c"]);
        let room = room_owned_by(&ring, "a");
        let mut dir = Directory::new("a", ring, 1);
        synced(&mut dir, &["b", "c"]);
        assert_eq!(dir.targets("/", &room), nodes(&[]));
        dir.apply("b", "/", &room, true);
        dir.apply("a", "/", &room, true);
        assert_eq!(dir.targets("/", &room), nodes(&["a", "b"]));
        dir.apply("b", "/", &room, false);
        assert_eq!(dir.targets("/", &room), nodes(&["a"]));
        dir.apply("a", "/", &room, false);
        assert!(dir.is_empty());
    }

    #[test]
    fn warming_until_every_peer_synced() {
        let ring = Ring::new(["a", "b", "c"]);
        let room = room_owned_by(&ring, "a");
        let mut dir = Directory::new("a", ring, 1);
        dir.apply("b", "/", &room, true);
        assert_eq!(dir.targets("/", &room), Targets::All);
        dir.mark_synced("b", 1);
        assert_eq!(dir.targets("/", &room), Targets::All, "c has not synced");
        dir.mark_synced("c", 0);
        assert_eq!(
            dir.targets("/", &room),
            Targets::All,
            "a stale epoch does not count"
        );
        dir.mark_synced("c", 1);
        assert_eq!(dir.targets("/", &room), nodes(&["b"]));
    }

    #[test]
    fn ring_change_keeps_owned_rooms_and_warms_again() {
        let ring = Ring::new(["a", "b", "c"]);
        let kept = room_owned_by(&ring, "a");
        let mut dir = Directory::new("a", ring, 1);
        synced(&mut dir, &["b", "c"]);
        dir.apply("b", "/", &kept, true);
        dir.apply("c", "/", &kept, true);
        // c leaves: a still owns `kept` (rendezvous hashing never moves it between stayers).
        dir.set_ring(Ring::new(["a", "b"]), 2);
        assert_eq!(dir.targets("/", &kept), Targets::All);
        dir.mark_synced("b", 2);
        assert_eq!(
            dir.targets("/", &kept),
            nodes(&["b"]),
            "c's membership is gone"
        );
    }

    #[test]
    fn rooms_moving_away_are_dropped_and_stale_announcements_ignored() {
        let before = Ring::new(["a", "b"]);
        let after = Ring::new(["a", "b", "d"]);
        // A room a owns now but d will own after d joins.
        let moving = (0..)
            .map(|i| format!("room-{i}"))
            .find(|r| before.owner("/", r) == Some("a") && after.owner("/", r) == Some("d"))
            .unwrap();
        let mut dir = Directory::new("a", before, 1);
        dir.apply("b", "/", &moving, true);
        dir.set_ring(after, 2);
        assert!(dir.is_empty(), "the moved room is now d's to track");
        dir.apply("b", "/", &moving, true);
        assert!(
            dir.is_empty(),
            "announcements for rooms a does not own are ignored"
        );
        dir.apply("zz", "/", &room_owned_by(dir.ring(), "a"), true);
        assert!(
            dir.is_empty(),
            "announcements from outside the ring are ignored"
        );
    }

    #[test]
    fn forgetting_a_node() {
        let ring = Ring::new(["a", "b"]);
        let room = room_owned_by(&ring, "a");
        let mut dir = Directory::new("a", ring, 1);
        synced(&mut dir, &["b"]);
        dir.apply("b", "/", &room, true);
        dir.forget_node("b");
        assert_eq!(dir.targets("/", &room), Targets::All, "b must sync again");
        assert!(dir.is_empty());
    }

    #[test]
    fn single_node_is_never_warming() {
        let dir = Directory::new("a", Ring::new(["a"]), 1);
        assert!(!dir.is_warming());
        assert_eq!(dir.targets("/", "x"), nodes(&[]));
    }
}
