//! A per-socket queue of webhook jobs: jobs of one socket run one after another (so the app
//! sees a socket's events in order), sockets run independently, and an idle socket costs
//! nothing but an empty queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
