//! [`HubOps`] of a node that is part of a cluster.
//!
//! Emits without acks reach every node: the event is encoded once here, delivered to this
//! node's sockets and forwarded to every peer in routing. socketsJoin/Leave and
//! disconnectSockets run here and on every peer (fire and forget, as in Node's
//! ClusterAdapter), so their counts are this node's. fetchSockets and rooms ask every peer
//! in routing and merge the answers (a peer that does not answer within the request timeout
//! is left out, and logged). Emits with acks go to every peer, which emits with its own ack
//! ids and answers with its expected count and the acks it got within the timeout.

use std::sync::Arc;

use async_trait::async_trait;

use super::mesh::Mesh;
use super::queries;
use super::rooms::RoomSync;
use super::sockets::{self, SocketsAction};
use crate::ops::{
    validate_emit, EmitOutcome, EmitRequest, HubOps, HubStats, LocalOps, OpsError, RoomInfo,
    SocketInfo,
};
use crate::socketio::{Hub, Selector};

pub struct ClusterOps {
    local: LocalOps,
    hub: Hub,
    mesh: Arc<Mesh>,
    rooms: Arc<RoomSync>,
}

impl ClusterOps {
    pub fn new(local: LocalOps, hub: Hub, mesh: Arc<Mesh>, rooms: Arc<RoomSync>) -> Self {
        Self {
            local,
            hub,
            mesh,
            rooms,
        }
    }

    /// Refuses a request that names a socket id (its own room) of a member this node has no
    /// link to: sent on, it would reach nobody, and the caller would take the silence for
    /// success. Socket ids end with their node's id (`sid::socket_id`), so the owner is known.
    fn check_owners(&self, selector: &Selector) -> Result<(), OpsError> {
        let me = self.mesh.me();
        let owners: Vec<String> = selector
            .rooms
            .iter()
            .filter_map(|room| crate::engine::sid::owner_of(room))
            .filter(|owner| owner != me)
            .collect();
        if owners.is_empty() {
            return Ok(());
        }
        let membership = self.mesh.membership();
        let linked = self.mesh.connected();
        match owners
            .into_iter()
            .find(|owner| membership.members.addr(owner).is_some() && !linked.contains(owner))
        {
            Some(owner) => Err(OpsError::Unavailable(owner)),
            None => Ok(()),
        }
    }

    /// Sends an operation on sockets to every peer (after it ran here, so an unknown
    /// namespace is refused before anything leaves this node).
    fn forward(&self, nsp: &str, selector: &Selector, action: SocketsAction) {
        self.mesh
            .send_all(&sockets::to_message(nsp, selector, action, 0), false);
    }
}

#[async_trait]
impl HubOps for ClusterOps {
    async fn emit(&self, nsp: &str, request: EmitRequest) -> Result<EmitOutcome, OpsError> {
        // Refused before anything leaves this node.
        validate_emit(&request)?;
        self.check_owners(&request.selector)?;
        if self.hub.of(nsp).is_none() && !self.hub.inner.namespace_allowed(nsp) {
            return Err(OpsError::UnknownNamespace(nsp.to_string()));
        }
        if let Some(timeout) = request.ack_timeout {
            // Every node waits up to `timeout` for its own sockets' acks; the peers' answers
            // get a moment more to travel back.
            let ask = self.mesh.ask_all(
                |id| {
                    queries::emit_with_ack(
                        id,
                        nsp,
                        &request.selector,
                        &request.event,
                        &request.payload,
                        timeout,
                    )
                },
                timeout + self.mesh.request_timeout(),
            );
            let here = self.local.emit(nsp, request.clone());
            let (here, (replies, missing)) = tokio::join!(here, ask);
            return Ok(queries::merge_outcomes(here?, replies, missing));
        }
        // Without acks the local emit already reaches every node (through the hub's fan-out).
        self.local.emit(nsp, request).await
    }

    async fn sockets_join(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        self.check_owners(selector)?;
        let matched = self.local.sockets_join(nsp, selector, rooms).await?;
        // Answered once every node knows where the joined sockets are, so an emit sent next,
        // from any node, reaches them: this node's own changes have propagated, and every
        // peer applied the join and propagated its changes ("settled"). Until a peer settles,
        // this node counts it as a member of the rooms.
        let (id, settled) = self.rooms.join_sent(&self.mesh.connected(), nsp, rooms);
        let message = sockets::to_message(nsp, selector, SocketsAction::Join(rooms.to_vec()), id);
        let dropped = self.mesh.send_all_checked(&message, false);
        if let Some(member) = dropped.into_iter().next() {
            // Its sockets did not join: an answer of success would be a lie.
            let _ = self.rooms.join_abandoned(id);
            tracing::warn!(nsp, peer = %member, "a socketsJoin was dropped for a peer whose link queue is full");
            return Err(OpsError::Unconfirmed {
                member,
                why: "its link is overloaded and dropped the request".into(),
            });
        }
        let wait = self.mesh.request_timeout();
        let (_, settled) =
            tokio::join!(self.rooms.propagated(), tokio::time::timeout(wait, settled));
        match settled {
            Ok(Ok(())) => Ok(matched),
            Ok(Err(member)) => {
                tracing::warn!(nsp, peer = %member, "a peer's link went down before it confirmed a socketsJoin");
                Err(OpsError::Unconfirmed {
                    member,
                    why: "its link went down before it confirmed".into(),
                })
            }
            Err(_) => {
                let silent = self.rooms.join_abandoned(id);
                tracing::warn!(nsp, ?silent, "not every peer settled a socketsJoin in time");
                Err(OpsError::Unconfirmed {
                    member: silent.join(", "),
                    why: format!("no confirmation within {} ms", wait.as_millis()),
                })
            }
        }
    }

    async fn sockets_leave(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        self.check_owners(selector)?;
        let matched = self.local.sockets_leave(nsp, selector, rooms).await?;
        self.forward(nsp, selector, SocketsAction::Leave(rooms.to_vec()));
        Ok(matched)
    }

    async fn disconnect_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
        close: bool,
    ) -> Result<usize, OpsError> {
        self.check_owners(selector)?;
        let matched = self.local.disconnect_sockets(nsp, selector, close).await?;
        self.forward(nsp, selector, SocketsAction::Disconnect { close });
        Ok(matched)
    }

    async fn fetch_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
    ) -> Result<Vec<SocketInfo>, OpsError> {
        self.check_owners(selector)?;
        let mut all = self.local.fetch_sockets(nsp, selector).await?;
        let (replies, _) = self
            .mesh
            .ask_all(
                |id| queries::fetch_sockets(id, nsp, selector),
                self.mesh.request_timeout(),
            )
            .await;
        all.extend(queries::parse_lists::<SocketInfo>(replies));
        Ok(all)
    }

    async fn rooms(&self, nsp: &str) -> Result<Vec<RoomInfo>, OpsError> {
        let local = self.local.rooms(nsp).await?;
        let (replies, _) = self
            .mesh
            .ask_all(|id| queries::rooms(id, nsp), self.mesh.request_timeout())
            .await;
        Ok(queries::merge_rooms(
            local
                .into_iter()
                .chain(queries::parse_lists::<RoomInfo>(replies)),
        ))
    }

    /// This node's counters; `nodes` counts this node and the peers linked to it, `members`
    /// lists the ring.
    async fn stats(&self) -> Result<HubStats, OpsError> {
        let mut stats = self.local.stats().await?;
        stats.nodes = 1 + self.mesh.connected().len();
        stats.members = Some(self.mesh.membership().ring.members().to_vec());
        Ok(stats)
    }
}
