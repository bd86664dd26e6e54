//! The bounded outbound queue of one Engine.IO session.
//!
//! Frames are immutable and reference-counted: a broadcast encodes its frame once and every
//! recipient's outbox holds a clone of the same `Bytes`. The transport that currently owns
//! the session (a pending polling GET or the WebSocket task) drains everything queued at
//! once, so many frames go out in one write.
//!
//! A WebSocket transport also attaches a [`FrameSink`]: when nothing is queued and its task
//! is not writing, a push writes the frames to the socket at once, from the pushing task
//! (a broadcast loop, say), without waking the transport task. Only what the socket does not
//! take at once is queued. This saves a task wake-up per delivery, the largest user-space
//! cost of a fan-out (bench/PROFILE.md).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One Engine.IO packet ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet including its type digit, e.g. `42["event"]` or `2` (ping).
    Text(Utf8Bytes),
    /// A binary message (a Socket.IO attachment).
    Binary(Bytes),
}

impl Frame {
    pub const PING: Frame = Frame::Text(Utf8Bytes::from_static("2"));
    pub const NOOP: Frame = Frame::Text(Utf8Bytes::from_static("6"));
    pub const CLOSE: Frame = Frame::Text(Utf8Bytes::from_static("1"));

    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame::Text(Utf8Bytes::from(text))
    }
}

/// What a [`FrameSink`] managed to write without waiting.
#[derive(Debug)]
pub enum SinkWrite {
    /// Every byte of the frames.
    All,
    /// Nothing (the socket is full or failed): queue the frames.
    Nothing,
    /// Part of them: these are the wire bytes still to write, before anything else.
    Rest(Bytes),
}

/// Writes frames straight to a transport's socket, never waiting.
pub trait FrameSink: Send + Sync + std::fmt::Debug {
    fn try_write(&self, frames: &mut dyn ExactSizeIterator<Item = &Frame>) -> SinkWrite;
}

/// What happened to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Written to the socket or queued for the transport.
    Queued,
    /// A volatile packet was dropped because the queue is full.
    DroppedVolatile,
    /// The queue is full of non-volatile frames: the session must be closed.
    Overflow,
    /// The session is closed; nothing was queued.
    Closed,
}

/// Queue limits, from `LimitsConfig`.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<(Frame, bool)>,
    bytes: usize,
    closed: bool,
    /// Frames queued before this many frames from the front must be written (flushed)
    /// before the rest: 0 means no boundary.
    boundary: usize,
    /// The transport's direct writer, when it has one.
    sink: Option<Arc<dyn FrameSink>>,
    /// Wire bytes of a frame the sink wrote in part: the transport writes them first.
    rest: Option<Bytes>,
    /// The transport task is writing: a push must not write around it.
    writing: bool,
    /// Frames wait for the end of a write-combining scope (`cork`), which writes them.
    deferred: bool,
}

impl Queue {
    /// Can a push write at once? Only if nothing is ahead of it.
    fn sink_free(&self) -> Option<&Arc<dyn FrameSink>> {
        self.sink_idle().filter(|_| self.frames.is_empty())
    }

    /// The sink, if neither the transport task nor the rest of a frame is in the way.
    fn sink_idle(&self) -> Option<&Arc<dyn FrameSink>> {
        let idle = self.rest.is_none() && !self.writing;
        self.sink.as_ref().filter(|_| idle)
    }

    /// Takes the frames up to the next flush boundary (all when there is none) into `out`.
    /// Returns true if frames remain queued.
    fn take_batch(&mut self, out: &mut Vec<Frame>) -> bool {
        let take = match self.boundary {
            0 => self.frames.len(),
            n => n.min(self.frames.len()),
        };
        self.boundary = 0;
        let taken: usize = self.frames.iter().take(take).map(|(f, _)| f.len()).sum();
        out.extend(self.frames.drain(..take).map(|(f, _)| f));
        self.bytes = self.bytes.saturating_sub(taken);
        let more = !self.frames.is_empty();
        if !more {
            // An idle session keeps no queue storage (a ping every 25 s would otherwise leave
            // 192 B behind on each idle connection); a busy one allocates it again per batch,
            // which is small next to the write the batch costs.
            self.frames = VecDeque::new();
        } else if self.frames.capacity() > 64 && self.frames.len() < 16 {
            self.frames.shrink_to(16);
        }
        more
    }
}

/// Outbound frames of one session plus the wake-up for its writer.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes a polling GET ([`Outbox::ready`]).
    ready: Notify,
    /// Wakes the WebSocket task ([`Outbox::poll_ready`]): it waits in this slot rather than
    /// in a `Notified` held by its future, which keeps the idle task a size class smaller.
    waker: AtomicWaker,
    woken: AtomicBool,
}

impl Outbox {
    /// Queues the frames of one packet (text then attachments) atomically, so concurrent
    /// broadcasts never interleave a packet's attachments.
    pub fn push(&self, frames: &[Frame], volatile: bool, limits: OutboxLimits) -> PushOutcome {
        self.push_inner(frames, volatile, limits, false).0
    }

    /// Like [`Outbox::push`], but inside a write-combining scope: a push that could write
    /// at once only queues. The second value is true the first time, when the caller must
    /// have [`Outbox::flush_deferred`] called at the end of the scope.
    pub fn push_deferred(
        &self,
        frames: &[Frame],
        volatile: bool,
        limits: OutboxLimits,
    ) -> (PushOutcome, bool) {
        self.push_inner(frames, volatile, limits, true)
    }

    fn push_inner(
        &self,
        frames: &[Frame],
        volatile: bool,
        limits: OutboxLimits,
        defer: bool,
    ) -> (PushOutcome, bool) {
        let size: usize = frames.iter().map(Frame::len).sum();
        let mut q = self.queue.lock();
        if q.closed {
            return (PushOutcome::Closed, false);
        }
        let fits = |q: &Queue| {
            q.frames.len() + frames.len() <= limits.max_frames && q.bytes + size <= limits.max_bytes
        };
        if !fits(&q) {
            if volatile {
                return (PushOutcome::DroppedVolatile, false);
            }
            // Make room by dropping volatile frames already queued, oldest first.
            let before = q.frames.len();
            q.frames.retain(|(_, v)| !*v);
            if q.frames.len() != before {
                q.bytes = q.frames.iter().map(|(f, _)| f.len()).sum();
            }
            if !fits(&q) {
                return (PushOutcome::Overflow, false);
            }
        }
        let append = |q: &mut Queue| {
            for frame in frames {
                q.frames.push_back((frame.clone(), volatile));
            }
            q.bytes += size;
        };
        if q.deferred {
            // The end of the scope writes these too.
            append(&mut q);
            return (PushOutcome::Queued, false);
        }
        if let Some(sink) = q.sink_free() {
            if defer {
                append(&mut q);
                q.deferred = true;
                return (PushOutcome::Queued, true);
            }
            // Under the lock, so that no other push or the transport writes in between.
            match sink.try_write(&mut frames.iter()) {
                SinkWrite::All => return (PushOutcome::Queued, false),
                SinkWrite::Rest(rest) => {
                    q.rest = Some(rest);
                    drop(q);
                    self.notify();
                    return (PushOutcome::Queued, false);
                }
                SinkWrite::Nothing => {}
            }
        }
        append(&mut q);
        drop(q);
        self.notify();
        (PushOutcome::Queued, false)
    }

    /// Ends a deferral begun by [`Outbox::push_deferred`]: writes everything queued in one
    /// write if the transport is idle; otherwise (or for what the socket does not take)
    /// wakes the transport.
    pub fn flush_deferred(&self) {
        let mut q = self.queue.lock();
        q.deferred = false;
        if q.frames.is_empty() {
            return;
        }
        // A flush boundary inside the queue asks for separate writes: the transport keeps
        // them apart. One after the last frame (a CONNECT answered within the packet's own
        // scope) asks for nothing more than this write.
        if q.boundary == 0 || q.boundary >= q.frames.len() {
            let written = q
                .sink_idle()
                .map(|sink| sink.try_write(&mut q.frames.iter().map(|(f, _)| f)));
            if let Some(written) = written {
                // The queue keeps its storage for the next scope: freeing it here cost an
                // allocation per delivery of a fan-out (measured: 0.56 `malloc` per delivery
                // against 0.02).
                match written {
                    SinkWrite::All => {
                        q.frames.clear();
                        q.bytes = 0;
                        q.boundary = 0;
                        return;
                    }
                    SinkWrite::Rest(rest) => {
                        q.frames.clear();
                        q.bytes = 0;
                        q.boundary = 0;
                        q.rest = Some(rest);
                    }
                    SinkWrite::Nothing => {}
                }
            }
        }
        drop(q);
        self.notify();
    }

    /// Lets pushes write straight to the transport's socket when nothing is queued.
    pub fn attach_sink(&self, sink: Arc<dyn FrameSink>) {
        self.queue.lock().sink = Some(sink);
    }

    /// Stops direct writes (the transport is ending) and releases the socket.
    pub fn detach_sink(&self) {
        let mut q = self.queue.lock();
        q.sink = None;
        q.rest = None;
    }

    /// For the transport task that owns the sink: takes what must be written next (the
    /// rest of a partly written frame, then a batch of frames) and holds off direct writes
    /// until [`Outbox::end_write`]. Returns true if frames remain queued after the batch.
    pub fn begin_write(&self, rest: &mut Option<Bytes>, out: &mut Vec<Frame>) -> bool {
        let mut q = self.queue.lock();
        q.writing = true;
        *rest = q.rest.take();
        q.take_batch(out)
    }

    /// Ends a write begun with [`Outbox::begin_write`]; pushes may write directly again.
    pub fn end_write(&self) {
        self.queue.lock().writing = false;
    }

    /// Queues control frames (ping, noop, close) that bypass the limits.
    pub fn push_control(&self, frame: Frame) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        q.bytes += frame.len();
        q.frames.push_back((frame, false));
        drop(q);
        self.notify();
    }

    /// Asks the writer to flush what is queued now before writing anything queued later.
    pub fn flush_boundary(&self) {
        let mut q = self.queue.lock();
        q.boundary = q.frames.len();
    }

    /// Takes the frames up to the next flush boundary (all when there is none) into `out`
    /// (which keeps its capacity between calls). Returns true if frames remain queued.
    pub fn drain_into(&self, out: &mut Vec<Frame>) -> bool {
        self.queue.lock().take_batch(out)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.lock().frames.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Marks the outbox closed and wakes the writer; queued frames may still be drained.
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.notify();
    }

    /// Waits until frames are queued or the outbox is closed (single consumer: a polling GET).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Ready once frames were queued or the outbox closed since the last `Ready` (single
    /// consumer: the WebSocket task). May be ready with nothing to do.
    pub fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Wakes whichever writer waits: a polling GET or the WebSocket task.
    fn notify(&self) {
        self.ready.notify_one();
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Wakes the current writer without queuing anything (e.g. to hand over the transport).
    pub fn wake(&self) {
        self.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutboxLimits = OutboxLimits {
        max_frames: 3,
        max_bytes: 1000,
    };

    fn text(s: &str) -> Frame {
        Frame::from(s.to_string())
    }

    fn drain(o: &Outbox) -> Vec<Frame> {
        let mut out = Vec::new();
        o.drain_into(&mut out);
        out
    }

    #[test]
    fn frames_are_shared_not_copied() {
        let frame = text("42[\"x\"]");
        let a = Outbox::default();
        let b = Outbox::default();
        a.push(std::slice::from_ref(&frame), false, LIMITS);
        b.push(std::slice::from_ref(&frame), false, LIMITS);
        let (fa, fb) = (drain(&a), drain(&b));
        match (&fa[0], &fb[0], &frame) {
            (Frame::Text(x), Frame::Text(y), Frame::Text(z)) => {
                let p = |u: &Utf8Bytes| u.as_str().as_ptr();
                assert_eq!(p(x), p(z));
                assert_eq!(p(y), p(z));
            }
            _ => panic!("expected text frames"),
        }
    }

    #[test]
    fn volatile_dropped_first_then_overflow() {
        let o = Outbox::default();
        assert_eq!(o.push(&[text("4a")], true, LIMITS), PushOutcome::Queued);
        assert_eq!(o.push(&[text("4b")], false, LIMITS), PushOutcome::Queued);
        assert_eq!(o.push(&[text("4c")], false, LIMITS), PushOutcome::Queued);
        // Full: a volatile push is dropped, a reliable one evicts the queued volatile frame.
        assert_eq!(
            o.push(&[text("4d")], true, LIMITS),
            PushOutcome::DroppedVolatile
        );
        assert_eq!(o.push(&[text("4e")], false, LIMITS), PushOutcome::Queued);
        assert_eq!(o.push(&[text("4f")], false, LIMITS), PushOutcome::Overflow);
        assert_eq!(drain(&o), vec![text("4b"), text("4c"), text("4e")]);
    }

    #[test]
    fn flush_boundary_splits_a_drain() {
        let o = Outbox::default();
        o.push(&[text("40")], false, LIMITS);
        o.flush_boundary();
        o.push(&[text("42")], false, LIMITS);
        let mut out = Vec::new();
        assert!(
            o.drain_into(&mut out),
            "more frames remain after the boundary"
        );
        assert_eq!(out, vec![text("40")]);
        out.clear();
        assert!(!o.drain_into(&mut out));
        assert_eq!(out, vec![text("42")]);
    }

    #[test]
    fn byte_limit_counts() {
        let o = Outbox::default();
        let big = Frame::Binary(Bytes::from(vec![0u8; 900]));
        assert_eq!(
            o.push(std::slice::from_ref(&big), false, LIMITS),
            PushOutcome::Queued
        );
        assert_eq!(o.push(&[big], false, LIMITS), PushOutcome::Overflow);
    }

    #[test]
    fn closed_rejects() {
        let o = Outbox::default();
        o.close();
        assert_eq!(o.push(&[text("4a")], false, LIMITS), PushOutcome::Closed);
        assert!(o.is_closed());
    }

    /// A socket stand-in that takes a set number of bytes, then nothing.
    #[derive(Debug)]
    struct Socket {
        room: Mutex<usize>,
        wire: Mutex<Vec<String>>,
    }

    impl FrameSink for Socket {
        fn try_write(&self, frames: &mut dyn ExactSizeIterator<Item = &Frame>) -> SinkWrite {
            let mut room = self.room.lock();
            let bytes: String = frames
                .map(|f| match f {
                    Frame::Text(t) => t.as_str().to_string(),
                    Frame::Binary(_) => "<bin>".to_string(),
                })
                .collect();
            let n = bytes.len().min(*room);
            *room -= n;
            if n > 0 {
                self.wire.lock().push(bytes[..n].to_string());
            }
            match n {
                0 => SinkWrite::Nothing,
                n if n == bytes.len() => SinkWrite::All,
                n => SinkWrite::Rest(Bytes::copy_from_slice(&bytes.as_bytes()[n..])),
            }
        }
    }

    fn socket(room: usize) -> Arc<Socket> {
        Arc::new(Socket {
            room: Mutex::new(room),
            wire: Mutex::new(Vec::new()),
        })
    }

    /// An outbox writing to a socket that takes `room` bytes at once.
    fn attached(room: usize) -> (Outbox, Arc<Socket>) {
        let o = Outbox::default();
        let s = socket(room);
        o.attach_sink(s.clone());
        (o, s)
    }

    #[test]
    fn an_idle_sink_is_written_at_once() {
        let (o, s) = attached(100);
        assert_eq!(o.push(&[text("4a")], false, LIMITS), PushOutcome::Queued);
        assert_eq!(o.push(&[text("4b")], false, LIMITS), PushOutcome::Queued);
        assert_eq!(*s.wire.lock(), vec!["4a", "4b"]);
        assert!(o.is_empty(), "nothing queued when the socket took it all");
    }

    #[test]
    fn a_partial_write_leaves_the_rest_first_and_queues_what_follows() {
        let (o, s) = attached(3);
        o.push(&[text("4abcd")], false, LIMITS);
        assert_eq!(*s.wire.lock(), vec!["4ab"]);
        // The socket has room again, but the rest is owed first: this push must queue.
        *s.room.lock() = 100;
        o.push(&[text("4e")], false, LIMITS);
        assert_eq!(s.wire.lock().len(), 1);
        let (mut rest, mut out) = (None, Vec::new());
        assert!(!o.begin_write(&mut rest, &mut out));
        assert_eq!(rest.as_deref(), Some(&b"cd"[..]));
        assert_eq!(out, vec![text("4e")]);
        // While the transport writes, pushes queue behind it.
        o.push(&[text("4f")], false, LIMITS);
        assert_eq!(s.wire.lock().len(), 1);
        o.end_write();
        assert_eq!(drain(&o), vec![text("4f")]);
        // Idle again: direct.
        o.push(&[text("4g")], false, LIMITS);
        assert_eq!(s.wire.lock().last().map(String::as_str), Some("4g"));
    }

    #[test]
    fn a_full_socket_queues_and_detach_stops_direct_writes() {
        let (o, s) = attached(0);
        o.push(&[text("4a")], false, LIMITS);
        assert_eq!(drain(&o), vec![text("4a")]);
        o.detach_sink();
        *s.room.lock() = 100;
        o.push(&[text("4b")], false, LIMITS);
        assert!(s.wire.lock().is_empty());
        assert_eq!(drain(&o), vec![text("4b")]);
    }

    #[test]
    fn deferred_pushes_go_out_in_one_write_at_the_flush() {
        let (o, s) = attached(100);
        assert_eq!(
            o.push_deferred(&[text("4a")], false, LIMITS),
            (PushOutcome::Queued, true),
            "the first deferral asks for a flush"
        );
        assert_eq!(
            o.push_deferred(&[text("4b")], false, LIMITS),
            (PushOutcome::Queued, false)
        );
        // A plain push meanwhile joins the deferred ones rather than overtaking them.
        o.push(&[text("4c")], false, LIMITS);
        assert!(s.wire.lock().is_empty(), "nothing written before the flush");
        o.flush_deferred();
        assert_eq!(*s.wire.lock(), vec!["4a4b4c"], "one write for all three");
        assert!(o.is_empty());
        // Limits still apply while deferred.
        o.push_deferred(&[text("4d")], false, LIMITS);
        o.push_deferred(&[text("4e")], false, LIMITS);
        o.push_deferred(&[text("4f")], false, LIMITS);
        assert_eq!(
            o.push_deferred(&[text("4g")], false, LIMITS).0,
            PushOutcome::Overflow
        );
    }

    #[test]
    fn a_boundary_after_the_deferred_frames_is_written_at_the_flush() {
        let (o, s) = attached(100);
        // A CONNECT answered inside the packet's scope: nothing after its boundary yet.
        o.push_deferred(&[text("40")], false, LIMITS);
        o.flush_boundary();
        o.flush_deferred();
        assert_eq!(*s.wire.lock(), vec!["40"], "written by the flush itself");
        assert!(o.is_empty());
        // The boundary is spent: later pushes are written directly again, on their own.
        o.push(&[text("42")], false, LIMITS);
        assert_eq!(*s.wire.lock(), vec!["40", "42"]);
        // A frame queued behind a boundary is left to the writer, which keeps them apart.
        o.push_deferred(&[text("40")], false, LIMITS);
        o.flush_boundary();
        o.push_deferred(&[text("43")], false, LIMITS);
        o.flush_deferred();
        assert_eq!(s.wire.lock().len(), 2, "nothing more written directly");
        let mut out = Vec::new();
        assert!(o.drain_into(&mut out));
        assert_eq!(out, vec![text("40")]);
    }
}
