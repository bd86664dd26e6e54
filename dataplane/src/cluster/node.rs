//! This node's part of a cluster, started from the configuration: the peer mesh, wired to
//! the hub both ways (its broadcasts go out, peers' broadcasts come in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::broadcast::MeshFanout;
use super::inbound::HubInbound;
use super::peer::{LinkSettings, Mesh};
use super::rooms::{self, RoomSync};
use crate::config::Config;
use crate::socketio::Hub;

/// A running cluster member.
pub struct Cluster {
    mesh: Arc<Mesh>,
    rooms: Arc<RoomSync>,
    peer_addr: SocketAddr,
}

impl Cluster {
    /// Starts the peer links of a clustered configuration; `None` for a single node.
    pub async fn start(config: &Config, hub: &Hub) -> anyhow::Result<Option<Cluster>> {
        let c = &config.cluster;
        if c.is_single_node() {
            return Ok(None);
        }
        let members = c.members()?;
        let Some(listen) = c.peer_listen else {
            anyhow::bail!("cluster.peerListen is needed when cluster.members is set");
        };
        let settings = LinkSettings {
            heartbeat_interval: Duration::from_millis(c.heartbeat_interval),
            heartbeat_timeout: Duration::from_millis(c.heartbeat_timeout),
            ..LinkSettings::default()
        };
        let (room_sync, room_events) = RoomSync::new();
        let inbound = Arc::new(HubInbound {
            hub: hub.clone(),
            rooms: room_sync.clone(),
        });
        let mesh = Mesh::new(&config.node_id, &members, settings, inbound)?;
        let fanout = MeshFanout {
            mesh: mesh.clone(),
            rooms: room_sync.clone(),
        };
        if !hub.set_fanout(Arc::new(fanout)) {
            anyhow::bail!("this hub already belongs to a cluster");
        }
        // Before any link is up, so the first link's full list is queued behind nothing.
        tokio::spawn(rooms::run(room_events, mesh.clone(), hub.clone()));
        let peer_addr = mesh.start(listen).await?;
        tracing::info!(member = %config.node_id, %peer_addr, members = members.len(), "cluster member started");
        Ok(Some(Cluster {
            mesh,
            rooms: room_sync,
            peer_addr,
        }))
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Which rooms the peers have, and this node's announcements to them.
    pub fn rooms(&self) -> &Arc<RoomSync> {
        &self.rooms
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Closes the peer links (at shutdown, after the client sessions are closed).
    pub fn shutdown(&self) {
        self.mesh.close();
    }
}
