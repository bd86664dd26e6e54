//! Cluster-wide fetchSockets, rooms and emits with acks: the origin asks every peer in
//! routing, each answers about its own sockets, and the origin merges the answers with its
//! own.

use std::collections::BTreeMap;
use std::time::Duration;

use super::mesh::Answer;
use super::proto::{self as pb, message::Kind, request::Query};
use crate::ops::{socket_info, EmitOutcome, Redaction, RoomInfo, SocketInfo};
use crate::socketio::{Hub, Payload, Selector};

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

/// The request to emit to the sockets `selector` picks in `nsp` and collect their acks.
pub fn emit_with_ack(
    id: u64,
    nsp: &str,
    selector: &Selector,
    event: &str,
    payload: &Payload,
    timeout: Duration,
) -> pb::Message {
    request(
        id,
        Query::EmitWithAck(pb::EmitWithAck {
            namespace: nsp.to_string(),
            rooms: selector.rooms.clone(),
            except: selector.except.clone(),
            event: event.to_string(),
            // Serializing JSON values cannot fail.
            args: serde_json::to_vec(&payload.args)
                .unwrap_or_else(|_| b"[]".to_vec())
                .into(),
            attachments: payload.attachments.clone(),
            timeout_ms: timeout.as_millis() as u64,
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
pub fn answer(hub: Hub, request: pb::Request) -> Answer {
    let id = request.id;
    Box::pin(async move {
        let json = match request.query {
            Some(Query::FetchSockets(q)) => {
                let selector = Selector {
                    rooms: q.rooms,
                    except: q.except,
                };
                let redaction = Redaction::new(hub.config());
                let sockets: Vec<SocketInfo> = hub
                    .of(&q.namespace)
                    .map(|ns| {
                        ns.sockets(&selector)
                            .iter()
                            .map(|s| socket_info(s, redaction))
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
            Some(Query::EmitWithAck(q)) => serde_json::to_vec(&emit_here(&hub, q).await),
            Some(Query::FindSession(q)) => serde_json::to_vec(&hub.describe_session(&q.pid).await),
            Some(Query::TakeSession(q)) => {
                let offset = q.has_offset.then_some(q.offset.as_str());
                let tail =
                    super::handover::tail_to_proto(&q.pid, hub.take_session(&q.pid, offset).await);
                return pb::Message::of(Kind::Reply(pb::Reply {
                    id,
                    json: Default::default(),
                    tail: Some(tail),
                }));
            }
            Some(Query::AdoptSessions(q)) => {
                let states: Vec<crate::socketio::recovery::SessionState> =
                    serde_json::from_slice(&q.states).unwrap_or_default();
                let adopted = hub.adopt_sessions(&states);
                // Answered once every node delivers the adopted sessions' rooms here.
                hub.rooms_propagated().await;
                serde_json::to_vec(&adopted)
            }
            Some(Query::CommitSessions(q)) => {
                for t in q.tails {
                    let pid = t.pid.clone();
                    hub.commit_session(&pid, super::handover::tail_from_proto(t).ok());
                }
                Ok(b"[]".to_vec())
            }
            // A flush is answered by the ownership side (see `inbound`).
            Some(Query::Flush(_)) | None => Ok(b"[]".to_vec()),
        };
        pb::Message::of(Kind::Reply(pb::Reply {
            id,
            // Serializing these plain data types cannot fail; an empty list if it ever did.
            json: json.unwrap_or_else(|_| b"[]".to_vec()).into(),
            tail: None,
        }))
    })
}

/// A peer's emit with acks, run on this node's sockets.
async fn emit_here(hub: &Hub, q: pb::EmitWithAck) -> EmitOutcome {
    let none = EmitOutcome {
        recipients: 0,
        acks: Some(Vec::new()),
        timed_out: Some(false),
    };
    let Some(ns) = hub.of(&q.namespace) else {
        return none;
    };
    let Ok(args) = serde_json::from_slice(&q.args) else {
        tracing::warn!(nsp = %q.namespace, "emit with acks with unreadable arguments ignored");
        return none;
    };
    let payload = Payload {
        args,
        attachments: q.attachments,
    };
    let selector = Selector {
        rooms: q.rooms,
        except: q.except,
    };
    let acks = ns
        .broadcast_with_ack(
            &selector,
            &q.event,
            &payload,
            Duration::from_millis(q.timeout_ms),
        )
        .await;
    acks.into()
}

/// Adds peers' outcomes of an emit with acks to this node's.
pub fn merge_outcomes(
    mut total: EmitOutcome,
    replies: Vec<(String, pb::Reply)>,
    missing_peers: bool,
) -> EmitOutcome {
    let mut timed_out = total.timed_out.unwrap_or(false) || missing_peers;
    let mut acks = total.acks.take().unwrap_or_default();
    for (peer, reply) in replies {
        match serde_json::from_slice::<EmitOutcome>(&reply.json) {
            Ok(outcome) => {
                total.recipients += outcome.recipients;
                acks.extend(outcome.acks.unwrap_or_default());
                timed_out |= outcome.timed_out.unwrap_or(false);
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "unreadable emit outcome from a peer");
                timed_out = true;
            }
        }
    }
    total.acks = Some(acks);
    total.timed_out = Some(timed_out);
    total
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
    use crate::ops::AckView;

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
    fn emit_outcomes_add_up() {
        let ack = |id: &str| AckView {
            socket_id: id.into(),
            args: vec![serde_json::json!(1)],
            attachments: Vec::new(),
        };
        let here = EmitOutcome {
            recipients: 1,
            acks: Some(vec![ack("a")]),
            timed_out: Some(false),
        };
        let peer = EmitOutcome {
            recipients: 2,
            acks: Some(vec![ack("b")]),
            timed_out: Some(true),
        };
        let reply = pb::Reply {
            id: 1,
            json: serde_json::to_vec(&peer).unwrap().into(),
            tail: None,
        };
        let merged = merge_outcomes(here.clone(), vec![("p".into(), reply)], false);
        assert_eq!(merged.recipients, 3);
        assert_eq!(merged.acks, Some(vec![ack("a"), ack("b")]));
        assert_eq!(merged.timed_out, Some(true));
        // A peer that did not answer makes the whole emit timed out.
        let alone = merge_outcomes(here, Vec::new(), true);
        assert_eq!((alone.recipients, alone.timed_out), (1, Some(true)));
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
                    tail: None,
                },
            ),
            (
                "p2".to_string(),
                pb::Reply {
                    id: 1,
                    json: b"{".to_vec().into(),
                    tail: None,
                },
            ),
        ];
        assert_eq!(parse_lists::<RoomInfo>(replies), [room("a", 1)]);
    }
}
