//! The packets a node delivered recently, in the order it delivered them, so that a session
//! cut off mid-stream can be sent what it missed. Plain data: no locks, no I/O, no clock
//! (the caller passes `now`).
//!
//! One log per node, not one buffer per socket: a broadcast is kept once (its frames are
//! the `Bytes` the outboxes already hold) whatever the number of recipients, and a connected
//! socket costs nothing until it disconnects. Which packets a session missed is decided at
//! replay time from each entry's selector and the session's rooms, as socket.io's
//! in-memory adapter does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Frame;
use crate::socketio::rooms::Selector;

/// How much the log keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_bytes: usize,
    /// Entries older than this are dropped (no session can still need them).
    pub retention: Duration,
}

/// Bounds of one session's replay.
#[derive(Debug, Clone, Copy)]
pub struct SessionBounds {
    pub max_packets: usize,
    pub max_bytes: usize,
}

/// Why a session cannot be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrecoverable {
    #[error("the session is unknown or expired")]
    UnknownSession,
    #[error("the offset is unknown (the packets after it are gone)")]
    UnknownOffset,
    #[error("packets the session missed are no longer kept")]
    Truncated,
    #[error("the session missed more than its bounds allow")]
    TooMuchMissed,
    #[error("the session is being handed over")]
    Busy,
    #[error("the node holding the session did not answer")]
    Unreachable,
}

impl Unrecoverable {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Unrecoverable::UnknownSession => "unknown_session",
            Unrecoverable::UnknownOffset => "unknown_offset",
            Unrecoverable::Truncated => "truncated",
            Unrecoverable::TooMuchMissed => "too_much_missed",
            Unrecoverable::Busy => "busy",
            Unrecoverable::Unreachable => "unreachable",
        }
    }
}

/// A packet to send again: its offset (the string the client reports) and its frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub offset: Arc<str>,
    pub frames: Vec<Frame>,
}

impl Replayed {
    pub fn bytes(&self) -> usize {
        self.offset.len() + self.frames.iter().map(Frame::len).sum::<usize>()
    }
}

struct Entry {
    seq: u64,
    offset: Arc<str>,
    nsp: Arc<str>,
    selector: Selector,
    frames: Vec<Frame>,
    bytes: usize,
    at: Instant,
}

/// The node's recent deliveries, numbered by a sequence local to the node.
pub struct Log {
    entries: VecDeque<Entry>,
    by_offset: HashMap<Arc<str>, u64>,
    /// The sequence number the next entry gets.
    next: u64,
    /// Every entry below this sequence number has been dropped.
    dropped_below: u64,
    bytes: usize,
    limits: LogLimits,
}

impl Log {
    pub fn new(limits: LogLimits) -> Self {
        Self {
            entries: VecDeque::new(),
            by_offset: HashMap::new(),
            next: 0,
            dropped_below: 0,
            bytes: 0,
            limits,
        }
    }

    /// The sequence number of the next entry: a session that starts now missed nothing
    /// before it.
    pub fn head(&self) -> u64 {
        self.next
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps a delivered packet. `frames` are the shared frames the recipients got.
    pub fn append(
        &mut self,
        now: Instant,
        offset: Arc<str>,
        nsp: Arc<str>,
        selector: &Selector,
        frames: &[Frame],
    ) {
        let bytes = frames.iter().map(Frame::len).sum::<usize>()
            + offset.len()
            + selector
                .rooms
                .iter()
                .chain(&selector.except)
                .map(String::len)
                .sum::<usize>()
            + std::mem::size_of::<Entry>();
        let seq = self.next;
        self.next += 1;
        self.by_offset.insert(offset.clone(), seq);
        self.bytes += bytes;
        self.entries.push_back(Entry {
            seq,
            offset,
            nsp,
            selector: selector.clone(),
            frames: frames.to_vec(),
            bytes,
            at: now,
        });
        self.prune(now);
    }

    /// Drops entries over the byte budget or older than the retention.
    pub fn prune(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let old = now.saturating_duration_since(front.at) > self.limits.retention;
            if !old && self.bytes <= self.limits.max_bytes {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.bytes;
                self.dropped_below = e.seq + 1;
                if self.by_offset.get(&e.offset) == Some(&e.seq) {
                    self.by_offset.remove(&e.offset);
                }
            }
        }
    }

    /// Where `offset` is in the log, if it is still kept.
    pub fn position(&self, offset: &str) -> Option<u64> {
        self.by_offset.get(offset).copied()
    }

    /// The packets from sequence `from` on that a socket `id` with `rooms` in `nsp` was
    /// (or would have been) sent, skipping the offsets in `skip`. Fails when entries from
    /// `from` on were dropped, or when the bounds are exceeded.
    pub fn matching(
        &self,
        from: u64,
        nsp: &str,
        id: &str,
        rooms: &[Arc<str>],
        skip: &HashSet<&str>,
        bounds: SessionBounds,
    ) -> Result<Vec<Replayed>, Unrecoverable> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.picked(from, nsp, id, rooms, skip)? {
            bytes += e.bytes;
            if out.len() >= bounds.max_packets || bytes > bounds.max_bytes {
                return Err(Unrecoverable::TooMuchMissed);
            }
            out.push(e.replayed());
        }
        Ok(out)
    }

    /// [`Log::matching`] without bounds, split at `cut`: the offset of the last packet
    /// logged before it (what a client that was live here until then surely got), and the
    /// packets from then on.
    pub fn matching_since(
        &self,
        from: u64,
        nsp: &str,
        id: &str,
        rooms: &[Arc<str>],
        skip: &HashSet<&str>,
        cut: Instant,
    ) -> Result<(Option<Arc<str>>, Vec<Replayed>), Unrecoverable> {
        let mut last_before = None;
        let mut after = Vec::new();
        for e in self.picked(from, nsp, id, rooms, skip)? {
            if e.at < cut {
                last_before = Some(e.offset.clone());
            } else {
                after.push(e.replayed());
            }
        }
        Ok((last_before, after))
    }

    /// The entries from sequence `from` on that a socket `id` with `rooms` in `nsp` was sent,
    /// but those in `skip`; fails when some of them were dropped.
    fn picked<'a>(
        &'a self,
        from: u64,
        nsp: &'a str,
        id: &'a str,
        rooms: &'a [Arc<str>],
        skip: &'a HashSet<&str>,
    ) -> Result<impl Iterator<Item = &'a Entry> + 'a, Unrecoverable> {
        if from < self.dropped_below {
            return Err(Unrecoverable::Truncated);
        }
        let first = self.entries.front().map_or(self.next, |e| e.seq);
        let skip_n = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
        Ok(self.entries.iter().skip(skip_n).filter(move |e| {
            &*e.nsp == nsp && !skip.contains(&*e.offset) && e.selector.picks(id, rooms)
        }))
    }
}

impl Entry {
    fn replayed(&self) -> Replayed {
        Replayed {
            offset: self.offset.clone(),
            frames: self.frames.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Log {
        Log::new(LogLimits {
            max_bytes: 1 << 20,
            retention: Duration::from_secs(60),
        })
    }

    const WIDE: SessionBounds = SessionBounds {
        max_packets: 100,
        max_bytes: 1 << 20,
    };

    fn add(log: &mut Log, now: Instant, offset: &str, selector: Selector) {
        let frames = [Frame::from(format!("42[\"e\",\"{offset}\"]"))];
        log.append(now, Arc::from(offset), Arc::from("/"), &selector, &frames);
    }

    fn offsets(r: &[Replayed]) -> Vec<&str> {
        r.iter().map(|r| &*r.offset).collect()
    }

    #[test]
    fn replays_what_the_rooms_picked_after_a_point() {
        let now = Instant::now();
        let mut l = log();
        let rooms: Vec<Arc<str>> = vec![Arc::from("a")];
        add(&mut l, now, "o1", Selector::rooms(["a"]));
        let from = l.position("o1").unwrap() + 1;
        add(&mut l, now, "o2", Selector::rooms(["b"]));
        add(&mut l, now, "o3", Selector::all());
        add(&mut l, now, "o4", Selector::rooms(["a"]).except(["me"]));
        add(&mut l, now, "o5", Selector::rooms(["me"]));
        let none = HashSet::new();
        let r = l.matching(from, "/", "me", &rooms, &none, WIDE).unwrap();
        assert_eq!(offsets(&r), ["o3", "o5"]);
        let r = l.matching(0, "/other", "me", &rooms, &none, WIDE).unwrap();
        assert!(r.is_empty());
        let skip = HashSet::from(["o3"]);
        let r = l.matching(0, "/", "me", &rooms, &skip, WIDE).unwrap();
        assert_eq!(offsets(&r), ["o1", "o5"]);
    }

    #[test]
    fn bounds_and_pruning_refuse_rather_than_replay_part() {
        let now = Instant::now();
        let mut l = Log::new(LogLimits {
            max_bytes: 3 * (std::mem::size_of::<Entry>() + 20),
            retention: Duration::from_secs(10),
        });
        for i in 0..3 {
            add(&mut l, now, &format!("o{i}"), Selector::all());
        }
        let none = HashSet::new();
        let tight = SessionBounds {
            max_packets: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            l.matching(0, "/", "me", &[], &none, tight).unwrap_err(),
            Unrecoverable::TooMuchMissed
        );
        // Over the byte budget: the oldest goes, and a replay from before it is refused.
        add(&mut l, now, "o3", Selector::all());
        assert!(l.position("o0").is_none());
        assert_eq!(
            l.matching(0, "/", "me", &[], &none, WIDE).unwrap_err(),
            Unrecoverable::Truncated
        );
        let from = l.position("o1").unwrap();
        assert_eq!(
            l.matching(from, "/", "me", &[], &none, WIDE).unwrap().len(),
            3
        );
        // Past the retention everything goes.
        l.prune(now + Duration::from_secs(11));
        assert!(l.is_empty());
        assert_eq!(l.bytes(), 0);
        assert_eq!(
            l.matching(l.head() - 1, "/", "me", &[], &none, WIDE)
                .unwrap_err(),
            Unrecoverable::Truncated
        );
        assert!(l
            .matching(l.head(), "/", "me", &[], &none, WIDE)
            .unwrap()
            .is_empty());
    }
}
