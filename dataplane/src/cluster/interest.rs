//! Which peers a broadcast must reach: the rooms each peer has members in, as the peers
//! told us. Pure data, no I/O.
//!
//! Every node tells every peer when its first local socket joins a room and when its last
//! one leaves (transitions only), and on each new link it first sends all its rooms, then a
//! "synced" marker. So each node knows, per peer, the rooms with members there, and sends a
//! room broadcast only to the peers that have members, over the same ordered link as
//! everything else it sends them (an emit after a join is never overtaken).
//!
//! Errors are only ever on the safe side (a peer gets a broadcast it has no member for):
//! - a peer whose rooms have not all arrived yet (new link, not synced) gets every broadcast;
//! - a socket id names its node (see `engine::sid`), so an emit to a socket reaches that node
//!   even though socket-id rooms are never announced;
//! - `socketsJoin` sent to the peers marks them as members of its rooms until each answers
//!   that it applied it ("settled"), so an emit right after a join from this node cannot miss
//!   the sockets it just joined on other nodes.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::engine::sid::owner_of;

/// What this node knows of one peer's rooms.
#[derive(Debug, Default)]
struct PeerRooms {
    /// All its rooms have arrived for the current link.
    synced: bool,
    /// Rooms with members on the peer, by namespace.
    rooms: HashMap<String, HashSet<String>>,
    /// socketsJoin operations sent to the peer and not yet settled: (namespace, rooms).
    pending_joins: HashMap<u64, (String, Vec<String>)>,
}

impl PeerRooms {
    fn has(&self, nsp: &str, room: &str) -> bool {
        self.rooms.get(nsp).is_some_and(|r| r.contains(room))
            || self
                .pending_joins
                .values()
                .any(|(ns, rooms)| ns == nsp && rooms.iter().any(|r| r == room))
    }
}

/// The rooms of every linked peer.
#[derive(Debug, Default)]
pub struct Interest {
    peers: HashMap<String, PeerRooms>,
}

impl Interest {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new link to `peer`: forget what it said before and wait for its rooms again.
    pub fn link_up(&mut self, peer: &str) {
        self.peers.insert(peer.to_string(), PeerRooms::default());
    }

    /// `peer` resends all its rooms on the current link (one of its announcements to this
    /// node was lost): forget its rooms and treat it as not synced until its next `Synced`.
    /// The socketsJoin operations this node sent it still count until they settle.
    pub fn resync(&mut self, peer: &str) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.synced = false;
            p.rooms.clear();
        }
    }

    /// The link to `peer` is gone (it is out of routing).
    pub fn link_down(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// `peer` has members in `joined` and none in `left` (in namespace `nsp`).
    pub fn announce(&mut self, peer: &str, nsp: &str, joined: &[String], left: &[String]) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let rooms = p.rooms.entry(nsp.to_string()).or_default();
        for room in left {
            rooms.remove(room);
        }
        rooms.extend(joined.iter().cloned());
        if rooms.is_empty() {
            p.rooms.remove(nsp);
        }
    }

    /// `peer` has sent all its rooms for this link.
    pub fn synced(&mut self, peer: &str) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.synced = true;
        }
    }

    /// A socketsJoin (`op`) of `rooms` in `nsp` was sent to `peer`: count it as a member
    /// until it settles.
    pub fn join_sent(&mut self, peer: &str, op: u64, nsp: &str, rooms: &[String]) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.pending_joins
                .insert(op, (nsp.to_string(), rooms.to_vec()));
        }
    }

    /// `peer` applied socketsJoin `op`; the rooms it now has have been announced before this.
    pub fn join_settled(&mut self, peer: &str, op: u64) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.pending_joins.remove(&op);
        }
    }

    /// socketsJoin `op` will not be settled (its wait was abandoned): forget it for every peer.
    pub fn join_forgotten(&mut self, op: u64) {
        for p in self.peers.values_mut() {
            p.pending_joins.remove(&op);
        }
    }

    /// Whether `peer`'s rooms are all known (false for a peer with no link).
    pub fn is_synced(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.synced)
    }

    /// Of `peers` (those in routing), the ones a broadcast to `rooms` of `nsp` must reach.
    /// No rooms means every socket of the namespace: every peer.
    pub fn targets<'a>(
        &self,
        nsp: &str,
        rooms: &[String],
        peers: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        let owners: Vec<String> = rooms.iter().filter_map(|r| owner_of(r)).collect();
        peers
            .into_iter()
            .filter(|peer| {
                if rooms.is_empty() {
                    return true;
                }
                match self.peers.get(*peer) {
                    // Not synced (or not known yet): it may have members anywhere.
                    None => true,
                    Some(p) if !p.synced => true,
                    Some(p) => {
                        owners.iter().any(|o| o == peer)
                            || rooms.iter().any(|room| p.has(nsp, room))
                    }
                }
            })
            .map(str::to_string)
            .collect()
    }

    /// Rooms known for `peer` in `nsp` (for tests and stats).
    pub fn rooms_of(&self, peer: &str, nsp: &str) -> BTreeSet<String> {
        self.peers
            .get(peer)
            .and_then(|p| p.rooms.get(nsp))
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sid::{socket_id, SidGenerator};

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const PEERS: [&str; 3] = ["b", "c", "d"];

    fn synced_all() -> Interest {
        let mut i = Interest::new();
        for p in PEERS {
            i.link_up(p);
            i.synced(p);
        }
        i
    }

    #[test]
    fn unsynced_and_unknown_peers_get_everything() {
        let mut i = Interest::new();
        i.link_up("b");
        i.announce("b", "/", &v(&["x"]), &[]);
        assert_eq!(i.targets("/", &v(&["y"]), PEERS), set(&["b", "c", "d"]));
        i.synced("b");
        assert_eq!(i.targets("/", &v(&["y"]), PEERS), set(&["c", "d"]));
        assert_eq!(i.targets("/", &v(&["x"]), PEERS), set(&["b", "c", "d"]));
    }

    #[test]
    fn room_broadcasts_reach_exactly_the_peers_with_members() {
        let mut i = synced_all();
        i.announce("b", "/", &v(&["x", "y"]), &[]);
        i.announce("c", "/", &v(&["y"]), &[]);
        i.announce("d", "/chat", &v(&["x"]), &[]);
        assert_eq!(i.targets("/", &v(&["x"]), PEERS), set(&["b"]));
        assert_eq!(i.targets("/", &v(&["y"]), PEERS), set(&["b", "c"]));
        assert_eq!(i.targets("/", &v(&["x", "z"]), PEERS), set(&["b"]));
        assert_eq!(i.targets("/", &v(&["z"]), PEERS), set(&[]));
        assert_eq!(i.targets("/chat", &v(&["x"]), PEERS), set(&["d"]));
        // The whole namespace: everyone.
        assert_eq!(i.targets("/", &[], PEERS), set(&["b", "c", "d"]));
        // Only peers in routing are ever named.
        assert_eq!(i.targets("/", &v(&["y"]), ["c"]), set(&["c"]));
    }

    #[test]
    fn leaves_and_relinks_update_the_view() {
        let mut i = synced_all();
        i.announce("b", "/", &v(&["x"]), &[]);
        i.announce("b", "/", &[], &v(&["x"]));
        assert_eq!(i.targets("/", &v(&["x"]), PEERS), set(&[]));
        assert!(i.rooms_of("b", "/").is_empty());
        i.announce("b", "/", &v(&["x"]), &[]);
        // The link broke and came back: until b has re-sent its rooms it gets everything.
        i.link_down("b");
        assert!(!i.is_synced("b"));
        i.link_up("b");
        assert_eq!(i.targets("/", &v(&["q"]), PEERS), set(&["b"]));
        i.synced("b");
        assert_eq!(i.targets("/", &v(&["x"]), PEERS), set(&[]));
        // Announcements from a peer with no link are stale and ignored.
        i.announce("zz", "/", &v(&["x"]), &[]);
        assert_eq!(i.targets("/", &v(&["x"]), ["zz"]), set(&["zz"]));
    }

    #[test]
    fn a_resync_makes_a_peer_warm_again_until_its_list_is_complete() {
        let mut i = synced_all();
        i.announce("b", "/", &v(&["x", "stale"]), &[]);
        i.join_sent("b", 3, "/", &v(&["joining"]));
        // b's announcement that it left "stale" and joined "y" was lost; it resyncs.
        i.resync("b");
        assert!(!i.is_synced("b"));
        assert!(i.rooms_of("b", "/").is_empty());
        // Meanwhile b gets every room broadcast, like a new link.
        assert_eq!(i.targets("/", &v(&["y"]), PEERS), set(&["b"]));
        assert_eq!(i.targets("/", &v(&["q"]), PEERS), set(&["b"]));
        i.announce("b", "/", &v(&["x", "y"]), &[]);
        i.synced("b");
        assert_eq!(i.targets("/", &v(&["y"]), PEERS), set(&["b"]));
        assert_eq!(i.targets("/", &v(&["stale"]), PEERS), set(&[]));
        // A socketsJoin in flight still counts until it settles.
        assert_eq!(i.targets("/", &v(&["joining"]), PEERS), set(&["b"]));
        // A resync of a peer with no link changes nothing.
        i.resync("zz");
        assert!(!i.is_synced("zz"));
    }

    #[test]
    fn an_emit_to_a_socket_goes_to_its_node() {
        let i = synced_all();
        let sid = SidGenerator::new("c").session_id();
        let sock = socket_id(&sid);
        assert_eq!(
            i.targets("/", std::slice::from_ref(&sock), PEERS),
            set(&["c"])
        );
        assert_eq!(i.targets("/", &[sock, "x".to_string()], PEERS), set(&["c"]));
    }

    #[test]
    fn joins_count_until_settled() {
        let mut i = synced_all();
        i.join_sent("b", 7, "/", &v(&["new"]));
        i.join_sent("c", 7, "/", &v(&["new"]));
        assert_eq!(i.targets("/", &v(&["new"]), PEERS), set(&["b", "c"]));
        // b had a matching socket (announced before it settles), c had none.
        i.announce("b", "/", &v(&["new"]), &[]);
        i.join_settled("b", 7);
        i.join_settled("c", 7);
        assert_eq!(i.targets("/", &v(&["new"]), PEERS), set(&["b"]));
        // Another namespace is not affected.
        i.join_sent("d", 8, "/chat", &v(&["new"]));
        assert_eq!(i.targets("/", &v(&["new"]), PEERS), set(&["b"]));
        assert_eq!(i.targets("/chat", &v(&["new"]), PEERS), set(&["d"]));
        // An abandoned join stops counting.
        i.join_forgotten(8);
        assert_eq!(i.targets("/chat", &v(&["new"]), PEERS), set(&[]));
    }
}
