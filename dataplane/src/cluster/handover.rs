//! Connection state recovery across nodes (docs/recovery.md): finding the node that holds
//! a session, taking it over from there, and a draining node's hand-over of its parked
//! sessions to live peers chosen by consistent hashing on the session id.
//!
//! The order of a take-over is what makes it lossless: the new holder first joins the
//! session's rooms and waits until every node knows (so every later broadcast reaches it);
//! only then does the old holder, after its own barrier (so every broadcast sent to it
//! before has arrived), take the snapshot of what the client missed and let the session go.
//! Packets that reached both are dropped by offset (`socketio::recovery::plan`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::mesh::Mesh;
use super::proto::{self as pb, message::Kind, request::Query};
use super::ring::Ring;
use super::rooms::RoomSync;
use crate::engine::Frame;
use crate::socketio::recovery::{ids, Handover, Replayed, SessionState, Tail, Unrecoverable};
use crate::socketio::Hub;

/// Sessions per AdoptSessions request.
const ADOPT_BATCH: usize = 256;
/// Encoded tail bytes per CommitSessions request (well under `maxPeerMessageBytes`).
const COMMIT_BATCH_BYTES: usize = 4 << 20;

/// The cluster's side of [`Handover`].
pub struct MeshHandover {
    pub mesh: Arc<Mesh>,
    pub rooms: Arc<RoomSync>,
}

fn request(id: u64, query: Query) -> pb::Message {
    pb::Message::of(Kind::Request(pb::Request {
        id,
        query: Some(query),
    }))
}

fn parse_state(reply: &pb::Reply) -> Option<SessionState> {
    serde_json::from_slice::<Option<SessionState>>(&reply.json)
        .ok()
        .flatten()
}

impl Handover for MeshHandover {
    fn find(&self, pid: &str) -> BoxFuture<'static, Result<(String, SessionState), Unrecoverable>> {
        let mesh = self.mesh.clone();
        let pid = pid.to_string();
        Box::pin(async move {
            let timeout = mesh.request_timeout();
            let ask = |id| request(id, Query::FindSession(pb::FindSession { pid: pid.clone() }));
            // The node that created the session first; it usually still holds it.
            let named = ids::pid_member(&pid)
                .filter(|m| *m != mesh.me())
                .map(str::to_string);
            if let Some(named) = &named {
                if let Some(state) = mesh
                    .ask(named, ask, timeout)
                    .await
                    .as_ref()
                    .and_then(parse_state)
                {
                    return Ok((named.clone(), state));
                }
            }
            // Moved since (recovered elsewhere, or handed over by a draining node): ask all.
            let (replies, _) = mesh.ask_all(ask, timeout).await;
            replies
                .into_iter()
                .filter(|(from, _)| Some(from) != named.as_ref())
                .find_map(|(from, reply)| parse_state(&reply).map(|s| (from, s)))
                .ok_or(Unrecoverable::UnknownSession)
        })
    }

    fn take(
        &self,
        holder: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> BoxFuture<'static, Result<Tail, Unrecoverable>> {
        let mesh = self.mesh.clone();
        let holder = holder.to_string();
        let query = pb::TakeSession {
            pid: pid.to_string(),
            offset: offset.unwrap_or_default().to_string(),
            has_offset: offset.is_some(),
        };
        Box::pin(async move {
            // The holder waits for its own barrier before answering.
            let timeout = mesh.request_timeout() * 2;
            let reply = mesh
                .ask(
                    &holder,
                    |id| request(id, Query::TakeSession(query)),
                    timeout,
                )
                .await
                .ok_or(Unrecoverable::Unreachable)?;
            tail_from_proto(reply.tail.ok_or(Unrecoverable::Unreachable)?)
        })
    }

    fn propagated(&self) -> BoxFuture<'static, ()> {
        Box::pin(self.rooms.propagated())
    }
}

/// A hand-over result on the wire.
pub fn tail_to_proto(pid: &str, tail: Result<Tail, Unrecoverable>) -> pb::SessionTail {
    match tail {
        Ok(tail) => pb::SessionTail {
            pid: pid.to_string(),
            ok: true,
            error: String::new(),
            has_anchor: tail.anchor.is_some(),
            anchor: tail.anchor.as_deref().unwrap_or_default().to_string(),
            entries: tail
                .entries
                .into_iter()
                .filter_map(|r| {
                    let (Frame::Text(text), rest) = r.frames.split_first()? else {
                        return None;
                    };
                    Some(pb::ReplayedPacket {
                        offset: r.offset.to_string(),
                        packet: text.clone().into(),
                        attachments: rest
                            .iter()
                            .filter_map(|f| match f {
                                Frame::Binary(b) => Some(b.clone()),
                                Frame::Text(_) => None,
                            })
                            .collect(),
                    })
                })
                .collect(),
        },
        Err(why) => pb::SessionTail {
            pid: pid.to_string(),
            error: why.label().to_string(),
            ..Default::default()
        },
    }
}

/// A hand-over result from the wire; a peer's packets are checked like a broadcast's.
pub fn tail_from_proto(t: pb::SessionTail) -> Result<Tail, Unrecoverable> {
    if !t.ok {
        return Err(match t.error.as_str() {
            "unknown_offset" => Unrecoverable::UnknownOffset,
            "truncated" => Unrecoverable::Truncated,
            "too_much_missed" => Unrecoverable::TooMuchMissed,
            "busy" => Unrecoverable::Busy,
            _ => Unrecoverable::UnknownSession,
        });
    }
    let mut entries = Vec::with_capacity(t.entries.len());
    for e in t.entries {
        let text = Utf8Bytes::try_from(e.packet).map_err(|_| Unrecoverable::Unreachable)?;
        if !ids::is_offset(&e.offset) {
            return Err(Unrecoverable::Unreachable);
        }
        let mut frames = Vec::with_capacity(1 + e.attachments.len());
        frames.push(Frame::Text(text));
        frames.extend(e.attachments.into_iter().map(Frame::Binary));
        entries.push(Replayed {
            offset: Arc::from(e.offset),
            frames,
        });
    }
    Ok(Tail {
        anchor: t.has_anchor.then(|| Arc::from(t.anchor)),
        entries,
    })
}

/// What a draining node did with its parked sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoverReport {
    pub sessions: usize,
    pub handed_over: usize,
}

/// Hands every parked session of this (draining) node to a live peer chosen by consistent
/// hashing on its pid: the peer adopts them (joins their rooms), then this node sends each
/// one's tail and lets it go. Sessions a peer did not take stay here and end with the
/// process.
pub async fn hand_over_all(hub: &Hub, mesh: &Mesh) -> HandoverReport {
    let states = hub.parked_sessions();
    let mut report = HandoverReport {
        sessions: states.len(),
        handed_over: 0,
    };
    if states.is_empty() {
        return report;
    }
    let ring = Ring::new(mesh.connected());
    if ring.is_empty() {
        tracing::warn!(
            sessions = states.len(),
            "no live peer to hand sessions over to"
        );
        return report;
    }
    let mut by_peer: BTreeMap<String, Vec<SessionState>> = BTreeMap::new();
    for state in states {
        if let Some(owner) = ring.owner("recovery", &state.pid) {
            by_peer.entry(owner.to_string()).or_default().push(state);
        }
    }
    let timeout = mesh.request_timeout() * 3;
    for (peer, states) in by_peer {
        for batch in states.chunks(ADOPT_BATCH) {
            let json = serde_json::to_vec(batch).unwrap_or_default();
            let ask = |id| {
                request(
                    id,
                    Query::AdoptSessions(pb::AdoptSessions {
                        states: json.into(),
                    }),
                )
            };
            let Some(reply) = mesh.ask(&peer, ask, timeout).await else {
                tracing::warn!(%peer, sessions = batch.len(), "peer did not adopt sessions");
                continue;
            };
            let adopted: HashSet<String> = serde_json::from_slice(&reply.json).unwrap_or_default();
            // Every node now delivers the adopted sessions' rooms to the peer; after this
            // node's own barrier, nothing more for them can arrive here.
            hub.rooms_propagated().await;
            let tails: Vec<pb::SessionTail> = batch
                .iter()
                .filter(|s| adopted.contains(&s.pid))
                .map(|s| tail_to_proto(&s.pid, hub.release_session(&s.pid)))
                .collect();
            report.handed_over += tails.iter().filter(|t| t.ok).count();
            send_commits(mesh, &peer, tails, timeout).await;
        }
    }
    tracing::info!(
        sessions = report.sessions,
        handed_over = report.handed_over,
        "parked sessions handed over"
    );
    report
}

async fn send_commits(mesh: &Mesh, peer: &str, tails: Vec<pb::SessionTail>, timeout: Duration) {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut tails = tails.into_iter().peekable();
    while let Some(tail) = tails.next() {
        bytes += tail
            .entries
            .iter()
            .map(|e| e.packet.len() + e.attachments.iter().map(|a| a.len()).sum::<usize>())
            .sum::<usize>();
        batch.push(tail);
        if bytes >= COMMIT_BATCH_BYTES || tails.peek().is_none() {
            let commit = pb::CommitSessions {
                tails: std::mem::take(&mut batch),
            };
            if mesh
                .ask(
                    peer,
                    |id| request(id, Query::CommitSessions(commit)),
                    timeout,
                )
                .await
                .is_none()
            {
                tracing::warn!(%peer, "peer did not confirm session tails");
            }
            bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn tails_cross_the_wire_and_bad_ones_are_refused() {
        let tail = Tail {
            anchor: Some(Arc::from("abc-1")),
            entries: vec![Replayed {
                offset: Arc::from("abc-2"),
                frames: vec![
                    Frame::from(
                        "451-[\"e\",{\"_placeholder\":true,\"num\":0},\"abc-2\"]".to_string(),
                    ),
                    Frame::Binary(Bytes::from_static(b"\x01")),
                ],
            }],
        };
        let wire = tail_to_proto("p", Ok(tail.clone()));
        assert_eq!(tail_from_proto(wire.clone()).unwrap(), tail);
        let mut bad = wire.clone();
        bad.entries[0].packet = Bytes::from_static(b"\xff");
        assert!(tail_from_proto(bad).is_err());
        let mut bad = wire;
        bad.entries[0].offset = "x\"y".into();
        assert!(tail_from_proto(bad).is_err());
        let refused = tail_to_proto("p", Err(Unrecoverable::TooMuchMissed));
        assert_eq!(
            tail_from_proto(refused).unwrap_err(),
            Unrecoverable::TooMuchMissed
        );
    }
}
