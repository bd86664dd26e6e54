//! The member node's side: whom it tells about its own rooms, and when.
//!
//! - A transition (first local member joined a room, or the last one left) goes to the room's
//!   owner under this node's ring, and only there.
//! - Whenever this node and a linked peer hold the same ring and this node has not yet sent
//!   that peer its list for that ring on the current link, it sends the list: its rooms the
//!   peer owns, then `Synced`. (Full lists on agreement keep the argument simple: whatever
//!   the order in which the nodes learn a member set, an owner's picture of a peer is
//!   complete exactly when it says so.)
//! - A change of this node's ring is told to every peer (`RingChanged`) before anything
//!   else, and until a flush of every peer issued after it has completed, each join barrier
//!   flushes every peer, so that no peer still holds this node as synced when a join under
//!   the new ring is acknowledged.
//! - When the owner cannot confirm a join (unreachable, or its link broke before it answered
//!   the flush), the node hints every peer itself ([`RoomCache::hint`]) and flushes them all.
//!
//! [`RoomCache::hint`]: super::cache::RoomCache::hint

use std::collections::BTreeMap;

use super::{Interner, NodeId, RoomKey};
use crate::cluster::ring::Ring;

/// Something this node must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// Tell every peer the id of this node's ring.
    RingChanged { ring_id: u64 },
    /// Send `to` the list of this node's rooms it owns under the current ring (see
    /// [`Agreement::owned_by`]), then `Synced(ring_id)`.
    List { to: NodeId, ring_id: u64 },
}

/// Which peers a join barrier must flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Barrier {
    /// The owners of the rooms joined (this node's own directory for rooms it owns).
    Owners,
    /// Every peer: this node's ring changed and not every peer is known to have heard.
    /// Report the token to [`Agreement::flushed_all`] once that flush completed.
    All { token: u64 },
}

#[derive(Debug, Default)]
struct PeerView {
    /// The ring the peer said it holds.
    ring: Option<u64>,
    /// The ring of the last list this node sent the peer on the current link.
    listed: Option<u64>,
}

/// What this node has told its peers about its rooms.
#[derive(Debug)]
pub struct Agreement {
    me: NodeId,
    ring: Ring,
    ring_id: u64,
    ids: Interner,
    peers: BTreeMap<NodeId, PeerView>,
    /// Ring changes so far, and how many of them an all-peer flush has covered.
    changes: u64,
    covered: u64,
}

impl Agreement {
    pub fn new(me: &str, ring: Ring) -> Self {
        let mut ids = Interner::default();
        let ring_id = ring.id();
        Self {
            me: ids.get(me),
            ring,
            ring_id,
            ids,
            peers: BTreeMap::new(),
            changes: 0,
            covered: 0,
        }
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// Where a transition of `key` goes: `None` when this node owns it (its own directory).
    pub fn owner_of(&self, key: &RoomKey) -> Option<&str> {
        self.ring
            .owner(&key.nsp, &key.room)
            .filter(|o| *o != &*self.me)
    }

    /// Of `rooms` (this node's), those `to` owns under the current ring: its list.
    pub fn owned_by<'a>(
        &self,
        to: &str,
        rooms: impl IntoIterator<Item = &'a RoomKey>,
    ) -> Vec<RoomKey> {
        rooms
            .into_iter()
            .filter(|k| self.ring.owner(&k.nsp, &k.room) == Some(to))
            .cloned()
            .collect()
    }

    fn list_if_agreed(&mut self, peer: &NodeId, out: &mut Vec<Say>) {
        let ring_id = self.ring_id;
        if let Some(p) = self.peers.get_mut(peer) {
            if p.ring == Some(ring_id) && p.listed != Some(ring_id) {
                p.listed = Some(ring_id);
                out.push(Say::List {
                    to: peer.clone(),
                    ring_id,
                });
            }
        }
    }

    /// A link to `peer` is up. Its ring is learned from its hello ([`Agreement::peer_ring`]).
    pub fn link_up(&mut self, peer: &str) {
        let id = self.ids.get(peer);
        self.peers.insert(id, PeerView::default());
    }

    pub fn link_down(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// `peer` holds ring `ring_id` now.
    pub fn peer_ring(&mut self, peer: &str, ring_id: u64) -> Vec<Say> {
        let mut out = Vec::new();
        let id = self.ids.get(peer);
        if let Some(p) = self.peers.get_mut(&id) {
            p.ring = Some(ring_id);
            self.list_if_agreed(&id, &mut out);
        }
        out
    }

    /// Whether `peer` is linked and holds this node's ring (its list is then due whenever
    /// the last one did not arrive whole).
    pub fn agrees(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.ring == Some(self.ring_id))
    }

    /// This node's ring changed.
    pub fn ring_changed(&mut self, ring: Ring) -> Vec<Say> {
        let mut out = Vec::new();
        self.ring = ring;
        self.ring_id = self.ring.id();
        self.changes += 1;
        out.push(Say::RingChanged {
            ring_id: self.ring_id,
        });
        let peers: Vec<NodeId> = self.peers.keys().cloned().collect();
        for p in peers {
            self.list_if_agreed(&p, &mut out);
        }
        out
    }

    /// What a join barrier issued now must flush.
    pub fn barrier(&self) -> Barrier {
        if self.covered < self.changes {
            Barrier::All {
                token: self.changes,
            }
        } else {
            Barrier::Owners
        }
    }

    /// A flush of every peer, issued with `token`, completed.
    pub fn flushed_all(&mut self, token: u64) {
        self.covered = self.covered.max(token);
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ownership::testing::ring;

    #[test]
    fn lists_once_per_agreement_and_link() {
        let r = ring(3);
        let mut a = Agreement::new("hub-0", r.clone());
        a.link_up("hub-1");
        assert!(a.peer_ring("hub-1", 7).is_empty(), "another ring");
        let said = a.peer_ring("hub-1", r.id());
        assert_eq!(
            said,
            vec![Say::List {
                to: "hub-1".into(),
                ring_id: r.id()
            }]
        );
        assert!(a.peer_ring("hub-1", r.id()).is_empty(), "already listed");
        a.link_down("hub-1");
        a.link_up("hub-1");
        assert_eq!(
            a.peer_ring("hub-1", r.id()).len(),
            1,
            "a new link lists again"
        );
    }

    #[test]
    fn a_ring_change_is_told_first_and_lists_to_peers_already_there() {
        let r3 = ring(3);
        let r4 = ring(4);
        let mut a = Agreement::new("hub-0", r3.clone());
        a.link_up("hub-1");
        a.link_up("hub-3");
        a.peer_ring("hub-1", r3.id());
        a.peer_ring("hub-3", r4.id());
        assert_eq!(a.barrier(), Barrier::Owners);
        let said = a.ring_changed(r4.clone());
        assert_eq!(said[0], Say::RingChanged { ring_id: r4.id() });
        assert_eq!(
            &said[1..],
            &[Say::List {
                to: "hub-3".into(),
                ring_id: r4.id()
            }]
        );
        // hub-1 catches up later.
        assert_eq!(a.peer_ring("hub-1", r4.id()).len(), 1);
        // Joins flush everyone until a flush of everyone issued after the change is done.
        let Barrier::All { token } = a.barrier() else {
            panic!("in flux")
        };
        a.ring_changed(ring(5));
        a.flushed_all(token);
        assert!(matches!(a.barrier(), Barrier::All { .. }), "a newer change");
        let Barrier::All { token } = a.barrier() else {
            panic!()
        };
        a.flushed_all(token);
        assert_eq!(a.barrier(), Barrier::Owners);
    }

    #[test]
    fn transitions_go_to_the_owner_and_lists_hold_what_it_owns() {
        let r = ring(3);
        let a = Agreement::new("hub-0", r.clone());
        let rooms: Vec<RoomKey> = (0..30)
            .map(|i| RoomKey::new("/", &format!("r{i}")))
            .collect();
        let mut lists = 0;
        for peer in ["hub-1", "hub-2"] {
            for k in a.owned_by(peer, &rooms) {
                assert_eq!(a.owner_of(&k), Some(peer));
                lists += 1;
            }
        }
        let mine = rooms.iter().filter(|k| a.owner_of(k).is_none()).count();
        assert_eq!(lists + mine, rooms.len());
        assert!(mine > 0);
    }
}
