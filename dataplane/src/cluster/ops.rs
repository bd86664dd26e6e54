//! [`HubOps`] of a node that is part of a cluster.
//!
//! Emits without acks reach every node: the event is encoded once here, delivered to this
//! node's sockets and forwarded to every peer in routing. The other operations (emits with
//! acks, socketsJoin/Leave, disconnectSockets, fetchSockets, rooms) still see this node's
//! sockets only; they become cluster-wide as the peer protocol grows.

use std::sync::Arc;

use async_trait::async_trait;

use super::peer::Mesh;
use crate::ops::{
    validate_emit, EmitOutcome, EmitRequest, HubOps, HubStats, LocalOps, OpsError, RoomInfo,
    SocketInfo,
};
use crate::socketio::{Hub, Selector};

pub struct ClusterOps {
    local: LocalOps,
    hub: Hub,
    mesh: Arc<Mesh>,
}

impl ClusterOps {
    pub fn new(local: LocalOps, hub: Hub, mesh: Arc<Mesh>) -> Self {
        Self { local, hub, mesh }
    }
}

#[async_trait]
impl HubOps for ClusterOps {
    async fn emit(&self, nsp: &str, request: EmitRequest) -> Result<EmitOutcome, OpsError> {
        if request.ack_timeout.is_some() {
            return self.local.emit(nsp, request).await;
        }
        validate_emit(&request)?;
        if self.hub.of(nsp).is_none() && !self.hub.inner.namespace_allowed(nsp) {
            return Err(OpsError::UnknownNamespace(nsp.to_string()));
        }
        let recipients = self.hub.broadcast(
            nsp,
            &request.selector,
            &request.event,
            &request.payload,
            request.volatile,
        );
        Ok(EmitOutcome {
            recipients,
            acks: None,
            timed_out: None,
        })
    }

    async fn sockets_join(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        self.local.sockets_join(nsp, selector, rooms).await
    }

    async fn sockets_leave(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        self.local.sockets_leave(nsp, selector, rooms).await
    }

    async fn disconnect_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
        close: bool,
    ) -> Result<usize, OpsError> {
        self.local.disconnect_sockets(nsp, selector, close).await
    }

    async fn fetch_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
    ) -> Result<Vec<SocketInfo>, OpsError> {
        self.local.fetch_sockets(nsp, selector).await
    }

    async fn rooms(&self, nsp: &str) -> Result<Vec<RoomInfo>, OpsError> {
        self.local.rooms(nsp).await
    }

    /// This node's counters; `nodes` counts this node and the peers linked to it.
    async fn stats(&self) -> Result<HubStats, OpsError> {
        let mut stats = self.local.stats().await?;
        stats.nodes = 1 + self.mesh.connected().len();
        Ok(stats)
    }
}
