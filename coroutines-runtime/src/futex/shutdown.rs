//! Letting go of the coroutines of a runtime that has shut down.

use core::ptr;
use std::sync::Arc;

use super::bucket::Bucket;
use crate::coroutine::Waker;
use crate::scheduler::Shared;

/// Wakers dropped per pass, outside the bucket lock (see `wake.rs`).
const BATCH: usize = 16;

/// Removes every entry of the coroutines of the runtime `shared` from the
/// table and drops their wakers. For `Runtime::drop`, once the workers have
/// stopped and the registry is drained: a coroutine abandoned while parked
/// on a futex is otherwise kept alive by its entry until a wake on the same
/// word happens to find it, and its join handle waits until then instead of
/// reporting that the coroutine was dropped.
pub(crate) fn release_runtime(shared: &Shared) {
    let ours = |waker: &Waker| ptr::eq(Arc::as_ptr(&waker.task.shared), shared);
    for bucket in Bucket::all() {
        if !bucket.may_have_waiters() {
            continue;
        }
        loop {
            let mut taken: [Option<Waker>; BATCH] = Default::default();
            let mut n = 0;
            {
                let mut queue = bucket.lock();
                let unlinked = queue.drain_where(
                    |_, waker| ours(waker),
                    |waker| {
                        taken[n] = Some(waker);
                        n += 1;
                        n < BATCH
                    },
                );
                bucket.leave(unlinked);
            }
            // Dropping the last reference to a task runs its completion
            // (failing its join handle): arbitrary code, so outside the lock.
            drop(taken);
            if n < BATCH {
                break;
            }
        }
    }
}
