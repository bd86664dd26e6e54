//! What this node does with the messages its peers send: hands each to the hub, or to the
//! rooms view ([`RoomSync`]).

use std::sync::Arc;

use super::mesh::{Answer, Inbound};
use super::proto::{self as pb, message::Kind, request::Query, sockets_op::Action};
use super::rooms::RoomSync;
use super::{broadcast, queries, sockets};
use crate::socketio::Hub;

/// Applies peers' messages to this node's hub.
pub struct HubInbound {
    pub hub: Hub,
    pub rooms: Arc<RoomSync>,
}

impl Inbound for HubInbound {
    fn receive(&self, from: &str, message: Kind) -> Option<Answer> {
        match message {
            Kind::Broadcast(b) => {
                broadcast::deliver(&self.hub, from, b);
            }
            Kind::Sockets(op) => {
                let settle = match op.action {
                    Some(Action::Join(_)) if op.id != 0 => Some(op.id),
                    _ => None,
                };
                sockets::apply(&self.hub, from, op);
                if let Some(id) = settle {
                    self.rooms.settle(from, id);
                }
            }
            Kind::RoomAnnounce(a) => self.rooms.announced(from, &a),
            Kind::Synced(_) => self.rooms.synced(from),
            Kind::Ownership(message) => self.rooms.ownership(from, message),
            Kind::Request(pb::Request {
                id,
                query: Some(Query::Flush(_)),
            }) => {
                // Not an owner here (`cluster.rooms: replicated`): nothing to flush.
                return Some(match self.rooms.owned() {
                    Some(owned) => owned.flush(id),
                    None => queries::answer(self.hub.clone(), pb::Request { id, query: None }),
                });
            }
            Kind::Request(request) => return Some(queries::answer(self.hub.clone(), request)),
            // Replies and pongs are matched to their requests, pings answered, by the mesh.
            Kind::Hello(_)
            | Kind::Heartbeat(_)
            | Kind::Reply(_)
            | Kind::Ping(_)
            | Kind::Pong(_) => {}
        }
        None
    }

    fn link_up(&self, peer: &str) {
        self.rooms.link_up(peer);
    }

    fn link_down(&self, peer: &str) {
        self.rooms.link_down(peer);
    }
}
