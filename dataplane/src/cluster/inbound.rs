//! What this node does with the messages its peers send: hands each to the hub.

use super::peer::{Answer, Inbound};
use super::proto::message::Kind;
use super::{broadcast, queries, sockets};
use crate::socketio::Hub;

/// Applies peers' messages to this node's hub.
pub struct HubInbound(pub Hub);

impl Inbound for HubInbound {
    fn receive(&self, from: &str, message: Kind) -> Option<Answer> {
        match message {
            Kind::Broadcast(b) => {
                broadcast::deliver(&self.0, from, b);
            }
            Kind::Sockets(op) => {
                sockets::apply(&self.0, from, op);
            }
            // The room directory is not wired to the links yet.
            Kind::RoomAnnounce(_) | Kind::Synced(_) => {
                tracing::trace!(peer = from, "directory message ignored");
            }
            Kind::Request(request) => return Some(queries::answer(self.0.clone(), request)),
            // Replies are matched to their requests by the mesh.
            Kind::Hello(_) | Kind::Heartbeat(_) | Kind::Reply(_) => {}
        }
        None
    }
}
