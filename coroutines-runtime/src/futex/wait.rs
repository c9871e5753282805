//! Parking a coroutine on a futex word.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libc::c_int;

use super::bucket::Bucket;
use super::queue::Node;
use crate::coroutine::{self, Wait, WakeReason};
use crate::reactor::sleep_until;

/// How long a waiter that armed its bucket without `membarrier` waits
/// before it returns (see `membarrier.rs`): far longer than a store takes
/// to leave a CPU's store buffer, short enough to go unnoticed once.
const SETTLE: Duration = Duration::from_millis(1);

/// Parks the running coroutine while `word` holds `expected`, until a
/// [`wake`](super::wake) on the word's address or `deadline`.
///
/// Returns `Ok` when woken, `Err(EAGAIN)` if the word did not hold
/// `expected` when checked, `Err(ETIMEDOUT)` at the deadline: the kernel's
/// `FUTEX_WAIT` contract. Like the kernel, it may return `Ok` spuriously;
/// callers re-check their condition.
///
/// # Panics
/// Outside a coroutine.
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> Result<(), c_int> {
    if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
        // Nothing to park for; the kernel too checks the value first.
        return Err(if word.load(Ordering::SeqCst) == expected {
            libc::ETIMEDOUT
        } else {
            libc::EAGAIN
        });
    }
    let addr = word.as_ptr() as usize;
    let bucket = Bucket::of(addr);
    // The node stays in this frame, unmoved, from `push_back` until it is
    // unlinked: by a waker before it wakes us, or below.
    let node = UnsafeCell::new(Node::new(addr));
    let differed = Cell::new(false);
    let unsure = Cell::new(false);
    let reason = coroutine::park(deadline, Wait::Futex, |waker| {
        // On the worker, after the switch: from here on a wake can only
        // schedule the coroutine, never resume it under our feet.
        let mut queue = bucket.lock();
        let sure = bucket.enter();
        // Checked under the bucket lock, after `enter`: a waker that changed
        // the word before this load either is seen here, or sees our count
        // and then waits for the lock, by which time the node is linked.
        if sure && word.load(Ordering::SeqCst) == expected {
            // SAFETY: the node outlives its time in the queue (see above).
            unsafe { queue.push_back(node.get(), waker) };
        } else {
            bucket.leave(1);
            drop(queue);
            if sure {
                differed.set(true);
            } else {
                unsure.set(true);
            }
            waker.wake(WakeReason::Notified);
        }
    });
    if differed.get() {
        return Err(libc::EAGAIN);
    }
    if unsure.get() {
        // The bucket is armed now, but a waker that skipped its fence just
        // before may have stored to the word unseen, and no barrier could
        // be forced on it. Its store is visible long before this sleep
        // ends; the caller re-checks its condition after a spurious wake,
        // as after any futex wait.
        let settled = Instant::now() + SETTLE;
        let until = deadline.map_or(settled, |deadline| deadline.min(settled));
        sleep_until(until);
        return match deadline {
            Some(deadline) if deadline <= until => Err(libc::ETIMEDOUT),
            _ => Ok(()),
        };
    }
    match reason {
        // Whoever woke us with `Notified` unlinked the node first.
        WakeReason::Notified => Ok(()),
        // The deadline (or a close, which futexes never see) won the race;
        // the node may still be linked, and must not be once we return.
        reason => {
            let waker = {
                let mut queue = bucket.lock();
                // SAFETY: the node is valid (it is ours) and, if linked, in
                // this bucket's queue.
                let waker = unsafe { queue.remove(node.get()) };
                if waker.is_some() {
                    bucket.leave(1);
                }
                waker
            };
            // Dropped outside the lock, like every waker.
            drop(waker);
            match reason {
                WakeReason::TimedOut => Err(libc::ETIMEDOUT),
                _ => Ok(()),
            }
        }
    }
}
