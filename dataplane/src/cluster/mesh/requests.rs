//! Request/answer bookkeeping: which requests of this node are waiting for which peers, and
//! how their replies (or the news that a peer is gone) reach them.
//!
//! A request gets an id and a channel before anything is sent; replies are matched to it
//! by id, and a peer whose link breaks or who leaves is reported to every waiting request
//! so none waits for a reply that cannot come. The counting ([`Tally`]) is pure; the only
//! I/O is waiting on the channel with a deadline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::cluster::proto as pb;

/// What a request waiting for replies hears about.
#[derive(Debug)]
pub(super) enum Event {
    Reply(String, pb::Reply),
    /// The peer's link broke or it left the cluster: its reply will never come.
    Gone(String),
}

/// The requests of this node that wait for replies, by id.
#[derive(Default)]
pub(super) struct Requests {
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>,
    next: AtomicU64,
}

impl Requests {
    /// A new request, registered (so it hears of replies and departures) until dropped.
    pub(super) fn open(&self) -> Request<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, tx);
        Request {
            requests: self,
            id,
            events,
        }
    }

    /// Hands `reply` from `from` to the request it answers. Unknown ids are replies that
    /// came after their request gave up: ignored.
    pub(super) fn reply(&self, from: &str, reply: pb::Reply) {
        if let Some(waiter) = self.pending.lock().get(&reply.id) {
            let _ = waiter.send(Event::Reply(from.to_string(), reply));
        }
    }

    /// Requests waiting for `peer` stop waiting for it.
    pub(super) fn gone(&self, peer: &str) {
        for waiter in self.pending.lock().values() {
            let _ = waiter.send(Event::Gone(peer.to_string()));
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.pending.lock().len()
    }
}

/// One request waiting for replies; unregistered when dropped.
pub(super) struct Request<'a> {
    requests: &'a Requests,
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Request<'_> {
    /// The id replies to this request carry.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Gathers the replies of the peers in `waiting` until all of them answered (or are
    /// gone) or `timeout` passed. Returns the replies by peer, and whether some peer did not
    /// answer.
    pub(super) async fn gather(
        mut self,
        waiting: HashSet<String>,
        timeout: Duration,
    ) -> (Vec<(String, pb::Reply)>, bool) {
        let mut tally = Tally::new(waiting);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while !tally.is_complete() {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => tally.record(event),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let expected = tally.expected;
        let (replies, timed_out) = tally.finish();
        if timed_out {
            tracing::warn!(
                id = self.id,
                expected,
                answered = replies.len(),
                "peers did not all answer a request in time"
            );
        }
        (replies, timed_out)
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        self.requests.pending.lock().remove(&self.id);
    }
}

/// The replies of one request so far, and the peers it still waits for.
#[derive(Debug)]
pub(super) struct Tally {
    waiting: HashSet<String>,
    expected: usize,
    replies: Vec<(String, pb::Reply)>,
}

impl Tally {
    pub(super) fn new(waiting: HashSet<String>) -> Self {
        let expected = waiting.len();
        Self {
            waiting,
            expected,
            replies: Vec::with_capacity(expected),
        }
    }

    /// Takes one event in: the first reply of a waited-for peer counts, anything else (a
    /// second reply, a peer not asked) is ignored; a gone peer is no longer waited for.
    pub(super) fn record(&mut self, event: Event) {
        match event {
            Event::Reply(from, reply) => {
                if self.waiting.remove(&from) {
                    self.replies.push((from, reply));
                }
            }
            Event::Gone(from) => {
                self.waiting.remove(&from);
            }
        }
    }

    /// Whether no peer is waited for any more.
    pub(super) fn is_complete(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The replies, and whether some peer did not answer.
    pub(super) fn finish(self) -> (Vec<(String, pb::Reply)>, bool) {
        let timed_out = self.replies.len() < self.expected;
        (self.replies, timed_out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testkit::{fast, free_port, node, wait_for, Mute};
    use super::super::Mesh;
    use super::*;
    use crate::cluster::membership::Members;
    use crate::cluster::proto::message::Kind;
    use std::time::Instant;

    fn reply(id: u64) -> pb::Reply {
        pb::Reply {
            id,
            ..Default::default()
        }
    }

    fn peers(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_tally_counts_each_asked_peer_once() {
        let mut tally = Tally::new(peers(&["a", "b", "c"]));
        tally.record(Event::Reply("a".into(), reply(1)));
        tally.record(Event::Reply("a".into(), reply(1)));
        tally.record(Event::Reply("stranger".into(), reply(1)));
        assert!(!tally.is_complete());
        tally.record(Event::Gone("b".into()));
        tally.record(Event::Reply("b".into(), reply(1)));
        assert!(!tally.is_complete());
        tally.record(Event::Reply("c".into(), reply(1)));
        assert!(tally.is_complete());
        let (replies, missing) = tally.finish();
        let from: Vec<_> = replies.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!((from, missing), (vec!["a", "c"], true), "b left unanswered");
    }

    #[test]
    fn a_tally_of_nobody_is_complete_and_not_missing() {
        let tally = Tally::new(HashSet::new());
        assert!(tally.is_complete());
        assert_eq!(tally.finish(), (vec![], false));
    }

    #[tokio::test]
    async fn replies_reach_their_request_and_dropped_requests_unregister() {
        let requests = Requests::default();
        let first = requests.open();
        let second = requests.open();
        assert_ne!(first.id(), second.id());
        assert_eq!(requests.waiting(), 2);
        requests.reply("a", reply(second.id()));
        requests.reply("a", reply(999));
        drop(first);
        assert_eq!(requests.waiting(), 1);
        let (replies, missing) = second.gather(peers(&["a"]), Duration::from_secs(5)).await;
        assert_eq!((replies.len(), missing), (1, false));
        assert_eq!(requests.waiting(), 0);
    }

    #[tokio::test]
    async fn a_gone_peer_ends_the_wait_and_silence_times_out() {
        let requests = Requests::default();
        let request = requests.open();
        requests.gone("a");
        let (replies, missing) = request.gather(peers(&["a"]), Duration::from_secs(30)).await;
        assert_eq!((replies.len(), missing), (0, true));
        let t = Instant::now();
        let request = requests.open();
        let (_, missing) = request
            .gather(peers(&["b"]), Duration::from_millis(50))
            .await;
        assert!(missing && t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_stop_waiting_for_a_peer_that_leaves() {
        let mut members = Members::new();
        members.insert("a", free_port([127, 0, 0, 1]));
        members.insert("b", free_port([127, 0, 0, 1]));
        let a = node("a", &members, fast()).await;
        let b = Mesh::new("b", &members, fast(), Arc::new(Mute)).unwrap();
        super::super::testkit::start(&b, members.addr("b").unwrap()).await;
        wait_for("link", || a.mesh.connected() == ["b"]).await;
        let asking = tokio::spawn({
            let mesh = a.mesh.clone();
            async move {
                let t = Instant::now();
                let (replies, missing) = mesh
                    .ask_all(
                        |id| pb::Message::of(Kind::Request(pb::Request { id, query: None })),
                        Duration::from_secs(30),
                    )
                    .await;
                (replies.len(), missing, t.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut alone = members.clone();
        alone.remove("b");
        a.mesh.set_members(&alone);
        let (replies, missing, took) = asking.await.unwrap();
        assert_eq!((replies, missing), (0, true));
        assert!(took < Duration::from_secs(5), "waited {took:?}");
        a.mesh.close();
        b.close();
    }
}
