//! This node's part of a cluster, started from the configuration: the peer mesh, wired to
//! the hub both ways (its broadcasts go out, peers' broadcasts come in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::broadcast::MeshFanout;
use super::inbound::HubInbound;
use super::peer::{LinkSettings, Mesh};
use super::route::{advertise_address, MeshRouter};
use crate::config::Config;
use crate::engine::Engine;
use crate::socketio::Hub;

/// A running cluster member.
pub struct Cluster {
    mesh: Arc<Mesh>,
    peer_addr: SocketAddr,
}

impl Cluster {
    /// Starts the peer links of a clustered configuration; `None` for a single node.
    /// `client_addr` is where `engine` serves clients: peers learn it (or the configured
    /// `cluster.advertiseAddress`) and forward this node's sessions' requests there, and
    /// `engine` forwards theirs.
    pub async fn start(
        config: &Config,
        hub: &Hub,
        engine: &Arc<Engine>,
        client_addr: SocketAddr,
    ) -> anyhow::Result<Option<Cluster>> {
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
        let inbound = Arc::new(HubInbound(hub.clone()));
        let mesh = Mesh::new(&config.node_id, &members, settings, inbound)?;
        if !hub.set_fanout(Arc::new(MeshFanout(mesh.clone()))) {
            anyhow::bail!("this hub already belongs to a cluster");
        }
        let advertised = advertise_address(c.advertise_address, client_addr, listen);
        mesh.advertise_client_address(advertised);
        if !engine.set_router(Arc::new(MeshRouter(mesh.clone()))) {
            anyhow::bail!("this engine already routes for a cluster");
        }
        let peer_addr = mesh.start(listen).await?;
        tracing::info!(member = %config.node_id, %peer_addr, %advertised, members = members.len(), "cluster member started");
        Ok(Some(Cluster { mesh, peer_addr }))
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Closes the peer links (at shutdown, after the client sessions are closed).
    pub fn shutdown(&self) {
        self.mesh.close();
    }
}
