//! Ownership on real meshes over loopback (TLS, ordered links): three nodes whose inbound
//! hands ownership messages and flushes to their [`Owned`], as `cluster::inbound` does, and
//! whose rooms are a plain table (the hub's part).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::cluster::membership::Members;
use crate::cluster::mesh::testkit::{fast, free_port, start, wait_for};
use crate::cluster::mesh::{Answer as MeshAnswer, Inbound};
use crate::cluster::ownership::testing::room_where;

/// A node's rooms, by namespace: what lists are made of.
type Rooms = Mutex<BTreeMap<String, BTreeSet<String>>>;

struct TestInbound {
    owned: Arc<Owned>,
    rooms: Arc<Rooms>,
}

fn table(rooms: &Rooms) -> Vec<(String, Vec<String>)> {
    rooms
        .lock()
        .iter()
        .map(|(nsp, r)| (nsp.clone(), r.iter().cloned().collect()))
        .collect()
}

impl Inbound for TestInbound {
    fn receive(&self, from: &str, message: Kind) -> Option<MeshAnswer> {
        match message {
            Kind::Ownership(m) => {
                for due in self.owned.receive(from, m) {
                    self.owned.send_list(&due, &table(&self.rooms));
                }
                None
            }
            Kind::Request(pb::Request {
                id,
                query: Some(pb::request::Query::Flush(_)),
            }) => Some(self.owned.flush(id)),
            _ => None,
        }
    }

    fn link_up(&self, peer: &str) {
        self.owned.link_up(peer);
    }

    fn link_down(&self, peer: &str) {
        self.owned.link_down(peer);
    }
}

struct Node {
    id: String,
    mesh: Arc<Mesh>,
    owned: Arc<Owned>,
    rooms: Arc<Rooms>,
}

impl Node {
    /// A local socket is the first to join `room` of `/` (or the last to leave it).
    fn set(&self, room: &str, present: bool) {
        let mut rooms = self.rooms.lock();
        let set = rooms.entry("/".to_string()).or_default();
        if present {
            set.insert(room.to_string());
        } else {
            set.remove(room);
        }
        drop(rooms);
        self.owned.transition("/", room, present);
    }

    fn targets(&self, room: &str) -> BTreeSet<String> {
        let linked = self.mesh.connected();
        self.owned.targets("/", &[room.to_string()], &linked)
    }
}

async fn cluster(n: usize) -> (Members, Vec<Node>) {
    let mut members = Members::new();
    for i in 0..n {
        members.insert(format!("n{i}"), free_port([127, 0, 0, 1]));
    }
    let ring = Ring::new(members.ids());
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let owned = Arc::new(Owned::new(&id, ring.clone(), 1024, 4096));
        let rooms = Arc::new(Rooms::default());
        let inbound = Arc::new(TestInbound {
            owned: owned.clone(),
            rooms: rooms.clone(),
        });
        let mesh = Mesh::new(&id, &members, fast(), inbound).unwrap();
        owned.attach(&mesh);
        start(&mesh, members.addr(&id).unwrap()).await;
        nodes.push(Node {
            id,
            mesh,
            owned,
            rooms,
        });
    }
    for node in &nodes {
        wait_for("every link", || node.mesh.connected().len() == n - 1).await;
    }
    (members, nodes)
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_learns_a_room_from_its_owner_and_follows_its_changes() {
    let (members, nodes) = cluster(3).await;
    let ring = Ring::new(members.ids());
    // A room n2 owns; n0 sends to it, n1 and later n0... join it.
    let room = room_where("/", "r", |k| ring.owner(&k.nsp, &k.room) == Some("n2"));
    let room = room.room.to_string();
    // Every node has said its ring and sent its (empty) list: all are synced at n2.
    let key = RoomKey::new("/", &room);
    wait_for("n2 knows every peer's rooms", || {
        let s = nodes[2].owned.state.lock();
        s.dir
            .targets(&key)
            .is_some_and(|(_, synced)| synced.len() == 3)
    })
    .await;

    nodes[1].set(&room, true);
    nodes[1].owned.barrier().await;
    // Cold at n0: every peer, and a lookup; then exact from n2's answer.
    assert_eq!(nodes[0].targets(&room), set(&["n1", "n2"]));
    wait_for("n0's lookup answered", || {
        nodes[0].targets(&room) == set(&["n1"])
    })
    .await;
    let stats = nodes[0].owned.stats();
    assert_eq!((stats.cache.lookups, stats.cached_rooms), (1, 1));

    // A second member node, the owner itself: it pushes the change to n0, and its join's
    // barrier (its own flush) completes only once n0 has applied it.
    nodes[2].set(&room, true);
    nodes[2].owned.barrier().await;
    assert_eq!(nodes[0].targets(&room), set(&["n1", "n2"]));
    assert_eq!(nodes[0].owned.stats().cache.lookups, 1, "no new lookup");
    assert!(nodes[2].owned.stats().pushes >= 1);

    // n1's last member leaves: n0 stops sending it the room.
    nodes[1].set(&room, false);
    wait_for("the leave pushed", || {
        nodes[0].targets(&room) == set(&["n2"])
    })
    .await;
    // The directory is n2's alone.
    assert_eq!(nodes[2].owned.stats().directory_rooms, 1);
    assert_eq!(nodes[0].owned.stats().directory_rooms, 0);
    assert_eq!(nodes[1].owned.stats().directory_rooms, 0);
    for n in &nodes {
        n.mesh.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_its_owner_cannot_confirm_is_hinted_to_every_peer() {
    let (members, nodes) = cluster(3).await;
    let ring = Ring::new(members.ids());
    let key = room_where("/", "f", |k| ring.owner(&k.nsp, &k.room) == Some("n2"));
    let room = key.room.to_string();
    wait_for("n2 knows every peer's rooms", || {
        let s = nodes[2].owned.state.lock();
        s.dir
            .targets(&key)
            .is_some_and(|(_, synced)| synced.len() == 3)
    })
    .await;
    // n0 caches the room (no members yet) from n2.
    wait_for("n0 caches the room", || {
        nodes[0].targets(&room);
        nodes[0].owned.stats().cached_rooms == 1
    })
    .await;
    assert_eq!(nodes[0].targets(&room), BTreeSet::new());
    // n2 goes away; n1's join cannot be confirmed by it: n1 hints n0 itself.
    nodes[2].mesh.close();
    wait_for("n1 sees n2 gone", || {
        !nodes[1].mesh.connected().contains(&nodes[2].id)
    })
    .await;
    nodes[1].set(&room, true);
    nodes[1].owned.barrier().await;
    assert_eq!(nodes[1].owned.stats().fallbacks, 1);
    // Whether n0 still caches n2's answer (its link to n2 may not be down yet) or not (cold:
    // every peer), n1 is reached.
    assert!(nodes[0].targets(&room).contains("n1"));
    for n in &nodes {
        n.mesh.close();
    }
}
