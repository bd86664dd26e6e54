//! Cluster-wide broadcasts: the hub's [`Fanout`] sends each encoded broadcast to the peers
//! with members in its rooms (every peer for a namespace-wide one; see `cluster::interest`),
//! and broadcasts arriving from peers are delivered to this node's sockets.
//!
//! Every destination node gets a broadcast once and evaluates its rooms and exceptions
//! against its own sockets only; a broadcast that arrived from a peer is never forwarded
//! again. So each socket in the cluster gets exactly one copy, even when it is in several
//! target rooms.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::mesh::Mesh;
use super::proto::{self as pb, message::Kind};
use super::rooms::RoomSync;
use crate::engine::Frame;
use crate::socketio::{Fanout, Hub, Selector};

/// Forwards the hub's broadcasts to the peers that need them, and announces its rooms.
pub struct MeshFanout {
    pub mesh: Arc<Mesh>,
    pub rooms: Arc<RoomSync>,
}

impl Fanout for MeshFanout {
    fn forward(
        &self,
        nsp: &str,
        selector: &Selector,
        frames: &[Frame],
        volatile: bool,
        offset: Option<&str>,
    ) {
        let Some(message) = to_message(nsp, selector, frames, volatile, offset) else {
            tracing::warn!(nsp, "broadcast without a text packet not forwarded");
            return;
        };
        if selector.rooms.is_empty() {
            self.mesh.send_all(&message, volatile);
            return;
        }
        let linked = self.mesh.connected();
        for peer in self.rooms.targets(nsp, &selector.rooms, &linked) {
            self.mesh.send_to(&peer, message.clone(), volatile);
        }
    }

    fn room_changed(&self, nsp: &str, room: &str, present: bool) {
        self.rooms.room_changed(nsp, room, present);
    }

    fn rooms_propagated(&self) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(self.rooms.propagated())
    }
}

/// The peer message of an encoded broadcast; `None` when `frames` does not start with the
/// packet text.
pub fn to_message(
    nsp: &str,
    selector: &Selector,
    frames: &[Frame],
    volatile: bool,
    offset: Option<&str>,
) -> Option<pb::Message> {
    let Some((Frame::Text(text), attachments)) = frames.split_first() else {
        return None;
    };
    Some(pb::Message::of(Kind::Broadcast(pb::Broadcast {
        namespace: nsp.to_string(),
        rooms: selector.rooms.clone(),
        except: selector.except.clone(),
        volatile,
        // `Bytes` clones: the frames the local recipients hold, not copies.
        packet: text.clone().into(),
        attachments: attachments
            .iter()
            .filter_map(|f| match f {
                Frame::Binary(b) => Some(b.clone()),
                Frame::Text(_) => None,
            })
            .collect(),
        offset: offset.unwrap_or_default().to_string(),
    })))
}

/// Queues a peer's broadcast for the local sockets it selects; returns how many.
pub fn deliver(hub: &Hub, from: &str, mut b: pb::Broadcast) -> usize {
    // No live namespace: no local sockets to deliver to.
    let Some(ns) = hub.of(&b.namespace) else {
        return 0;
    };
    let volatile = b.volatile;
    // An offset that is not one of ours is not logged (it could never be asked for).
    let offset = std::mem::take(&mut b.offset);
    let offset = (!offset.is_empty() && !volatile).then_some(offset);
    match from_message(b) {
        Some((selector, frames)) => ns.deliver(&selector, &frames, volatile, offset.as_deref()),
        None => {
            tracing::warn!(peer = from, nsp = %ns.name(), "broadcast with a non-UTF-8 packet dropped");
            0
        }
    }
}

/// The selector and frames of a peer's broadcast; `None` when its packet is not UTF-8 (it
/// could not be a Socket.IO text packet).
pub fn from_message(b: pb::Broadcast) -> Option<(Selector, Vec<Frame>)> {
    let text = Utf8Bytes::try_from(b.packet).ok()?;
    let mut frames = Vec::with_capacity(1 + b.attachments.len());
    frames.push(Frame::Text(text));
    frames.extend(b.attachments.into_iter().map(Frame::Binary));
    let selector = Selector {
        rooms: b.rooms,
        except: b.except,
    };
    Some((selector, frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn broadcasts_cross_the_wire_unchanged_and_uncopied() {
        let frames = vec![
            Frame::from("451-[\"img\",{\"_placeholder\":true,\"num\":0}]".to_string()),
            Frame::Binary(Bytes::from_static(b"\x00\x01")),
        ];
        let selector = Selector::rooms(["a", "b"]).except(["c"]);
        let message = to_message("/chat", &selector, &frames, true, None).unwrap();
        let Some(Kind::Broadcast(b)) = message.kind else {
            panic!("not a broadcast");
        };
        assert_eq!(b.namespace, "/chat");
        assert!(b.volatile);
        // The packet shares the frame's buffer.
        let Frame::Text(text) = &frames[0] else {
            unreachable!()
        };
        assert_eq!(b.packet.as_ptr(), text.as_bytes().as_ptr());
        let (back_selector, back_frames) = from_message(b).unwrap();
        assert_eq!(back_selector, selector);
        assert_eq!(back_frames, frames);
    }

    #[test]
    fn malformed_broadcasts_are_refused() {
        assert!(to_message("/", &Selector::all(), &[], false, None).is_none());
        let binary_first = [Frame::Binary(Bytes::from_static(b"x"))];
        assert!(to_message("/", &Selector::all(), &binary_first, false, None).is_none());
        let b = pb::Broadcast {
            packet: Bytes::from_static(b"\xff\xfe"),
            ..Default::default()
        };
        assert!(from_message(b).is_none());
    }
}
