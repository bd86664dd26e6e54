//! Test helpers shared by the mesh's tests: recording inbounds, free ports, small clusters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Answer, Inbound, LinkSettings, Mesh};
use crate::cluster::membership::Members;
use crate::cluster::proto::{self as pb, message::Kind};

/// Records what it receives.
#[derive(Default)]
pub(super) struct Recorder(pub(super) Mutex<Vec<(String, Kind)>>);

impl Inbound for Recorder {
    fn receive(&self, from: &str, message: Kind) -> Option<Answer> {
        // Answers requests with the asker's name.
        let reply = match &message {
            Kind::Request(r) => Some(pb::Message::of(Kind::Reply(pb::Reply {
                id: r.id,
                json: bytes::Bytes::from(format!("\"answer to {from}\"")),
            }))),
            _ => None,
        };
        self.0.lock().push((from.to_string(), message));
        reply.map(|r| Box::pin(async move { r }) as Answer)
    }
}

/// Answers nothing, ever: requests to it wait until it is gone.
pub(super) struct Mute;

impl Inbound for Mute {
    fn receive(&self, _: &str, message: Kind) -> Option<Answer> {
        match message {
            Kind::Request(_) => Some(Box::pin(std::future::pending())),
            _ => None,
        }
    }
}

pub(super) fn free_port(ip: [u8; 4]) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    l.local_addr().unwrap()
}

pub(super) fn broadcast(n: u64) -> pb::Message {
    pb::Message::of(Kind::Broadcast(pb::Broadcast {
        namespace: "/".into(),
        packet: bytes::Bytes::from(format!("2[\"n\",{n}]")),
        ..Default::default()
    }))
}

pub(super) fn fast() -> LinkSettings {
    LinkSettings {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(200),
        queue: 1024,
        queue_bytes: 64 * 1024 * 1024,
    }
}

pub(super) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) struct Node {
    pub(super) mesh: Arc<Mesh>,
    pub(super) got: Arc<Recorder>,
}

pub(super) async fn cluster(n: usize, settings: LinkSettings) -> (Members, Vec<Node>) {
    let mut members = Members::new();
    for i in 0..n {
        members.insert(format!("n{i}"), free_port([127, 0, 0, 1]));
    }
    let mut nodes = Vec::new();
    for i in 0..n {
        let got = Arc::new(Recorder::default());
        let id = format!("n{i}");
        let mesh = Mesh::new(&id, &members, settings, got.clone()).unwrap();
        mesh.start(members.addr(&id).unwrap()).await.unwrap();
        nodes.push(Node { mesh, got });
    }
    (members, nodes)
}

pub(super) async fn node(id: &str, members: &Members, settings: LinkSettings) -> Node {
    let got = Arc::new(Recorder::default());
    let mesh = Mesh::new(id, members, settings, got.clone()).unwrap();
    mesh.start(members.addr(id).unwrap()).await.unwrap();
    Node { mesh, got }
}

/// The broadcasts `node` received: (from, packet).
pub(super) fn received(node: &Node) -> Vec<(String, String)> {
    node.got
        .0
        .lock()
        .iter()
        .filter_map(|(from, kind)| match kind {
            Kind::Broadcast(b) => Some((
                from.clone(),
                String::from_utf8_lossy(&b.packet).into_owned(),
            )),
            _ => None,
        })
        .collect()
}
