//! Write combining for one burst of input.
//!
//! While a transport handles the packets of one read (several publishes that queued up
//! while the hub was busy, say), pushes to idle WebSocket sessions are only queued and the
//! session noted; when the burst is handled, each noted session is written once, with all
//! of its frames in one syscall. Without this, a hub that falls behind writes every frame on
//! its own and never catches up; with it, the more it is behind, the more each write
//! carries. A burst of one packet costs the same as a direct write. Under sustained fan-out
//! load the end of a scope may wait a little for the next ones (`coalesce`).
//!
//! The scope is synchronous (no `.await` inside), so a thread-local list is enough.
//!
//! What is deferred is a [`Flush`] (a session, in practice): the cork knows nothing of
//! sessions, so that sessions can use the cork without the two depending on each other.

use std::cell::RefCell;
use std::sync::Arc;

pub use super::coalesce::Flush;

#[derive(Default)]
struct Cork {
    depth: usize,
    deferred: Vec<Arc<dyn Flush>>,
    /// Pushes in the scope (deferred now, or joining a write already waiting).
    pushes: usize,
}

/// Most deferred sessions whose list a thread keeps between scopes (64 KiB of pointers).
const KEEP_DEFERRED: usize = 4096;

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
    CORK.with(|c| {
        let mut c = c.borrow_mut();
        c.deferred.push(pending);
        c.pushes += 1;
    });
}

/// Notes a push whose write was already deferred (by this scope, or by a round waiting in
/// `coalesce`): the scope counts as one that writes.
pub(super) fn pushed() {
    CORK.with(|c| c.borrow_mut().pushes += 1);
}

struct Uncork;

impl Drop for Uncork {
    fn drop(&mut self) {
        let ended = CORK.with(|c| {
            let mut c = c.borrow_mut();
            c.depth = c.depth.saturating_sub(1);
            (c.depth == 0 && c.pushes > 0).then(|| {
                (
                    std::mem::take(&mut c.deferred),
                    std::mem::take(&mut c.pushes),
                )
            })
        });
        if let Some((mut deferred, pushes)) = ended {
            super::coalesce::end_scope(&mut deferred, pushes);
            // The list goes back, empty, for the next scope: most scopes defer a session or
            // two, and would otherwise allocate it anew each time. One that grew past
            // `KEEP_DEFERRED` (a broadcast to a large room) is let go.
            if deferred.capacity() <= KEEP_DEFERRED {
                CORK.with(|c| {
                    let mut c = c.borrow_mut();
                    if c.deferred.capacity() == 0 {
                        deferred.clear();
                        c.deferred = deferred;
                    }
                });
            }
        }
    }
}
