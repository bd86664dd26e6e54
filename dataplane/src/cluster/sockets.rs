//! Cluster-wide socketsJoin, socketsLeave and disconnectSockets: the origin applies the
//! operation to its own sockets and sends it to every peer, which applies it to theirs.
//! Fire and forget, as in Node's ClusterAdapter; the peer link keeps the order of everything
//! one node sends to another, so an emit sent after a join reaches the joined sockets.

use super::proto::{self as pb, message::Kind, sockets_op::Action};
use crate::socketio::{Hub, Selector};

/// What to do to the selected sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketsAction {
    Join(Vec<String>),
    Leave(Vec<String>),
    Disconnect { close: bool },
}

/// The peer message of an operation on the sockets `selector` picks in `nsp`; `id` (non-zero
/// for joins) asks the receiver to settle it once applied (see `cluster::interest`).
pub fn to_message(nsp: &str, selector: &Selector, action: SocketsAction, id: u64) -> pb::Message {
    let action = match action {
        SocketsAction::Join(rooms) => Action::Join(pb::RoomList { rooms }),
        SocketsAction::Leave(rooms) => Action::Leave(pb::RoomList { rooms }),
        SocketsAction::Disconnect { close } => Action::Disconnect(pb::Disconnect { close }),
    };
    pb::Message::of(Kind::Sockets(pb::SocketsOp {
        namespace: nsp.to_string(),
        rooms: selector.rooms.clone(),
        except: selector.except.clone(),
        action: Some(action),
        id,
    }))
}

/// The selector and action of a peer's operation; `None` without an action.
pub fn from_message(op: pb::SocketsOp) -> Option<(Selector, SocketsAction)> {
    let action = match op.action? {
        Action::Join(list) => SocketsAction::Join(list.rooms),
        Action::Leave(list) => SocketsAction::Leave(list.rooms),
        Action::Disconnect(d) => SocketsAction::Disconnect { close: d.close },
    };
    let selector = Selector {
        rooms: op.rooms,
        except: op.except,
    };
    Some((selector, action))
}

/// Applies a peer's operation to this node's sockets; returns how many were selected.
pub fn apply(hub: &Hub, from: &str, op: pb::SocketsOp) -> usize {
    // No live namespace: no local sockets.
    let Some(ns) = hub.of(&op.namespace) else {
        return 0;
    };
    let Some((selector, action)) = from_message(op) else {
        tracing::warn!(peer = from, nsp = %ns.name(), "sockets operation without an action ignored");
        return 0;
    };
    match action {
        SocketsAction::Join(rooms) => ns.sockets_join(&selector, &rooms),
        SocketsAction::Leave(rooms) => ns.sockets_leave(&selector, &rooms),
        SocketsAction::Disconnect { close } => ns.disconnect_sockets(&selector, close),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip() {
        let selector = Selector::rooms(["lobby"]).except(["vip"]);
        for action in [
            SocketsAction::Join(vec!["a".into(), "b".into()]),
            SocketsAction::Leave(vec!["a".into()]),
            SocketsAction::Disconnect { close: true },
        ] {
            let message = to_message("/chat", &selector, action.clone(), 3);
            let Some(Kind::Sockets(op)) = message.kind else {
                panic!("not a sockets operation");
            };
            assert_eq!(op.namespace, "/chat");
            assert_eq!(op.id, 3);
            assert_eq!(from_message(op), Some((selector.clone(), action)));
        }
        assert_eq!(from_message(pb::SocketsOp::default()), None);
    }
}
