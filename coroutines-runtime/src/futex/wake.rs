//! Waking the waiters of a futex word: parked coroutines and, through the
//! kernel, OS threads.

use core::sync::atomic::Ordering;

use super::bucket::Bucket;
use crate::coroutine::{WakeReason, Waker};

/// Wakers are taken out under the bucket lock but dropped after it is
/// released, this many at a time: dropping the last reference to a task
/// runs its completion (arbitrary code), which must not run under a lock the
/// futex hook itself takes.
const BATCH: usize = 16;

/// Every this many slow-path wakes of a bucket, the kernel's waiters go
/// first. Coroutines are woken before OS threads otherwise, so that threads
/// sleeping in the kernel on a word that many coroutines keep contending
/// still get a turn.
const KERNEL_TURN: u32 = 16;

/// Wakes up to `limit` waiters of the futex word at `addr`: coroutines
/// parked in the table and OS threads waiting in the kernel, which
/// `kernel(n)` wakes (a raw `FUTEX_WAKE` for up to `n`, returning the count
/// or `-errno`).
///
/// Returns the total woken, or the kernel's `-errno` if it failed and no
/// coroutine was woken. With no coroutine waiting in the word's bucket this
/// is one load (a fence and two while the bucket is armed) and the kernel
/// call.
#[inline]
pub(crate) fn wake(addr: usize, limit: usize, mut kernel: impl FnMut(usize) -> isize) -> isize {
    let bucket = Bucket::of(addr);
    if !bucket.may_have_waiters() {
        return kernel(limit);
    }
    wake_waiting(bucket, addr, limit, kernel)
}

/// Whether a wake of the word at `addr` is the kernel's alone, as [`wake`]
/// would find: no coroutine has waited in its bucket for a while. One
/// load; the caller then makes the kernel's `FUTEX_WAKE` itself.
#[inline(always)]
pub(crate) fn kernel_only(addr: usize) -> bool {
    Bucket::of(addr).disarmed()
}

/// [`wake`] when the bucket may hold coroutines: out of line, so that the
/// common case above stays a few instructions in the hook.
#[inline(never)]
fn wake_waiting(
    bucket: &Bucket,
    addr: usize,
    limit: usize,
    mut kernel: impl FnMut(usize) -> isize,
) -> isize {
    let kernel_first = bucket.next_turn() % KERNEL_TURN == KERNEL_TURN - 1;
    let mut kernel_result = 0;
    let mut woken = 0;
    if kernel_first {
        kernel_result = kernel(limit);
        woken = kernel_result.max(0) as usize;
    }
    if woken < limit {
        woken += wake_parked(bucket, addr, limit - woken);
    }
    if !kernel_first && woken < limit {
        kernel_result = kernel(limit - woken);
        woken += kernel_result.max(0) as usize;
    }
    if woken == 0 && kernel_result < 0 {
        kernel_result
    } else {
        woken as isize
    }
}

/// Wakes up to `limit` coroutines parked on `addr` in `bucket`.
fn wake_parked(bucket: &Bucket, addr: usize, limit: usize) -> usize {
    wake_parked_where(bucket, |parked_on| parked_on == addr, limit, true)
}

/// Wakes every coroutine parked in `bucket`, whatever its word: the wakes
/// that signal handlers could not make (see `Bucket::lock_or_defer`).
pub(super) fn wake_every_parked(bucket: &Bucket) {
    wake_parked_where(bucket, |_| true, usize::MAX, false);
}

/// Wakes up to `limit` coroutines parked in `bucket` on words that
/// `select` picks; `settles` as for `Bucket::lock_or_defer`.
fn wake_parked_where(
    bucket: &Bucket,
    select: impl Fn(usize) -> bool,
    limit: usize,
    settles: bool,
) -> usize {
    let mut woken = 0;
    loop {
        let mut taken: [Option<Waker>; BATCH] = Default::default();
        let mut n = 0;
        {
            let Some(mut queue) = bucket.lock_or_defer(settles) else {
                return woken;
            };
            let unlinked = queue.drain_where(
                |parked_on, _| select(parked_on),
                |waker| {
                    // A coroutine of a runtime that has shut down never runs
                    // again: waking it would swallow a wake-up meant for a
                    // live waiter. Drop its entry and keep looking.
                    let dead = waker.task.shared.shutdown.load(Ordering::Acquire);
                    if !dead && waker.wake(WakeReason::Notified) {
                        woken += 1;
                    }
                    taken[n] = Some(waker);
                    n += 1;
                    woken < limit && n < BATCH
                },
            );
            bucket.leave(unlinked);
        }
        drop(taken);
        // A full batch may have left more waiters behind.
        if woken >= limit || n < BATCH {
            return woken;
        }
    }
}
