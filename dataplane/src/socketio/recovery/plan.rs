//! What to send a session that comes back: the pure decision, from what the node logged
//! since the session started here and what an earlier holder handed over with it.
//!
//! A session's packets are known to the node that delivered them, in that node's order.
//! When a session moves to another node (recovered there, or handed over by a draining
//! node) the old holder sends along its own view, the *tail*: the packets the client may
//! not have received, in the order it would have received them, and the offset it had
//! before them (the *anchor*). The new holder joins the session's rooms before the old one
//! takes its snapshot, so every later packet is in the new holder's log; packets in both
//! are dropped by offset. A packet in the tail always comes before a packet only in the
//! new log from the same sender (the new log has it only because that sender had seen
//! the join), so tail-then-log keeps each sender's order.

use std::collections::HashSet;
use std::sync::Arc;

use super::log::{Log, Replayed, SessionBounds, Unrecoverable};

/// What an earlier holder of a session handed over: see the module doc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tail {
    /// The client's offset just before `entries`; `None`: from the session's start.
    pub anchor: Option<Arc<str>>,
    pub entries: Vec<Replayed>,
}

/// The recovery state of one socket on the node holding it.
#[derive(Debug, Clone)]
pub struct SessionRecovery {
    pub pid: Arc<str>,
    /// The log sequence from which this node's entries concern the session.
    pub start: u64,
    pub tail: Tail,
    /// For a socket that was live here and is parked: its client surely got what was
    /// delivered before this instant (what a hand-over can leave out).
    pub received_before: Option<std::time::Instant>,
    /// Why a parked socket's connection ended (what the app hears if it is not recovered).
    pub parked_for: Option<crate::engine::CloseReason>,
}

/// Who the session is: what decides which logged packets it was sent.
pub struct Member<'a> {
    pub nsp: &'a str,
    pub id: &'a str,
    pub rooms: &'a [Arc<str>],
}

/// The packets a session whose client last got `offset` (`None`: nothing yet) must be
/// sent again, in order.
pub fn plan(
    state: &SessionRecovery,
    offset: Option<&str>,
    log: &Log,
    member: &Member<'_>,
    bounds: SessionBounds,
) -> Result<Vec<Replayed>, Unrecoverable> {
    let tail = &state.tail;
    let from_tail: &[Replayed] = match offset {
        None if tail.anchor.is_none() => &tail.entries,
        None => return Err(Unrecoverable::UnknownOffset),
        Some(o) if tail.anchor.as_deref() == Some(o) => &tail.entries,
        Some(o) => match tail.entries.iter().position(|e| &*e.offset == o) {
            Some(i) => &tail.entries[i + 1..],
            None => {
                // The client got packets of this node's log: replay after it.
                return match log.position(o) {
                    Some(p) if p >= state.start => {
                        let skip = tail_offsets(tail);
                        log.matching(p + 1, member.nsp, member.id, member.rooms, &skip, bounds)
                    }
                    _ => Err(Unrecoverable::UnknownOffset),
                };
            }
        },
    };
    let tail_bytes: usize = from_tail.iter().map(Replayed::bytes).sum();
    if from_tail.len() > bounds.max_packets || tail_bytes > bounds.max_bytes {
        return Err(Unrecoverable::TooMuchMissed);
    }
    let rest = SessionBounds {
        max_packets: bounds.max_packets - from_tail.len(),
        max_bytes: bounds.max_bytes - tail_bytes,
    };
    let skip = tail_offsets(tail);
    let local = log.matching(
        state.start,
        member.nsp,
        member.id,
        member.rooms,
        &skip,
        rest,
    )?;
    let mut out = from_tail.to_vec();
    out.extend(local);
    Ok(out)
}

/// What to hand over with a session whose client's offset is not known (a draining node
/// handing it to a peer). For a socket that was live here, what its client surely got is
/// left out: the tail starts after the last packet delivered before `received_before`.
/// Otherwise everything since the session started; past the bounds, its most recent part,
/// anchored at the last packet left out.
pub fn handover_tail(
    state: &SessionRecovery,
    log: &Log,
    member: &Member<'_>,
    bounds: SessionBounds,
) -> Result<Tail, Unrecoverable> {
    let skip = tail_offsets(&state.tail);
    let cut = state
        .received_before
        .unwrap_or_else(std::time::Instant::now);
    let (last_before, local) =
        log.matching_since(state.start, member.nsp, member.id, member.rooms, &skip, cut)?;
    let (mut anchor, mut all) = match (state.received_before, last_before) {
        // The client got a packet of this node's log: it had everything up to it.
        (Some(_), Some(last)) => (Some(last), local),
        _ => {
            // Without a point the client surely reached, every packet since the start.
            let mut all = state.tail.entries.clone();
            all.extend(log.matching(
                state.start,
                member.nsp,
                member.id,
                member.rooms,
                &skip,
                UNBOUNDED,
            )?);
            (state.tail.anchor.clone(), all)
        }
    };
    let mut bytes: usize = all.iter().map(Replayed::bytes).sum();
    let mut cut_n = 0;
    while all.len() - cut_n > bounds.max_packets || bytes > bounds.max_bytes {
        bytes -= all[cut_n].bytes();
        anchor = Some(all[cut_n].offset.clone());
        cut_n += 1;
    }
    all.drain(..cut_n);
    Ok(Tail {
        anchor,
        entries: all,
    })
}

const UNBOUNDED: SessionBounds = SessionBounds {
    max_packets: usize::MAX,
    max_bytes: usize::MAX,
};

fn tail_offsets(tail: &Tail) -> HashSet<&str> {
    tail.entries
        .iter()
        .map(|e| &*e.offset)
        .chain(tail.anchor.as_deref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Frame;
    use crate::socketio::recovery::log::LogLimits;
    use crate::socketio::rooms::Selector;
    use std::time::{Duration, Instant};

    const WIDE: SessionBounds = SessionBounds {
        max_packets: 100,
        max_bytes: 1 << 20,
    };

    fn replayed(offset: &str) -> Replayed {
        Replayed {
            offset: Arc::from(offset),
            frames: vec![Frame::from(format!("42[\"e\",\"{offset}\"]"))],
        }
    }

    fn log_with(offsets: &[&str]) -> Log {
        let mut log = Log::new(LogLimits {
            max_bytes: 1 << 20,
            retention: Duration::from_secs(60),
        });
        append(&mut log, offsets);
        log
    }

    /// Logs a namespace-wide packet per offset, now.
    fn append(log: &mut Log, offsets: &[&str]) {
        for o in offsets {
            let r = replayed(o);
            log.append(
                Instant::now(),
                r.offset,
                Arc::from("/"),
                &Selector::all(),
                &r.frames,
            );
        }
    }

    fn names(r: &[Replayed]) -> Vec<&str> {
        r.iter().map(|r| &*r.offset).collect()
    }

    const ME: Member<'static> = Member {
        nsp: "/",
        id: "me",
        rooms: &[],
    };

    fn state(start: u64, anchor: Option<&str>, tail: &[&str]) -> SessionRecovery {
        SessionRecovery {
            pid: Arc::from("p"),
            start,
            tail: Tail {
                anchor: anchor.map(Arc::from),
                entries: tail.iter().map(|o| replayed(o)).collect(),
            },
            received_before: None,
            parked_for: None,
        }
    }

    #[test]
    fn a_local_session_gets_what_follows_its_offset() {
        let log = log_with(&["before", "a", "b", "c"]);
        let s = state(1, None, &[]);
        assert_eq!(
            names(&plan(&s, Some("a"), &log, &ME, WIDE).unwrap()),
            ["b", "c"]
        );
        assert_eq!(
            names(&plan(&s, None, &log, &ME, WIDE).unwrap()),
            ["a", "b", "c"]
        );
        assert!(plan(&s, Some("c"), &log, &ME, WIDE).unwrap().is_empty());
        // Offsets from before the session, or unknown, are refused: never another
        // session's history.
        assert_eq!(
            plan(&s, Some("before"), &log, &ME, WIDE).unwrap_err(),
            Unrecoverable::UnknownOffset
        );
        assert_eq!(
            plan(&s, Some("zzz"), &log, &ME, WIDE).unwrap_err(),
            Unrecoverable::UnknownOffset
        );
    }

    #[test]
    fn a_moved_session_gets_the_tail_then_the_new_log_without_duplicates() {
        // The old holder had delivered x, y, z; the new one joined while y was in flight,
        // so its log has y, z and then w.
        let log = log_with(&["y", "z", "w"]);
        let s = state(0, Some("v"), &["x", "y", "z"]);
        let got = plan(&s, Some("v"), &log, &ME, WIDE).unwrap();
        assert_eq!(names(&got), ["x", "y", "z", "w"]);
        let got = plan(&s, Some("y"), &log, &ME, WIDE).unwrap();
        assert_eq!(names(&got), ["z", "w"]);
        assert_eq!(
            plan(&s, None, &log, &ME, WIDE).unwrap_err(),
            Unrecoverable::UnknownOffset,
            "a client that had something cannot claim to have had nothing"
        );
        let tight = SessionBounds {
            max_packets: 3,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            plan(&s, Some("v"), &log, &ME, tight).unwrap_err(),
            Unrecoverable::TooMuchMissed
        );
    }

    #[test]
    fn a_handed_over_tail_keeps_the_most_recent_within_bounds() {
        let log = log_with(&["a", "b", "c", "d"]);
        let s = state(0, None, &[]);
        let all = handover_tail(&s, &log, &ME, WIDE).unwrap();
        assert_eq!(all.anchor, None);
        assert_eq!(names(&all.entries), ["a", "b", "c", "d"]);
        let two = SessionBounds {
            max_packets: 2,
            max_bytes: 1 << 20,
        };
        let recent = handover_tail(&s, &log, &ME, two).unwrap();
        assert_eq!(recent.anchor.as_deref(), Some("b"));
        assert_eq!(names(&recent.entries), ["c", "d"]);
        // On the next node, a client that had b gets c, d; one that had only a cannot be
        // recovered.
        let next = SessionRecovery {
            pid: Arc::from("p"),
            start: 0,
            tail: recent,
            received_before: None,
            parked_for: None,
        };
        let empty = log_with(&[]);
        assert_eq!(
            names(&plan(&next, Some("b"), &empty, &ME, WIDE).unwrap()),
            ["c", "d"]
        );
        assert!(plan(&next, Some("a"), &empty, &ME, WIDE).is_err());
    }

    #[test]
    fn a_socket_live_here_hands_over_only_what_its_client_may_have_missed() {
        let mut log = log_with(&["a", "b"]);
        let parked_at = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        append(&mut log, &["c", "d"]);
        let mut s = state(0, None, &[]);
        s.received_before = Some(parked_at);
        let tail = handover_tail(&s, &log, &ME, WIDE).unwrap();
        assert_eq!(tail.anchor.as_deref(), Some("b"));
        assert_eq!(names(&tail.entries), ["c", "d"]);
        // Nothing delivered here before the cut: the whole history goes.
        let mut fresh = state(2, None, &["x"]);
        fresh.received_before = Some(parked_at);
        let tail = handover_tail(&fresh, &log, &ME, WIDE).unwrap();
        assert_eq!(tail.anchor, None);
        assert_eq!(names(&tail.entries), ["x", "c", "d"]);
    }
}
