//! A link's outbound queue, bounded in bytes.
//!
//! The hub must never wait for an application: a client session's packets are pushed from
//! the engine's I/O paths. So the queue does not block; it counts the encoded bytes it
//! holds, and a push past `appLink.maxQueuedBytes` fails the link instead (the app is too
//! slow to serve its clients; they reconnect to another instance). The writer drains the
//! queue into batches of at most [`BATCH_BYTES`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use prost::Message as _;
use tokio::sync::{mpsc, Notify};

use super::proto::{HubBatch, HubMessage};

/// How much a batch carries at most (one gRPC message; the rest waits for the next).
pub const BATCH_BYTES: usize = 256 * 1024;

/// A queued message, its encoded size, and the counter of the session it is for (a client's
/// packet), which gives the bytes back once written.
type Queued = (HubMessage, usize, Option<Arc<AtomicUsize>>);

pub struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
    queued: AtomicUsize,
    max_bytes: usize,
    failed: AtomicBool,
    /// Woken when the queue overflowed: the link ends.
    pub overflowed: Notify,
    /// Woken when the link ended: the writer stops.
    ended: Notify,
}

/// The receiving half, owned by the link's writer.
pub struct OutboxReader {
    rx: mpsc::UnboundedReceiver<Queued>,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> (Self, OutboxReader) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                queued: AtomicUsize::new(0),
                max_bytes,
                failed: AtomicBool::new(false),
                overflowed: Notify::new(),
                ended: Notify::new(),
            },
            OutboxReader { rx },
        )
    }

    /// Queues a message; false when the link is over its budget (or gone): the message is
    /// dropped and the link fails.
    pub fn push(&self, message: HubMessage) -> bool {
        self.push_for(message, None)
    }

    /// Queues a message for a session whose queued bytes `session` counts (see
    /// [`Outbox::push`]).
    pub fn push_for(&self, message: HubMessage, session: Option<Arc<AtomicUsize>>) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        let size = message.encoded_len();
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > self.max_bytes {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            if !self.failed.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    queued = before,
                    limit = self.max_bytes,
                    "app link too slow: appLink.maxQueuedBytes reached; ending the link"
                );
                self.overflowed.notify_one();
            }
            return false;
        }
        if let Some(counter) = &session {
            counter.fetch_add(size, Ordering::AcqRel);
        }
        if let Err(mpsc::error::SendError((_, _, session))) = self.tx.send((message, size, session))
        {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            if let Some(counter) = session {
                counter.fetch_sub(size, Ordering::AcqRel);
            }
            return false;
        }
        true
    }

    /// The link ended: the writer stops after its current batch.
    pub fn end(&self) {
        self.ended.notify_one();
    }

    /// Bytes queued and not yet handed to the transport.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn sent(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl OutboxReader {
    /// The next batch: waits for one message, then takes what else is queued up to
    /// [`BATCH_BYTES`]. `None` once the link ended.
    pub async fn next_batch(&mut self, outbox: &Outbox) -> Option<HubBatch> {
        let (first, mut bytes, session) = tokio::select! {
            next = self.rx.recv() => next?,
            _ = outbox.ended.notified() => return None,
        };
        give_back(session, bytes);
        let mut messages = vec![first];
        while bytes < BATCH_BYTES {
            match self.rx.try_recv() {
                Ok((message, size, session)) => {
                    give_back(session, size);
                    messages.push(message);
                    bytes = bytes.saturating_add(size);
                }
                Err(_) => break,
            }
        }
        outbox.sent(bytes);
        Some(HubBatch { messages })
    }
}

fn give_back(session: Option<Arc<AtomicUsize>>, size: usize) {
    if let Some(counter) = session {
        counter.fetch_sub(size, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applink::proto::{hub_message::Kind, Closed};

    fn closed(reason: &str) -> HubMessage {
        HubMessage::of(Kind::Closed(Closed {
            session: 1,
            reason: reason.into(),
        }))
    }

    #[tokio::test]
    async fn batches_what_is_queued_and_counts_bytes() {
        let (outbox, mut reader) = Outbox::new(1024);
        assert!(outbox.push(closed("a")));
        assert!(outbox.push(closed("b")));
        assert!(outbox.queued_bytes() > 0);
        let batch = reader.next_batch(&outbox).await.unwrap();
        assert_eq!(batch.messages.len(), 2);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_push_past_the_budget_fails_the_link_for_good() {
        let (outbox, _reader) = Outbox::new(64);
        let big = closed(&"x".repeat(100));
        assert!(!outbox.push(big));
        // Failed: even a small message is refused now, and the link was told once.
        assert!(!outbox.push(closed("a")));
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            outbox.overflowed.notified(),
        )
        .await
        .expect("the overflow wakes the link");
    }
}
