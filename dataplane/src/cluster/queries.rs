//! Cluster-wide fetchSockets and rooms: the origin asks every peer in routing, each answers
//! about its own sockets, and the origin merges the answers with its own.

use std::collections::BTreeMap;

use super::proto::{self as pb, message::Kind, request::Query};
use crate::ops::{socket_info, RoomInfo, SocketInfo};
use crate::socketio::{Hub, Selector};

/// The request for the sockets `selector` picks in `nsp`.
pub fn fetch_sockets(id: u64, nsp: &str, selector: &Selector) -> pb::Message {
    request(
        id,
        Query::FetchSockets(pb::FetchSockets {
            namespace: nsp.to_string(),
            rooms: selector.rooms.clone(),
            except: selector.except.clone(),
        }),
    )
}

/// The request for the rooms of `nsp`.
pub fn rooms(id: u64, nsp: &str) -> pb::Message {
    request(
        id,
        Query::Rooms(pb::ListRooms {
            namespace: nsp.to_string(),
        }),
    )
}

fn request(id: u64, query: Query) -> pb::Message {
    pb::Message::of(Kind::Request(pb::Request {
        id,
        query: Some(query),
    }))
}

/// This node's answer to a peer's request (an empty list for a namespace it does not have).
pub fn answer(hub: &Hub, request: pb::Request) -> pb::Message {
    let json = match request.query {
        Some(Query::FetchSockets(q)) => {
            let selector = Selector {
                rooms: q.rooms,
                except: q.except,
            };
            let sockets: Vec<SocketInfo> = hub
                .of(&q.namespace)
                .map(|ns| {
                    ns.sockets(&selector)
                        .iter()
                        .map(|s| socket_info(s))
                        .collect()
                })
                .unwrap_or_default();
            serde_json::to_vec(&sockets)
        }
        Some(Query::Rooms(q)) => {
            let rooms: Vec<RoomInfo> = hub
                .of(&q.namespace)
                .map(|ns| {
                    ns.rooms()
                        .into_iter()
                        .map(|(name, members)| RoomInfo { name, members })
                        .collect()
                })
                .unwrap_or_default();
            serde_json::to_vec(&rooms)
        }
        None => Ok(b"[]".to_vec()),
    };
    pb::Message::of(Kind::Reply(pb::Reply {
        id: request.id,
        // Serializing these plain data types cannot fail; an empty list if it ever did.
        json: json.unwrap_or_else(|_| b"[]".to_vec()).into(),
    }))
}

/// The lists in peers' replies, in order; a reply that does not parse is logged and skipped.
pub fn parse_lists<T: serde::de::DeserializeOwned>(replies: Vec<(String, pb::Reply)>) -> Vec<T> {
    let mut out = Vec::new();
    for (peer, reply) in replies {
        match serde_json::from_slice::<Vec<T>>(&reply.json) {
            Ok(list) => out.extend(list),
            Err(error) => tracing::warn!(%peer, %error, "unreadable reply from a peer skipped"),
        }
    }
    out
}

/// Rooms of several nodes as one list: members added up per name, sorted by name.
pub fn merge_rooms(lists: impl IntoIterator<Item = RoomInfo>) -> Vec<RoomInfo> {
    let mut rooms = BTreeMap::new();
    for room in lists {
        *rooms.entry(room.name).or_insert(0) += room.members;
    }
    rooms
        .into_iter()
        .map(|(name, members)| RoomInfo { name, members })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, members: usize) -> RoomInfo {
        RoomInfo {
            name: name.into(),
            members,
        }
    }

    #[test]
    fn rooms_add_up_across_nodes() {
        let merged = merge_rooms([room("b", 1), room("a", 2), room("b", 3)]);
        assert_eq!(merged, [room("a", 2), room("b", 4)]);
    }

    #[test]
    fn unreadable_replies_are_skipped() {
        let ok = serde_json::to_vec(&[room("a", 1)]).unwrap();
        let replies = vec![
            (
                "p1".to_string(),
                pb::Reply {
                    id: 1,
                    json: ok.into(),
                },
            ),
            (
                "p2".to_string(),
                pb::Reply {
                    id: 1,
                    json: b"{".to_vec().into(),
                },
            ),
        ];
        assert_eq!(parse_lists::<RoomInfo>(replies), [room("a", 1)]);
    }
}
