//! One other member as the mesh sees it: its bounded send queue and the state of the link to
//! it (up or not, which link is current, the tasks that dial and run it, its counters).
//!
//! Kept apart from the link loop and the dialer so both can share it without knowing the
//! mesh: this is plain state plus the one decision made per message (queue it, or drop it
//! because the peer is out of routing or cannot keep up).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::AbortHandle;

use crate::cluster::proto as pb;

/// A message in a peer's queue, with its encoded size (counted against the byte budget
/// until the writer takes it, see [`Peer::take`]).
pub(super) struct Queued {
    message: pb::Message,
    bytes: usize,
}

/// What became of a message offered to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The peer is out of routing: not a drop.
    Down,
    /// The peer's queue is full (messages or bytes): dropped and counted.
    Full,
}

/// One other member and the state of the link to it.
pub(super) struct Peer {
    pub(super) id: String,
    pub(super) addr: SocketAddr,
    tx: mpsc::Sender<Queued>,
    /// Held by the link's writer for as long as the link lives.
    pub(super) rx: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    /// Encoded bytes in the queue, and the most it may hold (`cluster.maxPeerQueueBytes`).
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// In routing: a link is up.
    pub(super) up: AtomicBool,
    /// Bumped by every new link; a link only cleans up after itself while it is current.
    pub(super) generation: AtomicU64,
    pub(super) link: Mutex<Option<AbortHandle>>,
    /// The dial loop, on the side that dials.
    pub(super) dialer: Mutex<Option<AbortHandle>>,
    /// Set once the peer left the member set (or the mesh closed); no link attaches after.
    pub(super) removed: AtomicBool,
    pub(super) dropped: AtomicU64,
    /// Where the peer serves clients, as its Hello of the current link said.
    pub(super) client_addr: Mutex<Option<SocketAddr>>,
    /// Where the peer takes app links, as its Hello of the current link said.
    pub(super) app_addr: Mutex<Option<SocketAddr>>,
    /// Set on the first drop of an overload, cleared on the next successful send, so an
    /// overload logs twice (start, end) instead of once per message.
    pub(super) overloaded: AtomicBool,
}

impl Peer {
    /// Member `id` at `addr`, with room for `queue` messages (at least one) and
    /// `queue_bytes` encoded bytes (a message larger than that fits an empty queue).
    pub(super) fn new(id: &str, addr: SocketAddr, queue: usize, queue_bytes: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Arc::new(Peer {
            id: id.to_string(),
            addr,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            queued_bytes: AtomicUsize::new(0),
            max_bytes: queue_bytes,
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            link: Mutex::new(None),
            dialer: Mutex::new(None),
            removed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            client_addr: Mutex::new(None),
            app_addr: Mutex::new(None),
            overloaded: AtomicBool::new(false),
        })
    }

    /// Whether the peer is in routing (a link is up).
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether the peer left the member set (or the mesh closed).
    pub(super) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Queues `message` if the peer is in routing. Never waits: when the queue is full (in
    /// messages or in bytes) the message is dropped, counted, and the start and end of such
    /// an overload are logged once each. After a drop, messages are dropped until the queue
    /// is back under half its byte budget.
    pub(super) fn offer(&self, message: pb::Message, volatile: bool) -> Offer {
        use prost::Message as _;
        if !self.is_up() {
            return Offer::Down;
        }
        let bytes = message.encoded_len();
        // Reserve the bytes first; a message alone in the queue always fits, so that any
        // message a client may send can reach its peers whatever the budget.
        // Once overloaded, the queue takes nothing more until it has drained to half its
        // budget: what the peer misses is then a contiguous stretch, not a random subset
        // (small messages slipping into the room a large one left).
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let draining = self.overloaded.load(Ordering::Relaxed) && before > self.max_bytes / 2;
        let over_budget = draining || (before > 0 && before.saturating_add(bytes) > self.max_bytes);
        let outcome = if over_budget {
            Err(("bytes", self.max_bytes))
        } else {
            match self.tx.try_send(Queued { message, bytes }) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(("messages", self.tx.max_capacity())),
                // The queue lives as long as the peer: only possible while closing.
                Err(TrySendError::Closed(_)) => {
                    self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    return Offer::Down;
                }
            }
        };
        match outcome {
            Ok(()) => {
                if self.overloaded.load(Ordering::Relaxed)
                    && self.overloaded.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(
                        peer = %self.id,
                        dropped_total = self.dropped.load(Ordering::Relaxed),
                        "peer link keeps up again"
                    );
                }
                Offer::Queued
            }
            Err((bound, limit)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.overloaded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %self.id,
                        volatile,
                        bound,
                        limit,
                        "peer link queue full: dropping messages to this peer"
                    );
                }
                Offer::Full
            }
        }
    }

    /// A message the link's writer took off the queue (or discarded): its bytes no longer
    /// count against the budget.
    pub(super) fn take(&self, queued: Queued) -> pb::Message {
        self.queued_bytes.fetch_sub(queued.bytes, Ordering::AcqRel);
        queued.message
    }

    /// Encoded bytes waiting in the queue.
    #[cfg(test)]
    pub(super) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Out of routing for good: no more dialing, the link closed, no link attaches after.
    /// A link task runs for this peer (it may be ending).
    pub(super) fn link_running(&self) -> bool {
        self.link
            .lock()
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    pub(super) fn stop(&self) {
        self.removed.store(true, Ordering::Release);
        self.up.store(false, Ordering::Release);
        if let Some(dialer) = self.dialer.lock().take() {
            dialer.abort();
        }
        if let Some(link) = self.link.lock().take() {
            link.abort();
        }
    }

    /// Records where the peer serves clients (from its Hello), saying so when it changes.
    pub(super) fn learn_client_addr(&self, addr: Option<SocketAddr>) {
        let mut current = self.client_addr.lock();
        if *current != addr {
            *current = addr;
            match addr {
                Some(client) => {
                    tracing::info!(peer = %self.id, %client, "peer serves clients here; its sessions' requests are forwarded there")
                }
                None => {
                    tracing::info!(peer = %self.id, "peer advertises no client address; its sessions' requests are not forwarded")
                }
            }
        }
    }

    /// Where the peer serves clients, if its link is up and it told us.
    pub(super) fn client_addr(&self) -> Option<SocketAddr> {
        if !self.is_up() {
            return None;
        }
        let addr = *self.client_addr.lock();
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::proto::message::Kind;

    fn message(n: u64) -> pb::Message {
        pb::Message::of(Kind::Heartbeat(pb::Heartbeat { seq: n }))
    }

    #[test]
    fn a_peer_out_of_routing_gets_nothing_queued() {
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 4, 1 << 20);
        assert_eq!(peer.offer(message(1), false), Offer::Down);
        assert_eq!(peer.dropped.load(Ordering::Relaxed), 0, "not a drop");
        assert!(peer.rx.try_lock().unwrap().try_recv().is_err());
    }

    #[test]
    fn a_full_queue_drops_counts_and_recovers() {
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 2, 1 << 20);
        peer.up.store(true, Ordering::Release);
        assert_eq!(peer.offer(message(1), false), Offer::Queued);
        assert_eq!(peer.offer(message(2), false), Offer::Queued);
        assert_eq!(peer.offer(message(3), true), Offer::Full);
        assert_eq!(peer.offer(message(4), false), Offer::Full);
        assert_eq!(peer.dropped.load(Ordering::Relaxed), 2);
        assert!(peer.overloaded.load(Ordering::Relaxed));
        // The writer drains one: the next send gets through and ends the overload.
        assert!(peer.rx.try_lock().unwrap().try_recv().is_ok());
        assert_eq!(peer.offer(message(5), false), Offer::Queued);
        assert!(!peer.overloaded.load(Ordering::Relaxed));
    }

    #[test]
    fn a_zero_queue_still_holds_one_message() {
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 0, 1 << 20);
        peer.up.store(true, Ordering::Release);
        assert_eq!(peer.offer(message(1), false), Offer::Queued);
        assert_eq!(peer.offer(message(2), false), Offer::Full);
    }

    #[test]
    fn a_stopped_peer_is_out_for_good() {
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 2, 1 << 20);
        peer.up.store(true, Ordering::Release);
        peer.learn_client_addr(Some("127.0.0.1:3000".parse().unwrap()));
        assert_eq!(peer.client_addr(), Some("127.0.0.1:3000".parse().unwrap()));
        peer.stop();
        assert!(peer.is_removed() && !peer.is_up());
        assert_eq!(peer.client_addr(), None, "no route while the link is down");
        assert_eq!(peer.offer(message(1), false), Offer::Down);
    }

    fn big(n: usize) -> pb::Message {
        pb::Message::of(Kind::Broadcast(pb::Broadcast {
            packet: bytes::Bytes::from(vec![b'x'; n]),
            ..Default::default()
        }))
    }

    #[test]
    fn the_byte_budget_bounds_a_queue_of_few_large_messages() {
        use prost::Message as _;
        // Room for 1,000 messages but only 10 KiB: large messages hit the byte bound first.
        let peer = Peer::new("b", "127.0.0.1:1".parse().unwrap(), 1_000, 10 * 1024);
        peer.up.store(true, Ordering::Release);
        let size = big(4 * 1024).encoded_len();
        assert_eq!(peer.offer(big(4 * 1024), false), Offer::Queued);
        assert_eq!(peer.offer(big(4 * 1024), false), Offer::Queued);
        assert_eq!(peer.queued_bytes(), 2 * size);
        assert_eq!(peer.offer(big(4 * 1024), false), Offer::Full, "over 10 KiB");
        assert_eq!(peer.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(peer.queued_bytes(), 2 * size, "a drop reserves nothing");
        // Overloaded, the queue takes nothing more, not even small messages that would fit,
        // until it has drained to half its budget.
        assert_eq!(peer.offer(message(1), false), Offer::Full);
        // The writer takes one: its bytes are free again, and it is under half.
        let queued = peer.rx.try_lock().unwrap().try_recv().unwrap();
        let _ = peer.take(queued);
        assert_eq!(peer.offer(message(1), false), Offer::Queued);
        assert!(
            !peer.overloaded.load(Ordering::Relaxed),
            "the overload is over"
        );
        assert_eq!(peer.offer(big(4 * 1024), false), Offer::Queued);
        while let Ok(queued) = peer.rx.try_lock().unwrap().try_recv() {
            let _ = peer.take(queued);
        }
        assert_eq!(peer.queued_bytes(), 0);
        // A message larger than the whole budget still goes through an empty queue.
        assert_eq!(peer.offer(big(64 * 1024), false), Offer::Queued);
        assert_eq!(peer.offer(message(2), false), Offer::Full);
    }
}
