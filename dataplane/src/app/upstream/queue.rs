//! A per-socket queue of webhook jobs: jobs of one socket run one after another (so the app
//! sees a socket's events in order), sockets run independently, and an idle socket costs
//! nothing but an empty queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Jobs waiting per socket before new events are refused.
pub const MAX_QUEUED_JOBS: usize = 64;

#[derive(Default)]
pub struct SocketQueue {
    state: Mutex<(VecDeque<Job>, bool)>,
}

impl SocketQueue {
    /// Queues a job; returns false (and drops it) when the queue is full. `force` queues
    /// even then (used for the disconnect event, which must not be lost).
    pub fn push(
        self: &Arc<Self>,
        job: impl Future<Output = ()> + Send + 'static,
        force: bool,
    ) -> bool {
        let start = {
            let mut state = self.state.lock();
            if !force && state.0.len() >= MAX_QUEUED_JOBS {
                return false;
            }
            state.0.push_back(Box::pin(job));
            !std::mem::replace(&mut state.1, true)
        };
        if start {
            let queue = self.clone();
            tokio::spawn(async move {
                loop {
                    let job = {
                        let mut state = queue.state.lock();
                        match state.0.pop_front() {
                            Some(job) => job,
                            None => {
                                state.1 = false;
                                return;
                            }
                        }
                    };
                    job.await;
                }
            });
        }
        true
    }
}

/// The bytes of webhook bodies queued or in flight on this node
/// (`limits.maxUpstreamQueueBytes`), shared by every socket's queue.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

/// Bytes taken from a [`ByteBudget`], given back when dropped (when the job ends).
#[derive(Debug)]
pub struct Reserved {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl ByteBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `bytes` if they fit, or if nothing is reserved (so a body larger than the
    /// whole budget still goes when the node is idle), or when `force`d (events that must
    /// not be lost). `None`: over budget.
    pub fn reserve(self: &Arc<Self>, bytes: usize, force: bool) -> Option<Reserved> {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        if !force && before > 0 && before.saturating_add(bytes) > self.max {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(Reserved {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The length of `value` as JSON, without building the text.
pub fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_byte_budget_refuses_past_its_limit_and_frees_on_drop() {
        let budget = ByteBudget::new(1_000);
        let a = budget.reserve(600, false).expect("fits");
        let b = budget.reserve(400, false).expect("fits exactly");
        assert!(budget.reserve(1, false).is_none(), "over the limit");
        assert_eq!(budget.used(), 1_000, "a refusal reserves nothing");
        let forced = budget.reserve(5_000, true).expect("forced always fits");
        assert_eq!(budget.used(), 6_000);
        drop((a, forced));
        assert_eq!(budget.used(), 400);
        assert!(budget.reserve(600, false).is_some(), "freed by the drops");
        drop(b);
        assert_eq!(budget.used(), 0);
        // Alone, a body larger than the whole budget still goes.
        let big = budget
            .reserve(10_000, false)
            .expect("an idle node takes any body");
        assert!(budget.reserve(1, false).is_none());
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn json_len_is_the_length_of_the_text() {
        let value = serde_json::json!({"a": [1, "x\"y", {"b": null}], "c": "é"});
        assert_eq!(json_len(&value), serde_json::to_vec(&value).unwrap().len());
    }

    #[tokio::test]
    async fn jobs_run_in_order_and_refuse_when_full() {
        let queue = Arc::new(SocketQueue::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..MAX_QUEUED_JOBS + 5 {
            let log = log.clone();
            let delay = if i == 0 { 20 } else { 0 };
            let accepted = queue.push(
                async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    log.lock().push(i);
                },
                false,
            );
            // The first job is taken by the worker at once, so one more fits.
            if i > MAX_QUEUED_JOBS {
                assert!(!accepted, "job {i} should be refused");
            }
        }
        assert!(queue.push(async {}, true), "forced jobs always fit");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = log.lock();
        assert!(log.windows(2).all(|w| w[0] < w[1]), "in order: {log:?}");
        assert!(log.len() >= MAX_QUEUED_JOBS);
    }
}
