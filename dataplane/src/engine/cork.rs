//! Write combining for one burst of input.
//!
//! While a transport handles the packets of one read (several publishes that queued up
//! while the hub was busy, say), pushes to idle WebSocket sessions are only queued and the
//! session noted; when the burst is handled, each noted session is written once, with all
//! of its frames in one syscall. Without this, a hub that falls behind writes every frame on
//! its own and never catches up; with it, the more it is behind, the more each write
//! carries. A burst of one packet costs the same as a direct write.
//!
//! The scope is synchronous (no `.await` inside), so a thread-local list is enough.
//!
//! What is deferred is a [`Flush`] (a session, in practice): the cork knows nothing of
//! sessions, so that sessions can use the cork without the two depending on each other.

use std::cell::RefCell;
use std::sync::Arc;

/// Something that queued writes during a corked scope and writes them at its end.
pub trait Flush {
    /// Writes what was deferred (called once per `defer`, at the end of the scope).
    fn flush(&self);
}

#[derive(Default)]
struct Cork {
    depth: usize,
    deferred: Vec<Arc<dyn Flush>>,
}

thread_local! {
    static CORK: RefCell<Cork> = RefCell::default();
}

/// Runs `f` with pushes to idle sessions deferred, then writes each noted session once.
pub fn corked<R>(f: impl FnOnce() -> R) -> R {
    CORK.with(|c| c.borrow_mut().depth += 1);
    // Flushes on the way out, even if `f` panics.
    let _flush = Uncork;
    f()
}

/// True inside [`corked`] on this thread.
pub(super) fn is_active() -> bool {
    CORK.with(|c| c.borrow().depth > 0)
}

/// Notes a session (or anything else that can [`Flush`]) to write at the end of the scope.
pub(super) fn defer(pending: Arc<dyn Flush>) {
    CORK.with(|c| c.borrow_mut().deferred.push(pending));
}

struct Uncork;

impl Drop for Uncork {
    fn drop(&mut self) {
        let deferred = CORK.with(|c| {
            let mut c = c.borrow_mut();
            c.depth = c.depth.saturating_sub(1);
            if c.depth == 0 {
                std::mem::take(&mut c.deferred)
            } else {
                Vec::new()
            }
        });
        for pending in deferred {
            pending.flush();
        }
    }
}
