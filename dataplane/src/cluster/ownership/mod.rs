//! Room ownership: where each room's directory lives, and how senders and member nodes use
//! it. Pure data and decisions, no I/O: the mesh moves the messages these types ask for.
//!
//! The owner of `(namespace, room)` is the ring's rendezvous winner over the member set
//! ([`Ring::owner`](super::ring::Ring::owner)). Three roles, each a module:
//!
//! - **Member node** ([`agreement`]): a node with local members of a room tells only the
//!   room's owner when its first member joins or its last one leaves. Whenever it and a peer
//!   agree on the ring (both sides' member sets hash the same), it sends that peer the full
//!   list of its rooms the peer owns, then `Synced(ring)`. After a change of its own ring,
//!   its next join barrier flushes every peer, not only the room's owner.
//! - **Owner** ([`directory`]): for each room it owns, which nodes have members and which
//!   nodes cache that answer (subscribers). A peer is *synced* at the owner while both agree
//!   on the ring and the peer's full list for that ring has arrived on the current link.
//!   The owner answers lookups with the room's members **plus every peer that is not synced
//!   there**, and pushes each change to the subscribers.
//! - **Sender** ([`cache`]): a bounded cache of the answers of other owners, kept current
//!   by their pushes. A broadcast to a room goes straight to the member nodes of the cached
//!   answer (plus every linked peer not synced at the owner) on the ordered sender->node
//!   links: no relay.
//!   A room with no answer yet is *cold*: its broadcast goes to every peer (never too few),
//!   and a lookup is sent so the next one is exact; or, the other cold path, the broadcast
//!   waits for the answer (and the sender's later broadcasts behind it, in order).
//!
//! Why this never misses a member (the argument the tests check):
//! - a join is acknowledged only after the owner has pushed it to its subscribers and
//!   they confirmed (the owner's flush), so a sender that caches the room has the member;
//!   a sender that does not sends to everyone;
//! - a node whose memberships the owner may not fully know (ring changes in flight, a link
//!   that broke, a list not finished, a node the owner never heard of) is not in the owner's
//!   synced set, and senders send it every broadcast to that owner's rooms;
//! - a node that changed its ring has every peer learn it (and drop it from their synced
//!   set) before any join under the new ring is acknowledged;
//! - when the owner cannot confirm a join, the member node hints every peer itself;
//! - an unsubscribe never cancels a lookup's subscription.

pub mod agreement;
pub mod cache;
pub mod directory;
pub mod sim;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// A member id, shared: a directory holds each id once however many rooms name it.
pub type NodeId = Arc<str>;

/// `(namespace, room)`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    pub nsp: Arc<str>,
    pub room: Box<str>,
}

impl RoomKey {
    pub fn new(nsp: &str, room: &str) -> Self {
        Self {
            nsp: nsp.into(),
            room: room.into(),
        }
    }

    /// Heap bytes this key holds (the namespace is shared and not counted).
    pub fn heap_bytes(&self) -> usize {
        self.room.len()
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.nsp, self.room)
    }
}

/// A small sorted set of node ids: the member nodes of one room (usually one to three) or
/// its subscribers. A boxed slice, rebuilt on change: rooms are read far more often than
/// their node sets change.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeSet(Box<[NodeId]>);

impl NodeSet {
    pub fn contains(&self, node: &str) -> bool {
        self.0.binary_search_by(|n| (**n).cmp(node)).is_ok()
    }

    /// Adds `node`; false if it was there.
    pub fn insert(&mut self, node: &NodeId) -> bool {
        match self.0.binary_search_by(|n| (**n).cmp(node)) {
            Ok(_) => false,
            Err(at) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.insert(at, node.clone());
                self.0 = v.into_boxed_slice();
                true
            }
        }
    }

    /// Removes `node`; false if it was not there.
    pub fn remove(&mut self, node: &str) -> bool {
        match self.0.binary_search_by(|n| (**n).cmp(node)) {
            Err(_) => false,
            Ok(at) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.remove(at);
                self.0 = v.into_boxed_slice();
                true
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeId> {
        self.0.iter()
    }

    /// Heap bytes of the set itself (the ids are shared).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<NodeId>()
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<'a> FromIterator<&'a NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = &'a NodeId>>(iter: I) -> Self {
        let mut v: Vec<NodeId> = iter.into_iter().cloned().collect();
        v.sort();
        v.dedup();
        Self(v.into_boxed_slice())
    }
}

/// One `Arc<str>` per member id, so node sets share them.
#[derive(Debug, Default)]
pub struct Interner(HashSet<NodeId>);

impl Interner {
    pub fn get(&mut self, id: &str) -> NodeId {
        if let Some(n) = self.0.get(id) {
            return n.clone();
        }
        let n: NodeId = id.into();
        self.0.insert(n.clone());
        n
    }
}

/// Helpers of this module's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::RoomKey;
    use crate::cluster::ring::Ring;

    /// The ring of `hub-0` .. `hub-{n-1}`.
    pub fn ring(n: usize) -> Ring {
        Ring::new((0..n).map(|i| format!("hub-{i}")))
    }

    /// The first room `{prefix}{i}` of namespace `nsp` for which `pick` holds.
    pub fn room_where(nsp: &str, prefix: &str, pick: impl Fn(&RoomKey) -> bool) -> RoomKey {
        (0..)
            .map(|i| RoomKey::new(nsp, &format!("{prefix}{i}")))
            .find(|k| pick(k))
            .expect("an endless search")
    }

    /// Whether `ring` gives `key` to `owner`.
    pub fn owns(ring: &Ring, key: &RoomKey, owner: &str) -> bool {
        ring.owner(&key.nsp, &key.room) == Some(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sets_stay_sorted_and_unique() {
        let (a, b, c): (NodeId, NodeId, NodeId) = ("a".into(), "b".into(), "c".into());
        let mut s = NodeSet::default();
        assert!(s.insert(&c));
        assert!(s.insert(&a));
        assert!(!s.insert(&a));
        assert!(s.insert(&b));
        assert_eq!(s.iter().map(|n| &**n).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(s.remove("b"));
        assert!(!s.remove("b"));
        assert!(s.contains("a") && !s.contains("b"));
        assert_eq!(s.len(), 2);
        let t: NodeSet = [&c, &a, &a].into_iter().collect();
        assert_eq!(s, t);
    }

    #[test]
    fn interned_ids_are_shared() {
        let mut i = Interner::default();
        let a = i.get("hub-0");
        let b = i.get("hub-0");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
